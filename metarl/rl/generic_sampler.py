"""The sampler for any registered Gymnasium id that follows the task protocol (:mod:`metarl.envs.protocol`).

The built-in ids (:data:`metarl.envs.ENV_IDS`) run on the fast batched envs of
:mod:`envs.vector`; every other id runs here, one ``gymnasium.make`` env per (task, episode)
pair, stepped in lockstep, split over worker processes (:mod:`metarl.envs.gym_batch`; one per core by
default) while the policy runs once per step for the whole batch in the calling process.
:class:`GymTaskVec` gives that list of envs the
batched-env protocol of :mod:`envs.vector` (``reset(tasks, seeds)``, ``step(actions)``, a sub-env
frozen after its episode ends), so :class:`GenericSampler` samples with the very
:func:`~metarl.rl.sampler.collect` loop, seeds (:class:`~metarl.rl.sampler.SeedStreams`: a reset
seed per episode, an action-noise generator per task) and policy (:func:`~metarl.rl.sampler.policy_act`)
of :class:`~metarl.rl.sampler.MultiTaskSampler`: the same interface, the same ``Episodes``
(``[T, B, ...]``, padded after an episode ends), and on a built-in id the same numbers, for any
``num_workers``.

An episode ends when its env returns ``terminated`` or ``truncated`` (the registered time limit),
or after ``horizon`` steps (default: the id's ``max_episode_steps``). Where the env reports
``info["success"]`` (Meta-World), each episode carries a success flag (``Episodes.successes()``):
whether ``info["success"]`` was true at some step of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import gymnasium
import numpy as np
import torch

from metarl.envs.gym_batch import GymBatch, ProcessGymBatch
from metarl.envs.protocol import check_task_env
from metarl.envs.vector import NonFiniteActionError, default_num_workers
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

    With ``num_workers > 1`` the envs live in that many worker processes (:class:`~metarl.envs.gym_batch.
    ProcessGymBatch`, a contiguous slice each, stepped at once); with 1, in this process. The numbers are
    the same bit for bit (each env gets the same seed, task and action array either way).
    """

    def __init__(self, env_id: str, num_envs: int, *, env_kwargs: Mapping[str, Any] | None = None,
                 num_workers: int = 1) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        if num_workers > 1:
            spec = registered_spec(env_id)
            self._batch: GymBatch | ProcessGymBatch = ProcessGymBatch(
                spec, num_envs, num_workers=num_workers, env_kwargs=self.env_kwargs, name=env_id)
            try:
                self._local = gymnasium.make(env_id, **self.env_kwargs)  # the spaces and sample_tasks, here
            except BaseException:
                self._batch.close()
                raise
        else:
            self._batch = GymBatch(env_id, num_envs, env_kwargs=self.env_kwargs)
            self._local = self._batch.envs[0]
        self.num_envs = int(num_envs)
        self.observation_shape = tuple(self._local.observation_space.shape)
        self.action_shape = tuple(self._local.action_space.shape or ())

    def resize(self, num_envs: int) -> None:
        """Use ``num_envs`` sub-envs from now on (made when the pool has fewer; extra ones stay idle)."""
        self._batch.resize(num_envs)
        self.num_envs = int(num_envs)

    @property
    def env(self) -> Any:
        """One env of the id, unwrapped (its spaces and ``sample_tasks``)."""
        return self._local.unwrapped

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> torch.Tensor:
        if len(tasks) != self.num_envs or len(seeds) != self.num_envs:
            raise ValueError(f"{self.env_id}: reset got {len(tasks)} tasks and {len(seeds)} seeds for "
                             f"{self.num_envs} sub-envs")
        return torch.from_numpy(self._batch.reset(tasks, seeds))

    @property
    def success(self) -> np.ndarray | None:
        """``[B]`` bool: ``info["success"]`` true at some step of each episode since the reset (``None`` if
        the envs report no ``"success"``)."""
        return self._batch.success

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (self.num_envs, *self.action_shape)
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != shape:
            got = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"{self.env_id}: actions must be a tensor of shape {shape}, got {got}")
        if actions.is_floating_point() and not bool(torch.isfinite(actions).all()):
            raise NonFiniteActionError(f"{self.env_id}: actions must be finite")
        obs, rewards, done = self._batch.step(actions.detach().cpu().numpy())
        return torch.from_numpy(obs), torch.from_numpy(rewards), torch.from_numpy(done)

    def close(self) -> None:
        self._batch.close()
        if self._local is not None:
            self._local.close()
            self._local = None


def checked_time_limit(env_id: str, env_kwargs: Mapping[str, Any], horizon: int | None, who: str) -> int | None:
    """``env_id``'s registered ``max_episode_steps``, after checking that it follows the task protocol.

    Raises:
        TaskProtocolError: the env does not follow the protocol.
        ValueError: it has no time limit and no ``horizon`` is given.
    """
    probe = gymnasium.make(env_id, **env_kwargs)
    try:
        check_task_env(probe)
        registered = probe.spec.max_episode_steps if probe.spec is not None else None
    finally:
        probe.close()
    if horizon is None and registered is None:
        raise ValueError(f"{who}: {env_id} has no max_episode_steps; register it with one "
                         "(gymnasium.register(..., max_episode_steps=T)) or pass horizon")
    return registered


def registered_spec(env_id: str) -> gymnasium.envs.registration.EnvSpec:
    """The ``EnvSpec`` that ``gymnasium.make(env_id)`` makes, importing the module of a ``module:Id`` first
    (as ``make`` does; ``gymnasium.spec`` takes no module)."""
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)
    return gymnasium.spec(name)


def with_success(episodes: list[Episodes], success: np.ndarray | None) -> list[Episodes]:
    """``episodes`` (one per task, ``B`` each) with the per-episode ``success [N * B]`` flags of the
    env that sampled them, or as they are where the env reports no success (``None``)."""
    if success is None:
        return episodes
    flags = torch.from_numpy(success).view(len(episodes), -1)
    return [Episodes(*(getattr(e, f.name) for f in fields(Episodes)), success=flags[n])
            for n, e in enumerate(episodes)]


class GenericSampler(VecSampler):
    """:class:`~metarl.rl.sampler.MultiTaskSampler`'s interface and contract for any id following
    :mod:`metarl.envs.protocol`: ``sample(policy, params, tasks, per_task=...) -> list[Episodes]``,
    ``sample_tasks``, ``state_dict`` / ``load_state_dict`` / ``seeded``, ``horizon``, ``close``.

    The ``N * episodes_per_task`` envs are made on first use and kept (a call with more tasks makes
    more; one with fewer leaves the rest idle). ``num_workers`` worker processes hold them (None or 0: one per
    core this process may use; 1: all in the calling process); the episodes are the same for any number.

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
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"GenericSampler: num_workers must be >= 0 (0: one per core), got {num_workers}")
        self._workers = int(num_workers or default_num_workers())
        self._set_horizon("GenericSampler", checked_time_limit(env_id, self.env_kwargs, horizon, "GenericSampler"),
                          horizon)

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
        return with_success(episodes, self._vec.success)

    def _vec_for(self, n_tasks: int) -> GymTaskVec:
        nb = n_tasks * self.episodes_per_task
        if self._vec is None:
            self._vec = GymTaskVec(self.env_id, nb, env_kwargs=self.env_kwargs, num_workers=self._workers)
        elif self._vec.num_envs != nb:
            self._vec.resize(nb)
        return self._vec


def make_generic_sampler(
    env_id: str,
    *,
    episodes_per_task: int,
    num_workers: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    horizon: int | None = None,
) -> GenericSampler:
    """A :class:`GenericSampler` for ``env_id`` (any registered id, or ``module:Id``)."""
    return GenericSampler(env_id, episodes_per_task=episodes_per_task, num_workers=num_workers, seed=seed,
                          env_kwargs=env_kwargs, horizon=horizon)
