"""Locomotion tasks on Gymnasium's v5 MuJoCo robots (Finn et al. 2017, arXiv 1703.03400, sec. 5.3).

Each class subclasses Gymnasium's ``HalfCheetahEnv`` or ``AntEnv`` and keeps its physics,
observation, reset noise and (for the Ant) its healthy, control and contact terms, with the
paper's weights by default (:data:`ANT_PAPER_WEIGHTS`), and its unhealthy termination. Only
the forward term of the reward is replaced by the task's term: Gymnasium's ``step`` calls
``self._get_rew(x_velocity, action)``, which we override.
``info`` reports ``reward_task`` in place of Gymnasium's ``reward_forward``; the
``reward_*`` entries sum to the reward.

Every class takes ``oracle=True`` (``gymnasium.make(id, oracle=True)``): Gymnasium's
observation followed by the task's parameters (the goal velocity, the direction, or the
goal position), with the observation space widened by the task space's bounds and
``observation_structure["task"]`` giving their count. This is the oracle baseline of
Finn et al. 2017, sec. 5.3: "an oracle policy that receives the parameters of the task as
input".

rllab's timing and control cost, which the paper's code used (``env.kwargs: {frame_skip: 1,
clip_ctrl_cost: true}``): rllab's ``half_cheetah.xml`` has the same ``timestep = 0.01`` but no frame
skip, so its 200 steps last 2 s where Gymnasium's (``frame_skip = 5``) last 10 s; and rllab clips the
action to the box before the control cost (``normalize`` and the env's ``step``), where Gymnasium
charges the raw sample. ``frame_skip`` is Gymnasium's own keyword; ``clip_ctrl_cost`` is ours.

A training-only term for the half-cheetahs (``env.kwargs: {pitch_cost_weight: w, pitch_limit: l}``, off by
default): ``-w * max(0, |pitch| - l)``, the torso's pitch (``qpos[2]``, radians) beyond ``l``, reported as
``info["reward_pitch"]``. Some seeds' adapted policies rear up past vertical to run fast and stall near 1 m/s;
the term makes that gait cost during meta-training. On HalfCheetahVel it stopped the rearing but not the stall
(RESULTS.md, "HalfCheetahVel: a seed that rears up"). Evaluation scores the paper's reward with ``--set
env.kwargs.pitch_cost_weight=0``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from metarl.envs.tasks import DirectionTasks, GoalTasks, Task, TaskEnvMixin, TaskSpace, VelocityTasks


@contextlib.contextmanager
def _half_cheetah_model() -> Iterator[None]:
    """Build Gymnasium's HalfCheetah without MuJoCo 4's notice about its ``settotalmass`` attribute.

    Gymnasium's ``half_cheetah.xml`` sets ``settotalmass="14"``, which MuJoCo 4.0 still applies but
    announces as deprecated on every model build (a ``WARNING:`` line per env, per worker, in
    every user's console). That notice is dropped here; any other MuJoCo warning goes on to the
    handler that was set, or to Python's ``warnings`` if none was.
    """
    previous = mujoco.get_mju_user_warning()

    def forward(message: str) -> None:
        if "settotalmass" in message:
            return
        if previous is not None:
            previous(message)
        else:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(forward)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


#: The Ant's cost weights in Finn et al. 2017 (rllab's Ant as its ``ant_env_rand*.py`` set them),
#: as Gymnasium's Ant v5 keywords: control ``0.5 * 1e-2 * ||a||^2``, contact
#: ``0.5 * 1e-3 * ||clip(cfrc_ext, -1, 1)||^2`` (Gymnasium's too) and a survive reward of 0.05.
#: Gymnasium's defaults (0.5 and 1.0) make the control cost of a freshly initialised policy
#: (std 1, 8 joints: about -4 per step) several times the task's term, so the paper's weights are the
#: Ant tasks' defaults, as the paper's control weight is HalfCheetah's.
ANT_PAPER_WEIGHTS: dict[str, float] = {"ctrl_cost_weight": 0.005, "contact_cost_weight": 5e-4, "healthy_reward": 0.05}


class _LocomotionTaskMixin(TaskEnvMixin):
    """Shared by the five locomotion classes: the task's reward term, checked actions and the
    oracle observation."""

    def _setup(
        self, task_space: TaskSpace, task: Task | None, kwargs: dict[str, Any], oracle: bool, clip_ctrl_cost: bool
    ) -> None:
        if not isinstance(clip_ctrl_cost, bool):
            raise TypeError(f"{type(self).__name__}: clip_ctrl_cost must be true or false, got {clip_ctrl_cost!r}")
        self.clip_ctrl_cost = clip_ctrl_cost
        if "forward_reward_weight" in kwargs:
            raise TypeError(f"{type(self).__name__}: forward_reward_weight does not apply, the task term replaces it")
        self._init_task(task_space, task, oracle)
        self.observation_space = self._oracle_space(self.observation_space)  # type: ignore[attr-defined]
        if self.oracle:  # Gymnasium's layout of the observation, plus the task part at its end
            structure = self.observation_structure  # type: ignore[attr-defined]
            self.observation_structure = {**structure, "task": task_space.dim}

    _pitch_cost: tuple[float, float] = (0.0, 1.0)  # (weight, limit): off unless a half-cheetah sets it

    def _set_pitch_cost(self, weight: float, limit: float) -> None:
        """Charge ``weight`` per radian of the torso's pitch beyond ``limit`` (see the module docstring)."""
        name = type(self).__name__
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < np.inf:
            raise TypeError(f"{name}: pitch_cost_weight must be a number >= 0 (0 turns it off), got {weight!r}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < np.inf:
            raise TypeError(f"{name}: pitch_limit must be a positive number of radians, got {limit!r}")
        self._pitch_cost = (float(weight), float(limit))

    def _get_obs(self) -> np.ndarray:
        return self._oracle_obs(super()._get_obs())  # type: ignore[misc]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # float64 so that the control cost is computed in float64, as the batched path does
        return super().step(self._check_action(action, np.float64))  # type: ignore[misc]

    def control_cost(self, action: np.ndarray) -> float:
        """Gymnasium's control cost, of the action clipped to the action box with ``clip_ctrl_cost``
        (rllab's envs clip before the cost: MuJoCo clamps the control anyway, so a sample beyond the
        box moves nothing more but would otherwise cost more). One rule with the batched path."""
        return float(self.control_costs(np.asarray(action)))

    def control_costs(self, actions: np.ndarray) -> np.ndarray:
        """:meth:`control_cost` of each action of a batch (``[..., act]`` -> ``[...]``), for the batched
        envs and for reading a return's control part back off sampled actions."""
        if self.clip_ctrl_cost:
            space = self.action_space  # type: ignore[attr-defined]
            actions = np.clip(actions, space.low, space.high)
        return self._ctrl_cost_weight * np.sum(np.square(actions), axis=-1)  # type: ignore[attr-defined]

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        _, terms = super()._get_rew(x_velocity, action)  # type: ignore[misc]
        del terms["reward_forward"]
        params = self.task_space.params([self._task])[0]
        xy = self.data.qpos[:2]  # type: ignore[attr-defined]
        terms = {"reward_task": float(self.task_space.reward(params, x_velocity, xy)), **terms}
        weight, limit = self._pitch_cost
        if weight:
            pitch = float(self.data.qpos[2])  # type: ignore[attr-defined]
            terms["reward_pitch"] = -weight * max(0.0, abs(pitch) - limit)
        return sum(terms.values()), terms


class HalfCheetahVelEnv(_LocomotionTaskMixin, HalfCheetahEnv):
    """HalfCheetah running at a goal velocity.

    Spec (Finn et al. 2017, sec. 5.3, "goal velocity"): Gymnasium's HalfCheetah v5 physics,
    observation (17 floats) and reset noise; task ``{"velocity": v}``, ``v ~ U[0, 2]``
    (``velocity_range``); reward ``-|v_x - v| - 0.05 * ||a||^2`` with ``v_x`` the forward
    velocity Gymnasium reports (``info["x_velocity"]``: the change of the root's x
    position over ``dt = 0.05``); never terminates; 200 steps (from ``register``).

    ``oracle=True``: 18 floats, the 17 above and ``v``; the paper's oracle baseline sees the
    goal velocity.

    Departures: the paper used rllab's MuJoCo 1.x model; this is Gymnasium's v5 model on
    current MuJoCo, so returns are not comparable number for number. The default task
    (no task given) is ``v = 1``. Gymnasium's 5-step frame skip makes the 200 steps 10 s where
    rllab's were 2 s; ``frame_skip=1, clip_ctrl_cost=True`` restores rllab's timing and cost.
    rllab's observation also held the torso's x position; Gymnasium's
    ``exclude_current_positions_from_observation=False`` keeps the root's x (18 floats). With it
    MAML adapted worse on the paper's goals (RESULTS.md, "The paper's test-time step sizes").
    ``pitch_cost_weight``, ``pitch_limit``: the training-only pitch cost of the module docstring (off).
    """

    def __init__(
        self,
        task: Task | None = None,
        *,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        ctrl_cost_weight: float = 0.05,
        oracle: bool = False,
        clip_ctrl_cost: bool = False,
        pitch_cost_weight: float = 0.0,
        pitch_limit: float = 1.0,
        **kwargs: Any,
    ) -> None:
        with _half_cheetah_model():
            HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self._setup(VelocityTasks(*map(float, velocity_range)), task, kwargs, oracle, clip_ctrl_cost)
        self._set_pitch_cost(pitch_cost_weight, pitch_limit)
        utils.EzPickle.__init__(
            self,
            task,
            velocity_range=velocity_range,
            ctrl_cost_weight=ctrl_cost_weight,
            oracle=oracle,
            clip_ctrl_cost=clip_ctrl_cost,
            pitch_cost_weight=pitch_cost_weight,
            pitch_limit=pitch_limit,
            **kwargs,
        )


class HalfCheetahDirEnv(_LocomotionTaskMixin, HalfCheetahEnv):
    """HalfCheetah running forward or backward.

    Spec (Finn et al. 2017, sec. 5.3, "goal direction"): Gymnasium's HalfCheetah v5 physics,
    observation and reset noise; task ``{"direction": d}``, ``d = +1 or -1`` with equal
    probability; reward ``d * v_x - 0.05 * ||a||^2``; never terminates; 200 steps.

    ``oracle=True``: 18 floats, Gymnasium's 17 and ``d``; the paper's oracle baseline sees the
    direction.

    Departures: Gymnasium's v5 model on current MuJoCo rather than rllab's; the default
    task is ``d = +1``. ``frame_skip=1, clip_ctrl_cost=True``: rllab's timing (200 steps of 0.01 s)
    and control cost (of the clipped action). ``pitch_cost_weight``, ``pitch_limit``: the training-only
    pitch cost of the module docstring (off).
    """

    def __init__(
        self,
        task: Task | None = None,
        *,
        ctrl_cost_weight: float = 0.05,
        oracle: bool = False,
        clip_ctrl_cost: bool = False,
        pitch_cost_weight: float = 0.0,
        pitch_limit: float = 1.0,
        **kwargs: Any,
    ) -> None:
        with _half_cheetah_model():
            HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self._setup(DirectionTasks(), task, kwargs, oracle, clip_ctrl_cost)
        self._set_pitch_cost(pitch_cost_weight, pitch_limit)
        utils.EzPickle.__init__(
            self, task, ctrl_cost_weight=ctrl_cost_weight, oracle=oracle, clip_ctrl_cost=clip_ctrl_cost,
            pitch_cost_weight=pitch_cost_weight, pitch_limit=pitch_limit, **kwargs
        )


class AntVelEnv(_LocomotionTaskMixin, AntEnv):
    """Ant running at a goal velocity.

    Spec (Finn et al. 2017, sec. 5.3, "goal velocity"): Gymnasium's Ant v5 with the forward
    term replaced by ``-|v_x - v|``; task ``{"velocity": v}``, ``v ~ U[0, 3]``
    (``velocity_range``); 200 steps (from ``register``).

    Kept from Gymnasium's Ant v5 as they are: physics, reset noise, the 105-float
    observation (including the external contact forces ``cfrc_ext`` of the 13 bodies,
    clipped to [-1, 1], which are non-zero on MuJoCo >= 3 whenever a leg touches the
    ground), the contact term (``-5e-4 * ||clip(cfrc_ext, -1, 1)||^2``, the paper's weight too)
    and the termination when unhealthy (the torso's z leaves [0.2, 1], as in the paper).

    ``v_x`` is Gymnasium's ``info["x_velocity"]``: the change of the torso body's x position
    (``data.xpos``, as MuJoCo leaves it after the step) over ``dt = 0.05``.

    The paper's cost weights (:data:`ANT_PAPER_WEIGHTS`): control ``-0.005 * ||a||^2`` and,
    while healthy, ``+1.05``: the paper's survive reward 0.05 plus the constant 1 its task term
    carries ("make it happy, not suicidal"). Gymnasium's own weights, which pay ``-0.5 * ||a||^2``
    and +1: ``env.kwargs: {ctrl_cost_weight: 0.5, healthy_reward: 1.0}``.

    ``oracle=True``: the observation ends with ``v`` (106 floats); the paper's oracle baseline
    sees the goal velocity.

    Departures: Gymnasium's Ant model and observation rather than rllab's; on the step where the
    ant falls, Gymnasium pays no healthy reward where the paper paid its 1.05 once more. The
    default task (no task given) is ``v = 1.5``.
    """

    def __init__(
        self,
        task: Task | None = None,
        *,
        velocity_range: tuple[float, float] = (0.0, 3.0),
        oracle: bool = False,
        clip_ctrl_cost: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = {**ANT_PAPER_WEIGHTS, "healthy_reward": 1.05, **kwargs}
        AntEnv.__init__(self, **kwargs)
        self._setup(VelocityTasks(*map(float, velocity_range)), task, kwargs, oracle, clip_ctrl_cost)
        utils.EzPickle.__init__(
            self, task, velocity_range=velocity_range, oracle=oracle, clip_ctrl_cost=clip_ctrl_cost, **kwargs
        )


class AntDirEnv(_LocomotionTaskMixin, AntEnv):
    """Ant running forward or backward along x.

    Spec (Finn et al. 2017, sec. 5.3, "goal direction"): Gymnasium's Ant v5 with the forward
    term replaced by ``d * v_x``; task ``{"direction": d}``, ``d = +1 or -1`` with equal
    probability; 200 steps (from ``register``).

    Kept from Gymnasium's Ant v5 as they are: physics, reset noise, the 105-float
    observation (including the external contact forces ``cfrc_ext`` of the 13 bodies,
    clipped to [-1, 1], which are non-zero on MuJoCo >= 3 whenever a leg touches the
    ground), the contact term (``-5e-4 * ||clip(cfrc_ext, -1, 1)||^2``, the paper's weight too)
    and the termination when unhealthy (the torso's z leaves [0.2, 1], as in the paper).

    ``v_x`` is Gymnasium's ``info["x_velocity"]``: the change of the torso body's x position
    (``data.xpos``, as MuJoCo leaves it after the step) over ``dt = 0.05``.

    The paper's cost weights (:data:`ANT_PAPER_WEIGHTS`): control ``-0.005 * ||a||^2`` and
    ``+0.05`` while healthy. Gymnasium's own weights: ``env.kwargs: {ctrl_cost_weight: 0.5,
    healthy_reward: 1.0}``.

    ``oracle=True``: the observation ends with ``d`` (106 floats); the paper's oracle baseline
    sees the direction.

    Departures: Gymnasium's Ant model and observation rather than rllab's; no healthy reward on
    the step where the ant falls. The default task is ``d = +1``.
    """

    def __init__(
        self, task: Task | None = None, *, oracle: bool = False, clip_ctrl_cost: bool = False, **kwargs: Any
    ) -> None:
        kwargs = {**ANT_PAPER_WEIGHTS, **kwargs}
        AntEnv.__init__(self, **kwargs)
        self._setup(DirectionTasks(), task, kwargs, oracle, clip_ctrl_cost)
        utils.EzPickle.__init__(self, task, oracle=oracle, clip_ctrl_cost=clip_ctrl_cost, **kwargs)


class AntGoalEnv(_LocomotionTaskMixin, AntEnv):
    """Ant walking to a goal position in the plane.

    Spec: Gymnasium's Ant v5 with the forward term replaced by ``-||xy - goal||_2``, with
    ``xy = qpos[0:2]`` the torso's position after the step; task ``{"goal": (x, y)}``
    uniform in the disc of radius 3 (``goal_radius``), as in PEARL (Rakelly et al. 2019,
    arXiv 1903.08254); 200 steps (from ``register``).

    Kept from Gymnasium's Ant v5 as they are: physics, reset noise, the 105-float
    observation (including the external contact forces ``cfrc_ext`` of the 13 bodies,
    clipped to [-1, 1], which are non-zero on MuJoCo >= 3 whenever a leg touches the
    ground), the contact term (``-5e-4 * ||clip(cfrc_ext, -1, 1)||^2``, the paper's weight too)
    and the termination when unhealthy (the torso's z leaves [0.2, 1], as in the paper).

    Departures: Finn et al. 2017 have no Ant goal task. PEARL's and ProMP's (Rothfuss et
    al. 2018, arXiv 1810.06784) Ant goal envs reward the L1 distance, with their own cost
    weights, and ProMP draws goals in the box [-3, 3]^2; we use the Euclidean distance, as
    Navigation2D does. Weights: the paper's control weight for its other Ant tasks
    (``-0.005 * ||a||^2``) and Gymnasium's +1 while healthy, which offsets part of the distance
    term (about -2 per step) as the paper's constant 1 does for AntVel, so that falling early
    pays less. The default task is ``goal = (1.5, 0)``.

    ``terminate_when_unhealthy=False`` (Gymnasium's argument; ``ant_goal.yaml`` sets it): the episode
    runs its 200 steps after a fall, as in ProMP's and PEARL's Ant goal envs, and the healthy reward is
    paid only while healthy. With the end on falling, a step far from the goal pays less than 0, so a
    policy gains by falling early; a MAML run did just that (RESULTS, "AntGoal: a policy that learned
    to fall").

    ``oracle=True``: the observation ends with the goal ``(x, y)`` (107 floats); the oracle
    baseline (as in the paper's other tasks) sees the goal.
    """

    def __init__(
        self,
        task: Task | None = None,
        *,
        goal_radius: float = 3.0,
        oracle: bool = False,
        clip_ctrl_cost: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = {**ANT_PAPER_WEIGHTS, "healthy_reward": 1.0, **kwargs}
        AntEnv.__init__(self, **kwargs)
        goals = GoalTasks("disc", float(goal_radius), (0.5 * goal_radius, 0.0))
        self._setup(goals, task, kwargs, oracle, clip_ctrl_cost)
        utils.EzPickle.__init__(
            self, task, goal_radius=goal_radius, oracle=oracle, clip_ctrl_cost=clip_ctrl_cost, **kwargs
        )
