"""Task spaces and the task protocol shared by the meta-RL environments.

A task is a plain dict (``{"velocity": v}``, ``{"direction": +1 or -1}``, ``{"goal": (x, y)}``).
A *task space* samples tasks, checks them (naming the environment and the bad value in
its error), turns a list of tasks into an array for batched stepping (``params``, ``dim``
numbers per task), and computes the task's reward term, vectorised so that the single
Gymnasium env and the batched path in :mod:`envs.vector` share one formula.

:class:`TaskEnvMixin` gives a Gymnasium env the protocol of DESIGN.md: ``sample_tasks``,
``reset(options={"task": ...})`` with the task persisting across later resets (and so
across vector autoresets), ``env.unwrapped.task``, and checked actions. With
``oracle=True`` the env appends the task's ``params`` to every observation: the oracle
baseline of Finn et al. 2017 (arXiv 1703.03400, sec. 5.3), a policy that "receives the
parameters of the task as input".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

Task = dict[str, Any]


def _task_dict(task: Any, key: str, env_name: str) -> Any:
    """The value of ``task[key]`` after checking that ``task`` is a dict with exactly that key."""
    if not isinstance(task, Mapping):
        raise TypeError(f"{env_name}: a task is a dict like {{{key!r}: ...}}, got {task!r}")
    unknown = sorted(set(task) - {key}, key=str)
    if unknown:
        raise ValueError(f"{env_name}: unknown task key(s) {unknown} in {task!r}; expected {{{key!r}: ...}}")
    if key not in task:
        raise ValueError(f"{env_name}: task {task!r} lacks the key {key!r}")
    return task[key]


def _finite_float(value: Any, what: str, env_name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{env_name}: task {what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{env_name}: task {what} must be finite, got {value!r}")
    return x


def _check_n(n: int, rng: np.random.Generator) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"sample_tasks: n must be a non-negative int, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sample_tasks: rng must be a numpy.random.Generator, got {type(rng).__name__}")


@dataclass(frozen=True)
class VelocityTasks:
    """Target forward velocities ``v ~ U[low, high]`` (m/s); reward term ``-|v_x - v|``.

    The goal-velocity tasks of Finn et al. 2017 (arXiv 1703.03400, sec. 5.3).
    """

    low: float
    high: float
    key: ClassVar[str] = "velocity"
    dim: ClassVar[int] = 1

    @property
    def default(self) -> Task:
        return {"velocity": 0.5 * (self.low + self.high)}

    def sample(self, n: int, rng: np.random.Generator, skew: float = 0.0) -> list[Task]:
        """``n`` velocities, uniform (``skew`` 0, the paper's), or with density proportional to
        ``(v - low) ** skew``: ``low + (high - low) * u ** (1 / (1 + skew))``, more of the fast goals."""
        _check_n(n, rng)
        if skew == 0:
            return [{"velocity": float(v)} for v in rng.uniform(self.low, self.high, size=n)]
        if not (math.isfinite(skew) and skew > 0):
            raise ValueError(f"velocity tasks: skew must be a finite number >= 0, got {skew!r}")
        u = rng.random(n) ** (1.0 / (1.0 + skew))
        return [{"velocity": float(v)} for v in self.low + (self.high - self.low) * u]

    def check(self, task: Any, env_name: str) -> Task:
        v = _finite_float(_task_dict(task, "velocity", env_name), "velocity", env_name)
        if not self.low <= v <= self.high:
            raise ValueError(f"{env_name}: task velocity {v!r} is outside the task space [{self.low}, {self.high}]")
        return {"velocity": v}

    def params(self, tasks: Sequence[Task]) -> np.ndarray:
        """``[n, 1]`` float64 array of the (already checked) tasks."""
        return np.array([[t["velocity"]] for t in tasks], dtype=np.float64).reshape(len(tasks), 1)

    def reward(self, params: np.ndarray, x_velocity: Any, xy: Any) -> Any:
        """``-|v_x - v_goal|``; ``params [..., 1]``, ``x_velocity [...]``; ``xy`` unused."""
        return -np.abs(x_velocity - params[..., 0])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low [1], high [1])``: the range of :meth:`params` (what an oracle observes)."""
        return np.array([self.low]), np.array([self.high])

    def describe(self) -> str:
        return f"velocity ~ U[{self.low:g}, {self.high:g}] m/s"


@dataclass(frozen=True)
class DirectionTasks:
    """Running direction ``d = +1`` (forward) or ``-1`` (backward), equally likely; term ``d * v_x``.

    The forward/backward tasks of Finn et al. 2017 (arXiv 1703.03400, sec. 5.3).
    """

    key: ClassVar[str] = "direction"
    dim: ClassVar[int] = 1

    @property
    def default(self) -> Task:
        return {"direction": 1}

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        _check_n(n, rng)
        return [{"direction": int(d)} for d in np.where(rng.random(n) < 0.5, -1, 1)]

    def check(self, task: Any, env_name: str) -> Task:
        d = _finite_float(_task_dict(task, "direction", env_name), "direction", env_name)
        if d not in (1.0, -1.0):
            raise ValueError(f"{env_name}: task direction must be +1 or -1, got {d!r}")
        return {"direction": int(d)}

    def params(self, tasks: Sequence[Task]) -> np.ndarray:
        """``[n, 1]`` float64 array of the (already checked) tasks."""
        return np.array([[t["direction"]] for t in tasks], dtype=np.float64).reshape(len(tasks), 1)

    def reward(self, params: np.ndarray, x_velocity: Any, xy: Any) -> Any:
        """``d * v_x``; ``params [..., 1]``, ``x_velocity [...]``; ``xy`` unused."""
        return params[..., 0] * x_velocity

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low [1], high [1])``: the range of :meth:`params` (what an oracle observes)."""
        return np.array([-1.0]), np.array([1.0])

    def describe(self) -> str:
        return "direction = +1 or -1 (p = 1/2 each)"


@dataclass(frozen=True)
class GoalTasks:
    """Goal positions in the plane: uniform in the box ``[-size, size]^2`` or the disc of radius ``size``.

    Reward term ``-||xy - goal||_2`` (or its square with ``squared=True``).
    """

    shape: str  # "box" or "disc"
    size: float
    default_goal: tuple[float, float]
    squared: bool = False
    key: ClassVar[str] = "goal"
    dim: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.shape not in ("box", "disc"):
            raise ValueError(f"GoalTasks.shape must be 'box' or 'disc', got {self.shape!r}")
        if not self.size > 0:
            raise ValueError(f"GoalTasks.size must be > 0, got {self.size!r}")

    @property
    def default(self) -> Task:
        return {"goal": tuple(self.default_goal)}

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        _check_n(n, rng)
        if self.shape == "box":
            goals = rng.uniform(-self.size, self.size, size=(n, 2))
        else:  # uniform in the disc: radius ~ size * sqrt(U), angle ~ U[0, 2 pi)
            r = self.size * np.sqrt(rng.random(n))
            angle = 2 * np.pi * rng.random(n)
            goals = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        return [{"goal": (float(x), float(y))} for x, y in goals]

    def check(self, task: Any, env_name: str) -> Task:
        raw = _task_dict(task, "goal", env_name)
        try:
            goal = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{env_name}: task goal must be two numbers (x, y), got {raw!r}") from None
        if goal.shape != (2,):
            raise ValueError(f"{env_name}: task goal must be two numbers (x, y), got {raw!r}")
        if not np.isfinite(goal).all():
            raise ValueError(f"{env_name}: task goal must be finite, got {raw!r}")
        x, y = float(goal[0]), float(goal[1])
        if self.shape == "box" and max(abs(x), abs(y)) > self.size:
            raise ValueError(f"{env_name}: task goal {(x, y)} is outside the task space [-{self.size}, {self.size}]^2")
        if self.shape == "disc" and math.hypot(x, y) > self.size:
            raise ValueError(
                f"{env_name}: task goal {(x, y)} is outside the task space (the disc of radius {self.size})"
            )
        return {"goal": (x, y)}

    def params(self, tasks: Sequence[Task]) -> np.ndarray:
        """``[n, 2]`` float64 array of the (already checked) tasks."""
        return np.array([t["goal"] for t in tasks], dtype=np.float64).reshape(len(tasks), 2)

    def reward(self, params: np.ndarray, x_velocity: Any, xy: np.ndarray) -> Any:
        """``-||xy - goal||`` (squared if ``squared``); ``params [..., 2]``, ``xy [..., 2]``."""
        d = xy - params
        sq = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
        return -sq if self.squared else -np.sqrt(sq)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low [2], high [2])``: the box around the goals (what an oracle observes)."""
        return np.full(2, -self.size), np.full(2, self.size)

    def describe(self) -> str:
        if self.shape == "box":
            return f"goal ~ U([-{self.size:g}, {self.size:g}]^2)"
        return f"goal ~ uniform in the disc of radius {self.size:g}"


TaskSpace = VelocityTasks | DirectionTasks | GoalTasks


class TaskEnvMixin:
    """The task protocol of DESIGN.md for a ``gymnasium.Env`` (put it first among the bases).

    - ``sample_tasks(n, rng)`` draws ``n`` tasks from the env's ``task_space``;
    - ``reset(options={"task": task})`` checks and sets the task; it persists across later
      ``reset()`` calls without a task, so vector autoresets keep it;
    - ``task`` is the current task (a copy);
    - ``oracle``: whether observations end with the task's ``params`` (``task_space.dim``
      numbers); the env builds its observation with :meth:`_oracle_obs` and widens its
      space with :meth:`_oracle_space`.
    """

    task_space: TaskSpace
    oracle: bool = False
    _task: Task

    def _init_task(self, task_space: TaskSpace, task: Task | None, oracle: bool = False) -> None:
        self.task_space = task_space
        self._task = task_space.default if task is None else task_space.check(task, self.env_name)
        self.oracle = bool(oracle)

    def _oracle_space(self, space: spaces.Box) -> spaces.Box:
        """``space`` with the task's bounds appended when ``oracle`` (else ``space`` itself)."""
        if not self.oracle:
            return space
        low, high = self.task_space.bounds()
        return spaces.Box(
            np.concatenate([space.low, low.astype(space.dtype)]),
            np.concatenate([space.high, high.astype(space.dtype)]),
            dtype=space.dtype,
        )

    def _oracle_obs(self, obs: np.ndarray) -> np.ndarray:
        """``obs [d]`` followed by the current task's params ``[task_space.dim]`` when ``oracle``."""
        if not self.oracle:
            return obs
        return np.concatenate([obs, self.task_space.params([self._task])[0].astype(obs.dtype)])

    @property
    def env_name(self) -> str:
        """The registered id (when made with ``gymnasium.make``) or the class name, for messages."""
        spec = getattr(self, "spec", None)
        return spec.id if spec is not None else type(self).__name__

    @property
    def task(self) -> Task:
        return dict(self._task)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks drawn from this env's task distribution with ``rng``."""
        return self.task_space.sample(n, rng)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if options:
            unknown = sorted(set(options) - {"task"}, key=str)
            if unknown:
                raise ValueError(f"{self.env_name}: unknown reset option(s) {unknown}; the only one is 'task'")
            if "task" in options:
                self._task = self.task_space.check(options["task"], self.env_name)
        return super().reset(seed=seed, options=options)  # type: ignore[misc]

    def _check_action(self, action: Any, dtype: type) -> np.ndarray:
        """``action`` as a ``dtype`` array after checking its shape and that it is finite."""
        shape = self.action_space.shape  # type: ignore[attr-defined]
        try:
            a = np.asarray(action, dtype=dtype)
        except (TypeError, ValueError):
            raise TypeError(f"{self.env_name}: action must be an array of shape {shape}, got {action!r}") from None
        if a.shape != shape:
            raise ValueError(f"{self.env_name}: action must have shape {shape}, got shape {a.shape}: {action!r}")
        if not np.isfinite(a).all():
            raise ValueError(f"{self.env_name}: action must be finite, got {action!r}")
        return a
