"""Batched task environments: ``B`` sub-envs, each with its own task, stepped in one call.

This is the fast path the sampler uses (DESIGN.md, "Environments"). Both classes follow
one protocol, on tensors:

- ``reset(tasks, seeds) -> obs [B, *obs_shape]``: sub-env ``i`` gets ``tasks[i]`` and the
  initial state that ``gymnasium.make(env_id).reset(seed=seeds[i])`` would give it;
- ``step(actions [B, *act_shape]) -> (obs [B, *obs_shape], rewards [B], done [B])``.
  There is no autoreset: a sub-env that terminated stays frozen (same observation,
  reward 0, ``done`` stays true) until the next ``reset``; the caller handles time limits.
- ``env`` is an unwrapped single env of the same id (its spaces, ``task_space``,
  ``sample_tasks``); ``close()`` frees threads and processes.
- ``env_kwargs`` are the single env's; with ``{"oracle": True}`` every observation ends
  with the sub-env's task parameters, as the single env's does.

Each step equals stepping the Gymnasium env one by one with the same seeds, tasks and
actions (tests/test_sampler.py checks it, step for step).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium
import metarl.envs as envs  # registers the ids
import numpy as np
import torch
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import seeding
from metarl.envs.locomotion import _LocomotionTaskMixin
from metarl.envs.navigation import GOAL_RADIUS, MAX_STEP, Navigation2DEnv
from metarl.envs.physics import HAS_BATCH, BatchPhysics, ProcessPhysics
from metarl.envs.tasks import Task


def default_num_workers() -> int:
    """The number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _checked_tasks(env: Any, tasks: Sequence[Task], num_envs: int) -> list[Task]:
    if len(tasks) != num_envs:
        raise ValueError(f"{env.env_name}: reset got {len(tasks)} tasks for {num_envs} sub-envs")
    checked: dict[int, Task] = {}  # a task repeated for its B episodes is checked once
    for t in tasks:
        if id(t) not in checked:
            checked[id(t)] = env.task_space.check(t, env.env_name)
    return [checked[id(t)] for t in tasks]


class NonFiniteActionError(ValueError, FloatingPointError):
    """Actions holding NaN or inf (from a policy whose parameters diverged): a ValueError to the env's
    callers, and a FloatingPointError to the training loop, whose guard rejects the meta-step."""


def _checked_actions(env: Any, actions: torch.Tensor, num_envs: int) -> torch.Tensor:
    shape = (num_envs, *env.action_space.shape)
    if not isinstance(actions, torch.Tensor):
        raise TypeError(f"{env.env_name}: actions must be a tensor of shape {shape}, got {type(actions).__name__}")
    if tuple(actions.shape) != shape:
        raise ValueError(f"{env.env_name}: actions must have shape {shape}, got {tuple(actions.shape)}")
    if not bool(torch.isfinite(actions).all()):
        bad = actions[~torch.isfinite(actions).all(dim=-1)][0]
        raise NonFiniteActionError(f"{env.env_name}: actions must be finite, got {bad.tolist()}")
    return actions


class VecNavigation2D:
    """``num_envs`` :class:`~envs.navigation.Navigation2DEnv` as ``float32`` tensors, no per-env loop.

    The arithmetic is the single env's, in the same order and precision, so results are
    identical. State: ``position [B, 2]``, ``goal [B, 2]``, ``done [B]``; observations are
    ``position [B, 2]``, or ``cat(position, goal) [B, 4]`` with ``oracle``.
    """

    def __init__(self, num_envs: int, *, env_kwargs: dict[str, Any] | None = None) -> None:
        self.env = gymnasium.make("metarl/Navigation2D-v0", **(env_kwargs or {})).unwrapped
        self.num_envs = int(num_envs)
        self.observation_shape = tuple(self.env.observation_space.shape)
        self.action_shape = tuple(self.env.action_space.shape)
        self.squared = self.env.squared
        self.oracle = self.env.oracle
        self._position = torch.zeros(num_envs, 2)
        self._goal = torch.zeros(num_envs, 2)
        self._done = torch.zeros(num_envs, dtype=torch.bool)
        self._alive = torch.ones(num_envs)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Every sub-env at the origin with its goal; ``seeds`` are unused (no reset noise)."""
        checked = _checked_tasks(self.env, tasks, self.num_envs)
        self._goal.copy_(torch.from_numpy(self.env.task_space.params(checked).astype(np.float32)))
        self._position.zero_()
        self._done.zero_()
        self._alive.fill_(1.0)
        return self._observe()

    def _observe(self) -> torch.Tensor:
        return torch.cat([self._position, self._goal], 1) if self.oracle else self._position.clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = _checked_actions(self.env, actions, self.num_envs)
        a = (a if a.dtype == torch.float32 else a.float()).clamp(-MAX_STEP, MAX_STEP)
        self._position.addcmul_(a, self._alive.unsqueeze(1))  # frozen sub-envs add 0 * a = 0
        d = self._goal - self._position
        sq = (d * d).sum(1)
        # torch's vectorised float32 sqrt can be 1 ulp off; sqrt in float64 rounded to float32
        # is the correctly rounded float32 sqrt, which numpy computes in the single env
        dist = sq.double().sqrt_().float()
        rewards = torch.mul(sq if self.squared else dist, self._alive).neg_()
        self._done |= dist < GOAL_RADIUS
        self._alive.copy_(~self._done)
        return self._observe(), rewards, self._done.clone()

    def close(self) -> None:
        self.env.close()


class VecMujocoTasks:
    """``num_envs`` sub-envs of a locomotion task env (:mod:`envs.locomotion`) stepped together.

    Physics runs on all cores (``num_workers`` threads or processes, see :mod:`envs.physics`)
    on the model Gymnasium builds for ``env_id`` with its ``frame_skip``; observations and
    reward terms are then computed with numpy over the whole batch from ``qpos``, ``qvel``
    (and for the Ant the main body's ``xpos`` and ``cfrc_ext``), by Gymnasium's formulas and
    the task space's :meth:`reward` (the one the single env uses). Initial states draw
    Gymnasium's reset noise (``qpos + U[-s, s]``, ``qvel + s * N(0, 1)``) from
    ``gymnasium.utils.seeding.np_random(seed)``, the generator ``reset(seed=seed)`` uses.
    With ``oracle`` the observations end with the task parameters ``[B, task_space.dim]``.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        num_workers: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        env_kwargs = dict(env_kwargs or {})
        env = gymnasium.make(env_id, **env_kwargs).unwrapped
        if not isinstance(env, _LocomotionTaskMixin):
            raise TypeError(f"VecMujocoTasks: {env_id} is not one of the locomotion task envs of envs.locomotion")
        self.env = env
        self.num_envs = int(num_envs)
        self.observation_shape = tuple(env.observation_space.shape)
        self.action_shape = tuple(env.action_space.shape)
        workers = default_num_workers() if num_workers is None else int(num_workers)
        if workers < 1:
            raise ValueError(f"VecMujocoTasks: num_workers must be >= 1, got {num_workers}")
        # Gymnasium's settings, read once from the env it built for these kwargs
        self._is_ant = isinstance(env, AntEnv)
        if not self._is_ant and not isinstance(env, HalfCheetahEnv):
            raise TypeError(f"VecMujocoTasks: no batched path for {type(env).__name__}")
        self._structure = dict(env.observation_structure)
        self._dt = env.dt
        self._noise = env._reset_noise_scale
        self._pitch_cost = env._pitch_cost  # (weight, limit); weight 0 unless a half-cheetah sets it
        main_body = env.model.body(env._main_body).id if self._is_ant else 1
        needs_cfrc = self._is_ant and (self._structure.get("cfrc_ext", 0) > 0 or env._contact_cost_weight != 0)
        if needs_cfrc or not HAS_BATCH:  # MuJoCo 3.x has no mujoco.batch (envs.physics)
            self._physics: BatchPhysics | ProcessPhysics = ProcessPhysics(
                env_id, env_kwargs, self.num_envs, num_workers=workers
            )
        else:
            self._physics = BatchPhysics(
                env.model, self.num_envs, frame_skip=env.frame_skip, main_body=main_body, nthread=workers
            )
        self.oracle = env.oracle
        self._params = np.zeros((self.num_envs, env.task_space.dim))
        self._done = np.zeros(self.num_envs, dtype=bool)

    def initial_states(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos [B, nq], qvel [B, nv])`` that ``reset(seed=seeds[i])`` gives the single env."""
        env, s = self.env, self._noise
        qpos = np.empty((len(seeds), env.model.nq))
        qvel = np.empty((len(seeds), env.model.nv))
        for i, seed in enumerate(seeds):
            rng, _ = seeding.np_random(int(seed))
            qpos[i] = env.init_qpos + rng.uniform(low=-s, high=s, size=env.model.nq)
            qvel[i] = env.init_qvel + s * rng.standard_normal(env.model.nv)
        return qpos, qvel

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> torch.Tensor:
        checked = _checked_tasks(self.env, tasks, self.num_envs)
        if len(seeds) != self.num_envs:
            raise ValueError(f"{self.env.env_name}: reset got {len(seeds)} seeds for {self.num_envs} sub-envs")
        self._params = self.env.task_space.params(checked)
        self._physics.reset(*self.initial_states(seeds))
        self._done[:] = False
        return torch.from_numpy(self._observe())

    def _observe(self) -> np.ndarray:
        p = self._physics
        parts = [p.qpos[:, self._structure["skipped_qpos"] :], p.qvel]
        if self._structure.get("cfrc_ext", 0):
            lo, hi = self.env._contact_force_range
            parts.append(np.clip(p.cfrc_ext[:, 1:], lo, hi).reshape(self.num_envs, -1))
        if self.oracle:
            parts.append(self._params)
        return np.concatenate(parts, axis=1)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = _checked_actions(self.env, actions, self.num_envs).detach().cpu().numpy().astype(np.float64)
        p, env = self._physics, self.env
        alive = ~self._done
        x_before = (p.xpos_main[:, 0] if self._is_ant else p.qpos[:, 0]).copy()
        p.step(a, alive)
        x_velocity = ((p.xpos_main[:, 0] if self._is_ant else p.qpos[:, 0]) - x_before) / self._dt
        # the terms in the order the single env sums them: task, ctrl[, pitch][, contact, survive]
        rewards = env.task_space.reward(self._params, x_velocity, p.qpos[:, :2])
        rewards = rewards + -env.control_costs(a)
        weight, limit = self._pitch_cost
        if weight:  # the half-cheetah's torso pitch beyond the limit (envs.locomotion)
            rewards = rewards + -(weight * np.maximum(0.0, np.abs(p.qpos[:, 2]) - limit))
        if self._is_ant:
            if env._contact_cost_weight != 0:
                lo, hi = env._contact_force_range
                forces = np.clip(p.cfrc_ext, lo, hi).reshape(self.num_envs, -1)
                rewards = rewards + -(env._contact_cost_weight * np.sum(np.square(forces), axis=1))
            min_z, max_z = env._healthy_z_range
            z = p.qpos[:, 2]
            healthy = np.isfinite(p.qpos).all(1) & np.isfinite(p.qvel).all(1) & (min_z <= z) & (z <= max_z)
            rewards = rewards + healthy * env._healthy_reward
            if env._terminate_when_unhealthy:
                self._done |= alive & ~healthy
        rewards = np.where(alive, rewards, 0.0)
        return torch.from_numpy(self._observe()), torch.from_numpy(rewards), torch.from_numpy(self._done.copy())

    def close(self) -> None:
        self._physics.close()
        self.env.close()


class LatentFeedback:
    """A batched env whose agent draws a per-episode latent ``z [d]`` with its first action (MAESN-style
    exploration, Gupta et al. 2018, arXiv 1802.07245; ``policy.latent_dim``).

    Actions are ``[B, act_dim + d]``: the env gets the first ``act_dim`` columns; at the first step after
    a reset the last ``d`` are the episode's ``z`` and are kept, later they are ignored. Observations are
    ``cat(obs, z, first) [B, obs_dim + d + 1]``: ``z`` is 0 and ``first`` 1 until the first step, then
    ``z`` and 0. So a policy acting on these observations (:class:`~metarl.rl.policies.LatentGaussianPolicy`)
    samples ``z`` with its first action and sees it at every later step, and its log-probs and KLs on the
    stored episodes include the latent's, with nothing else in the sampler or the losses changed.
    """

    def __init__(self, vec: Any, latent_dim: int) -> None:
        if latent_dim < 1:
            raise ValueError(f"LatentFeedback: latent_dim must be >= 1, got {latent_dim}")
        self.vec, self.latent_dim = vec, int(latent_dim)
        self.env = vec.env
        self.num_envs = vec.num_envs
        self.env_action_dim = int(np.prod(vec.env.action_space.shape))
        self.observation_shape = (int(np.prod(vec.observation_shape)) + self.latent_dim + 1,)
        self._z = torch.zeros(self.num_envs, self.latent_dim)
        self._first = True

    def _observe(self, obs: torch.Tensor) -> torch.Tensor:
        flag = torch.full((self.num_envs, 1), 1.0 if self._first else 0.0)
        return torch.cat([obs.reshape(self.num_envs, -1).float(), self._z, flag], 1)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int] | None = None) -> torch.Tensor:
        self._z.zero_()
        self._first = True
        return self._observe(self.vec.reset(tasks, seeds))

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = self.env_action_dim + self.latent_dim
        if tuple(actions.shape) != (self.num_envs, width):
            raise ValueError(f"{self.env.env_name}: with latent_dim={self.latent_dim} actions must have shape "
                             f"{(self.num_envs, width)} (the env's {self.env_action_dim} and the latent's), "
                             f"got {tuple(actions.shape)}")
        if self._first:
            self._z.copy_(actions[:, self.env_action_dim:])
            self._first = False
        obs, rewards, done = self.vec.step(actions[:, :self.env_action_dim].contiguous())
        return self._observe(obs), rewards, done

    def close(self) -> None:
        self.vec.close()


#: A batched implementation, or one wrapped for a latent policy (all follow the protocol in the module docstring).
VecTaskEnv = VecNavigation2D | VecMujocoTasks | LatentFeedback


def make_vec(
    env_id: str, num_envs: int, *, num_workers: int | None = None, env_kwargs: dict[str, Any] | None = None,
    latent_dim: int = 0,
) -> VecTaskEnv:
    """The batched implementation of ``env_id``: an id of :data:`metarl.envs.ENV_IDS` (a ``metarl.envs:``
    prefix is allowed); with ``latent_dim`` > 0 wrapped in :class:`LatentFeedback`."""
    env_id = envs.builtin_id(env_id, "make_vec")
    if num_envs < 1:
        raise ValueError(f"make_vec: num_envs must be >= 1, got {num_envs}")
    entry = gymnasium.spec(env_id).entry_point
    if entry == f"{Navigation2DEnv.__module__}:{Navigation2DEnv.__name__}":
        vec: Any = VecNavigation2D(num_envs, env_kwargs=env_kwargs)
    else:
        vec = VecMujocoTasks(env_id, num_envs, num_workers=num_workers, env_kwargs=env_kwargs)
    return LatentFeedback(vec, latent_dim) if latent_dim else vec
