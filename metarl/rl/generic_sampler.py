"""The sampler for any registered Gymnasium id that follows the task protocol (:mod:`metarl.envs.protocol`).

The built-in ids (:data:`metarl.envs.ENV_IDS`) run on the fast batched envs of
:mod:`envs.vector`; every other id runs here, one ``gymnasium.make`` env per (task, episode)
pair, stepped in lockstep in the calling thread. :class:`GymTaskVec` gives that list of envs the
batched-env protocol of :mod:`envs.vector` (``reset(tasks, seeds)``, ``step(actions)``, a sub-env
frozen after its episode ends), so :class:`GenericSampler` samples with the very
:func:`~metarl.rl.sampler.collect` loop, seeds (:class:`~metarl.rl.sampler.SeedStreams`: a reset
seed per episode, an action-noise generator per task) and policy (:func:`~metarl.rl.sampler.policy_act`)
of :class:`~metarl.rl.sampler.MultiTaskSampler`: the same interface, the same ``Episodes``
(``[T, B, ...]``, padded after an episode ends), and on a built-in id the same numbers.

An episode ends when its env returns ``terminated`` or ``truncated`` (the registered time limit),
or after ``horizon`` steps (default: the id's ``max_episode_steps``). Where the env reports
``info["success"]`` (Meta-World), each episode carries a success flag (``Episodes.successes()``):
whether ``info["success"]`` was true at some step of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import gymnasium
import numpy as np
import torch

from metarl.envs.protocol import check_task_env
from metarl.envs.vector import NonFiniteActionError
from metarl.rl.episodes import Episodes
from metarl.rl.sampler import Task, VecSampler


class GymTaskVec:
    """``num_envs`` Gymnasium envs of ``env_id`` behind the batched-env protocol of :mod:`envs.vector`.

    ``reset(tasks, seeds)`` resets env ``i`` with ``seed=seeds[i], options={"task": tasks[i]}``;
    ``step(actions [B, *act_shape])`` steps the envs whose episode is still running (a float32
    array each, or an int for a ``Discrete`` action space) and returns ``(obs [B, *obs_shape],
    rewards [B], done [B])``; an env that terminated or was truncated stays frozen (its last
    observation, reward 0) until the next reset. ``success [B]`` is whether each episode's ``info["success"]``
    was true at some step since the reset, or ``None`` if no env has reported a ``"success"``.
    """

    def __init__(self, env_id: str, num_envs: int, *, env_kwargs: Mapping[str, Any] | None = None) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.envs: list[gymnasium.Env] = []  # the pool: the first num_envs are in use
        self.resize(num_envs)
        first = self.envs[0]
        self.observation_shape = tuple(first.observation_space.shape)
        self.action_shape = tuple(first.action_space.shape or ())
        self._discrete = isinstance(first.action_space, gymnasium.spaces.Discrete)

    def resize(self, num_envs: int) -> None:
        """Use ``num_envs`` sub-envs from now on (made when the pool has fewer; extra ones stay idle)."""
        if num_envs < 1:
            raise ValueError(f"GymTaskVec: num_envs must be >= 1, got {num_envs}")
        try:
            while len(self.envs) < num_envs:
                self.envs.append(gymnasium.make(self.env_id, **self.env_kwargs))
        except BaseException:
            self.close()
            raise
        self.num_envs = int(num_envs)
        self._obs = np.zeros((self.num_envs, *self.envs[0].observation_space.shape))
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._success = np.zeros(self.num_envs, dtype=bool)
        self._reports_success = False

    @property
    def env(self) -> Any:
        """The first sub-env, unwrapped (its spaces and ``sample_tasks``)."""
        return self.envs[0].unwrapped

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> torch.Tensor:
        if len(tasks) != self.num_envs or len(seeds) != self.num_envs:
            raise ValueError(f"{self.env_id}: reset got {len(tasks)} tasks and {len(seeds)} seeds for "
                             f"{self.num_envs} sub-envs")
        for i, (env, task, seed) in enumerate(zip(self.envs[: self.num_envs], tasks, seeds, strict=True)):
            self._obs[i], _ = env.reset(seed=int(seed), options={"task": task})
        self._done[:] = False
        self._success[:] = False
        self._reports_success = False
        return torch.from_numpy(self._obs.copy())

    @property
    def success(self) -> np.ndarray | None:
        """``[B]`` bool: ``info["success"]`` true at some step of each episode since the reset (``None`` if
        the envs report no ``"success"``)."""
        return self._success.copy() if self._reports_success else None

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (self.num_envs, *self.action_shape)
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != shape:
            got = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"{self.env_id}: actions must be a tensor of shape {shape}, got {got}")
        if actions.is_floating_point() and not bool(torch.isfinite(actions).all()):
            raise NonFiniteActionError(f"{self.env_id}: actions must be finite")
        a = actions.detach().cpu().numpy()
        rewards = np.zeros(self.num_envs)
        for i in np.flatnonzero(~self._done):
            obs, reward, terminated, truncated, info = self.envs[i].step(int(a[i]) if self._discrete else a[i])
            self._obs[i], rewards[i] = obs, reward
            if "success" in info:
                self._reports_success = True
                self._success[i] |= bool(info["success"])
            self._done[i] = terminated or truncated
        return torch.from_numpy(self._obs.copy()), torch.from_numpy(rewards), torch.from_numpy(self._done.copy())

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class GenericSampler(VecSampler):
    """:class:`~metarl.rl.sampler.MultiTaskSampler`'s interface and contract for any id following
    :mod:`metarl.envs.protocol`: ``sample(policy, params, tasks, per_task=...) -> list[Episodes]``,
    ``sample_tasks``, ``state_dict`` / ``load_state_dict`` / ``seeded``, ``horizon``, ``close``.

    The ``N * episodes_per_task`` envs are made on first use and kept (a call with more tasks makes
    more; one with fewer leaves the rest idle). ``num_workers`` is accepted for the same signature and unused (the
    envs step in the calling thread).

    Raises:
        TaskProtocolError: the env does not follow the task protocol (checked once, on construction).
        ValueError: the id has no registered ``max_episode_steps`` and no ``horizon`` is given.
    """

    def __init__(
        self,
        env_id: str,
        *,
        episodes_per_task: int,
        num_workers: int | None = None,
        seed: int = 0,
        env_kwargs: Mapping[str, Any] | None = None,
        horizon: int | None = None,
    ) -> None:
        self._setup("GenericSampler", env_id, episodes_per_task, num_workers, env_kwargs, seed)
        probe = gymnasium.make(env_id, **self.env_kwargs)
        try:
            check_task_env(probe)
            registered = probe.spec.max_episode_steps if probe.spec is not None else None
        finally:
            probe.close()
        if horizon is None and registered is None:
            raise ValueError(f"GenericSampler: {env_id} has no max_episode_steps; register it with one "
                             "(gymnasium.register(..., max_episode_steps=T)) or pass horizon")
        self._set_horizon("GenericSampler", registered, horizon)

    def sample(
        self,
        policy: Any,
        params: Mapping[str, torch.Tensor],
        tasks: Sequence[Task],
        *,
        per_task: bool = False,
    ) -> list[Episodes]:
        """:meth:`VecSampler.sample`, with each episode's success flag where the env reports one."""
        episodes = super().sample(policy, params, tasks, per_task=per_task)
        success = self._vec.success
        if success is None:
            return episodes
        flags = torch.from_numpy(success).view(len(episodes), self.episodes_per_task)
        return [Episodes(*(getattr(e, f.name) for f in fields(Episodes)), success=flags[n])
                for n, e in enumerate(episodes)]

    def _vec_for(self, n_tasks: int) -> GymTaskVec:
        nb = n_tasks * self.episodes_per_task
        if self._vec is None:
            self._vec = GymTaskVec(self.env_id, nb, env_kwargs=self.env_kwargs)
        elif self._vec.num_envs != nb:
            self._vec.resize(nb)
        return self._vec


def make_generic_sampler(
    env_id: str,
    *,
    episodes_per_task: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    horizon: int | None = None,
) -> GenericSampler:
    """A :class:`GenericSampler` for ``env_id`` (any registered id, or ``module:Id``)."""
    return GenericSampler(env_id, episodes_per_task=episodes_per_task, seed=seed, env_kwargs=env_kwargs,
                          horizon=horizon)
