"""Bring your own environment: Pendulum-v1 with a target angle as the task (metarl.envs.protocol).

Importing this module registers ``examples/GoalPendulum-v0``; ``env.id: "goal_pendulum:examples/GoalPendulum-v0"``
imports it (with examples/ on the path), e.g.

    PYTHONPATH=examples metarl train navigation2d --set env.id=goal_pendulum:examples/GoalPendulum-v0
"""

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv, angle_normalize


class GoalPendulumEnv(PendulumEnv):
    """Swing to and hold ``{"target": angle}`` (radians from upright, ~ U[-1, 1]); the cost is Pendulum's
    with ``theta - target`` for ``theta``. ``oracle=True`` appends the target to the observation."""

    def __init__(self, oracle: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.oracle, self._target = oracle, 0.0
        if oracle:
            high = np.append(self.observation_space.high, 1.0).astype(np.float32)
            self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    @property
    def task(self):
        return {"target": self._target}

    def sample_tasks(self, n, rng):
        return [{"target": float(a)} for a in rng.uniform(-1.0, 1.0, size=n)]

    def reset(self, *, seed=None, options=None):
        if options and "task" in options:  # the task persists until another is given
            self._target = float(options["task"]["target"])
        obs, info = super().reset(seed=seed)
        return self._observe(obs), info

    def step(self, action):
        th, thdot = self.state
        u = float(np.clip(action, -self.max_torque, self.max_torque)[0])
        obs, _, terminated, truncated, info = super().step(action)
        cost = angle_normalize(th - self._target) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        return self._observe(obs), -float(cost), terminated, truncated, info

    def _observe(self, obs):
        return np.append(obs, np.float32(self._target)) if self.oracle else obs


if "examples/GoalPendulum-v0" not in gym.registry:
    gym.register("examples/GoalPendulum-v0", entry_point=GoalPendulumEnv, max_episode_steps=200)
