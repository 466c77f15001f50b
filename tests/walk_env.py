"""A small task-protocol env for tests/test_generic_workers.py, in a module that imports neither torch nor
metarl: the generic sampler's worker processes import it (by the id ``tests.walk_env:metarl_test/Walk-v0``)
and start in a fraction of a second."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class GoalTasks:
    """The task protocol of the test envs: a goal drawn from U[-0.5, 0.5], set by
    ``reset(options={"task": task})`` (:meth:`take_task`) and readable back as ``task``."""

    _goal = 0.0

    @property
    def task(self) -> dict:
        return {"goal": self._goal}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"goal": float(g)} for g in rng.uniform(-0.5, 0.5, size=n)]

    def take_task(self, options: dict | None) -> None:
        if options and "task" in options:
            self._goal = float(options["task"]["goal"])


class WalkEnv(GoalTasks, gym.Env):
    """A point walks to a goal it does not see; ``discrete``: left / stay / right, else a step in [-1, 1]
    (float32 arithmetic, so a wrong action dtype would show). Terminates within 0.05 of the goal, reports
    ``info["success"]`` there; ``fail_at`` raises on that step (to test errors)."""

    def __init__(self, discrete: bool = False, fail_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.discrete, self.fail_at = discrete, fail_at
        self._goal, self._x, self._t = 0.0, np.float32(0.0), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.take_task(options)
        self._x, self._t = np.float32(self.np_random.uniform(-0.2, 0.2)), 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        if self._t == self.fail_at:
            raise RuntimeError("the walk env broke")
        step = 0.1 * (int(action) - 1) if self.discrete else 0.1 * np.clip(action, -1, 1)[0] ** 3
        self._x = np.float32(self._x + step)
        d = abs(float(self._x) - self._goal)
        return self._obs(), -d, bool(d < 0.05), False, {"success": d < 0.05}

    def _obs(self) -> np.ndarray:
        return np.array([self._x, self._t / 20], dtype=np.float32)


if "metarl_test/Walk-v0" not in gym.registry:
    gym.register("metarl_test/Walk-v0", entry_point=WalkEnv, max_episode_steps=20)
