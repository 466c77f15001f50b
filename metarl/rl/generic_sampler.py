"""The sampler for any registered Gymnasium id that follows the task protocol (:mod:`metarl.envs.protocol`).

The built-in ids (:data:`metarl.envs.ENV_IDS`) run on the fast batched envs of
:mod:`envs.vector`; every other id runs here, one ``gymnasium.make`` env per (task, episode)
pair, split over worker processes (:mod:`metarl.envs.gym_batch`; one per core by default). Each
worker holds whole tasks and runs their rollout with its own copy of the policy, so that no message
crosses per step (on 2 cores about 1.4x the env-steps per second of a lockstep loop whose policy runs
in the calling process: benchmarks/README.md); with one task, a policy that cannot travel (defined in
``__main__``, on a GPU) or one worker, the envs step in lockstep and the policy runs once per step for
the whole batch in the calling process. :class:`GymTaskVec` gives that list of envs the
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
import pickle
import weakref
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
from metarl.rl.sampler import Rollout, Task, VecSampler, check_params, episodes_from_buffers, policy_act, rollout


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

    def resize(self, num_envs: int, unit: int = 1) -> None:
        """Use ``num_envs`` sub-envs from now on (made when the pool has fewer; extra ones stay idle); with
        worker processes, each holds whole blocks of ``unit`` sub-envs (a task's episodes)."""
        self._batch.resize(num_envs, unit)
        self.num_envs = int(num_envs)

    @property
    def worker_slices(self) -> list[tuple[int, int]]:
        """The ``[lo, hi)`` sub-envs of each worker in use (all of them in one slice without workers)."""
        return self._batch.worker_slices if isinstance(self._batch, ProcessGymBatch) else [(0, self.num_envs)]

    def rollouts(self, args: Sequence[tuple]) -> list[Rollout]:
        """Each worker runs a whole rollout of its slice (:func:`worker_rollout` with ``args[j]``); needs workers."""
        if not isinstance(self._batch, ProcessGymBatch):
            raise RuntimeError(f"{self.env_id}: rollouts run in worker processes; this batch has none")
        return self._batch.rollouts(args)

    @classmethod
    def around(cls, batch: Any, env_id: str) -> GymTaskVec:
        """A :class:`GymTaskVec` over an in-process ``batch`` made elsewhere (a worker's :class:`GymBatch`)."""
        vec = cls.__new__(cls)
        vec.env_id, vec.env_kwargs, vec._batch, vec._local = env_id, {}, batch, None
        vec.num_envs = batch.num_envs
        vec.observation_shape, vec.action_shape = batch.observation_shape, batch.action_shape
        return vec

    def _check_actions(self, actions: torch.Tensor, shape: tuple[int, ...]) -> None:
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != shape:
            got = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"{self.env_id}: actions must be a tensor of shape {shape}, got {got}")
        if actions.is_floating_point() and not bool(torch.isfinite(actions).all()):
            raise NonFiniteActionError(f"{self.env_id}: actions must be finite")

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
        self._check_actions(actions, (self.num_envs, *self.action_shape))
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


def worker_rollout(batch: Any, policy: Any, params: Mapping[str, torch.Tensor], per_task: bool,
                   noise_seeds: Sequence[int], tasks: Sequence[Task], seeds: Sequence[int], episodes_per_task: int,
                   horizon: int, env_id: str) -> Rollout:
    """A whole rollout of ``tasks`` on a worker's ``batch`` (its :class:`GymBatch`), run in the worker with
    the policy there: :func:`~metarl.rl.sampler.rollout` with :func:`~metarl.rl.sampler.policy_act`, as
    :meth:`GenericSampler.sample` would run it on these tasks in one process."""
    torch.set_num_threads(1)
    act = policy_act(policy, params, per_task=per_task, noise_seeds=noise_seeds, horizon=horizon)
    return rollout(GymTaskVec.around(batch, env_id), tasks, episodes_per_task=episodes_per_task, horizon=horizon,
                   act=act, seeds=seeds)


def episodes_from_rollouts(parts: Sequence[Rollout], n_tasks: int) -> list[Episodes]:
    """The episodes of one rollout split over workers (``parts``: each worker's whole tasks, in order), as
    :func:`~metarl.rl.sampler.collect` returns them for all tasks at once: a worker whose episodes had all
    ended before another's gets its frozen observations up to the last worker's end, zeros after it."""
    end = max(r.end for r in parts)
    for r in parts:
        r.observations[r.end + 1 : end + 1] = r.last
    buffers = [torch.cat(x, dim=1) for x in zip(*(r[:5] for r in parts), strict=True)]
    return episodes_from_buffers(*buffers, n_tasks)


def _cpu_and_picklable(policy: Any, params: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``policy`` and ``params`` can act in a worker process: all on the CPU (a worker acts on the
    CPU, as the caller then does), and the policy pickles by reference to an importable module."""
    tensors = [*params.values(), *(policy.parameters() if isinstance(policy, torch.nn.Module) else [])]
    if any(t.device.type != "cpu" for t in tensors) or type(policy).__module__ == "__main__":
        return False
    try:  # remembered per policy object: training samples with the same policy twice per iteration
        return _PICKLES[policy]
    except (KeyError, TypeError):
        pass
    try:
        pickle.dumps(policy)
        ok = True
    except Exception:
        ok = False
    try:
        _PICKLES[policy] = ok
    except TypeError:  # not weakly referenceable or not hashable: checked again at each call
        pass
    return ok


#: Whether each policy object pickled (see :func:`_cpu_and_picklable`); an entry goes with its policy.
_PICKLES: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


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
        """:meth:`VecSampler.sample`, with each episode's success flag where the env reports one.

        With worker processes, two tasks or more and a policy that can act in them (on the CPU, pickled
        by reference), each worker holds whole tasks and runs their rollout with its own copy of the
        policy (no message per step); otherwise this process runs the policy once per step for all
        sub-envs, split over the workers. The episodes are the same either way.
        """
        tasks = list(tasks)
        if not (self._workers > 1 and len(tasks) > 1 and _cpu_and_picklable(policy, params)):
            episodes = super().sample(policy, params, tasks, per_task=per_task)
            return with_success(episodes, self._vec.success)
        check_params(params, len(tasks), per_task=per_task)
        vec, per = self._vec_for(len(tasks), whole_tasks=True), self.episodes_per_task
        reset_seeds, noise_seeds = self._streams.draw(len(tasks), per)
        args = []
        for lo, hi in vec.worker_slices:
            a, b = lo // per, hi // per
            mine = {k: v.detach()[a:b] if per_task else v.detach() for k, v in params.items()}
            args.append((policy, mine, per_task, noise_seeds[a:b], tasks[a:b], reset_seeds[lo:hi], per,
                         self.horizon, self.env_id))
        episodes = episodes_from_rollouts(vec.rollouts(args), len(tasks))
        return with_success(episodes, self._vec.success)

    def _vec_for(self, n_tasks: int, whole_tasks: bool = False) -> GymTaskVec:
        nb = n_tasks * self.episodes_per_task
        unit = self.episodes_per_task if whole_tasks else 1
        if self._vec is None:
            self._vec = GymTaskVec(self.env_id, nb, env_kwargs=self.env_kwargs, num_workers=self._workers)
        self._vec.resize(nb, unit)
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
