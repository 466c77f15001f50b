"""2D point navigation (Finn et al. 2017, arXiv 1703.03400, sec. 5.3)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tasks import GoalTasks, Task, TaskEnvMixin

#: Largest displacement per step and axis; actions are clipped to [-MAX_STEP, MAX_STEP].
MAX_STEP = 0.1
#: The episode terminates once the point is closer than this to the goal.
GOAL_RADIUS = 0.01


class Navigation2DEnv(TaskEnvMixin, gym.Env):
    """A point in the plane moves to a goal it does not observe (unless ``oracle``).

    Spec (Finn et al. 2017, sec. 5.3, "2D navigation"):

    - state and observation: the point's position, ``float32``, shape ``(2,)``; every
      episode starts at the origin;
    - action: a displacement, ``float32``, shape ``(2,)``, clipped to ``[-0.1, 0.1]`` per axis;
    - task: ``{"goal": (x, y)}``, ``goal ~ U([-0.5, 0.5]^2)`` (``goal_range`` sets the half-width);
    - reward: ``-||p' - goal||_2`` with ``p'`` the position after the move;
    - termination: ``||p' - goal||_2 < 0.01``; time limit 100 steps (from ``register``).

    ``info`` has ``reward_task`` (equal to the reward) and ``distance``. Without a task the
    goal is ``(0.25, 0.25)``.

    ``oracle=True`` (``gymnasium.make(id, oracle=True)``): the observation is
    ``(x, y, goal_x, goal_y)``, ``float32``, shape ``(4,)``, the goal part bounded by the
    task space: the paper's oracle baseline sees the goal ("an oracle policy that receives
    the goal position as input", sec. 5.3).

    Departures: the paper's text gives the negative *squared* distance as the reward; like
    the reference code we use the distance itself, and ``squared=True`` gives the paper
    text's variant. The reference code ends an episode when both coordinates are within
    0.01 of the goal (a box); we use the Euclidean distance. The position is kept in
    ``float32`` so that :class:`envs.vector.VecNavigation2D`
    reproduces it exactly.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, task: Task | None = None, *, squared: bool = False, goal_range: float = 0.5, oracle: bool = False
    ) -> None:
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.squared = bool(squared)
        self._init_task(
            GoalTasks("box", float(goal_range), (0.5 * goal_range, 0.5 * goal_range), squared=self.squared),
            task,
            oracle,
        )
        self.observation_space = self._oracle_space(spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32))
        self._position = np.zeros(2, dtype=np.float32)

    def _distance_terms(self) -> tuple[np.float32, np.float32]:
        goal = np.asarray(self._task["goal"], dtype=np.float32)
        d = goal - self._position
        sq = d[0] * d[0] + d[1] * d[1]
        return np.sqrt(sq), sq

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._position = np.zeros(2, dtype=np.float32)
        dist, _ = self._distance_terms()
        return self._oracle_obs(self._position.copy()), {"distance": float(dist)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(self._check_action(action, np.float32), -MAX_STEP, MAX_STEP)
        self._position = self._position + a
        dist, sq = self._distance_terms()
        reward = float(-sq if self.squared else -dist)
        terminated = bool(dist < GOAL_RADIUS)
        info = {"reward_task": reward, "distance": float(dist)}
        return self._oracle_obs(self._position.copy()), reward, terminated, False, info
