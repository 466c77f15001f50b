"""The Ray backend of the sampler (``sampler.backend: ray``): rollout workers are Ray actors.

DESIGN.md ("Scale"): beyond one machine the sampler runs on Ray, behind the interface of
:class:`~metarl.rl.sampler.MultiTaskSampler` (``sample``, ``sample_tasks``, ``state_dict``,
``load_state_dict``, ``close``). :class:`RaySampler` splits the tasks of each ``sample`` call
into contiguous shares, one per actor; each :class:`RolloutWorker` steps a batched env
(:func:`envs.vector.make_vec`) for its share with :func:`~metarl.rl.sampler.collect`, as the
local sampler does for all tasks at once (a built-in id's fast batched env; any other id following
the task protocol, the generic sampler's :class:`~metarl.rl.generic_sampler.GymTaskVec` in the actor's
process, success flags included). The policy module and its parameters travel once
per call (one ``ray.put`` shared by all actors).

Same result as the local sampler: the driver draws every seed from the same
:class:`~metarl.rl.sampler.SeedStreams` as ``make_sampler(..., seed=seed)`` (one reset seed
per episode, one action-noise generator per task) and hands each actor its share, so the
live steps of every episode are the same however the tasks are split. The one thing that
depends on the batch is the padding's frozen observation, which the local sampler writes
until the last episode of the *whole* batch ended; the driver extends each share's to that
step. Equality is bit for bit when the BLAS computes each row of a matrix product independently
of the number of rows (MKL on x86 does, except for products of at most 3 rows, i.e. a share of
at most 3 episodes). Actors compute on CPU; a local sampler given CUDA parameters runs its
policy on the GPU, whose numbers differ in the last bits.

Faults: a worker that dies (its process, or its node) is replaced and its share sampled again
from the same seeds, with a logged warning; the result is the same as without the fault. A
Ray that cannot be started or reached, workers that do not start, workers that keep dying, or a
replacement that no node can host within ``start_timeout`` (its node died and the other nodes'
CPUs are taken: Ray would queue it forever) raise :class:`RayClusterError` (a ``RuntimeError``)
naming the address (the training loop stops; its last checkpoint is whole, written atomically).

Ray is imported only here, when the backend is chosen: ``pip install -e .[ray]``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

import metarl.envs as envs
from metarl.envs.vector import VecTaskEnv, default_num_workers, make_vec
from metarl.rl.episodes import Episodes
from metarl.rl.generic_sampler import GymTaskVec, checked_time_limit, with_success
from metarl.rl.sampler import (
    SeededSampler,
    SeedStreams,
    Task,
    TaskSource,
    check_params,
    collect,
    policy_act,
)

log = logging.getLogger(__name__)


class RayClusterError(RuntimeError):
    """Ray cannot be started or reached, or its workers do not start or keep dying: the user's to fix
    (an address, the cluster), so ``metarl`` prints it as one line with exit code 2."""


class RolloutWorker:
    """A Ray actor's state: a batched env for its share of the tasks (a built-in id's fast one, rebuilt when
    the share's size changes; any other id's :class:`~metarl.rl.generic_sampler.GymTaskVec` in the actor's
    process, resized); one torch thread and one physics thread (Ray gives the actor one CPU).

    ``paths``: the driver's ``sys.path``; entries the actor lacks are appended, so that the module of a
    ``module:Id`` found on the driver's path (a local Ray) imports in the actor too.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], paths: Sequence[str] = ()) -> None:
        torch.set_num_threads(1)
        sys.path.extend(p for p in paths if p and p not in sys.path)
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self._vec: VecTaskEnv | GymTaskVec | None = None

    def _vec_for(self, nb: int) -> VecTaskEnv | GymTaskVec:
        if isinstance(self._vec, GymTaskVec):
            if self._vec.num_envs != nb:
                self._vec.resize(nb)
        elif self._vec is None or self._vec.num_envs != nb:
            self.close()
            self._vec = (make_vec(self.env_id, nb, num_workers=1, env_kwargs=self.env_kwargs)
                         if envs.is_builtin(self.env_id) else
                         GymTaskVec(self.env_id, nb, env_kwargs=self.env_kwargs, num_workers=1))
        return self._vec

    def ready(self) -> int:
        """The worker's process id, once it is up."""
        return os.getpid()

    def rollout(
        self,
        payload: tuple[nn.Module, Mapping[str, torch.Tensor]],
        tasks: Sequence[Task],
        *,
        first: int,
        per_task: bool,
        episodes_per_task: int,
        horizon: int,
        reset_seeds: Sequence[int],
        noise_seeds: Sequence[int],
    ) -> tuple[Episodes, torch.Tensor | None]:
        """Episodes of the share ``tasks`` (tasks ``first, first + 1, ...`` of the call).

        Returns them stacked, ``[n, T, B, ...]`` (one contiguous buffer per field: pickling the
        local sampler's per-task views would ship the whole buffer once per task), and, when
        every episode of the share ended before ``horizon``, the frozen observation of each
        sub-env ``[n * B, *obs_shape]`` (for the driver's padding), else None.
        """
        policy, params = payload
        n = len(tasks)
        if per_task:
            params = {k: v[first : first + n] for k, v in params.items()}
        nb = n * episodes_per_task
        vec = self._vec_for(nb)
        act = policy_act(policy, params, per_task=per_task, noise_seeds=noise_seeds, horizon=horizon)
        episodes = Episodes.stack(with_success(
            collect(vec, tasks, episodes_per_task=episodes_per_task, horizon=horizon, act=act, seeds=reset_seeds),
            getattr(vec, "success", None)))
        frozen = None
        if int(episodes.lengths().max()) < horizon:  # all ended: the envs are frozen, a step reads them
            zeros = torch.zeros(nb, *vec.action_shape)
            frozen = vec.step(zeros)[0].clone()
        return episodes, frozen

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None


def _shares(n_tasks: int, n_workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` task ranges, one per worker used, sizes differing by at most 1."""
    bounds = np.linspace(0, n_tasks, min(n_tasks, n_workers) + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nobody listens on (``ray.init`` would
    retry for many minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' and other forms: ray.init resolves (and rejects) them itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayClusterError(f"Ray sampler: cannot reach the Ray cluster at {address!r}: {e}") from e


class RaySampler(TaskSource, SeededSampler):
    """Samples like :class:`~metarl.rl.sampler.MultiTaskSampler`, with the tasks of each call
    split across ``num_workers`` Ray actors (see the module doc).

    Usage::

        with RaySampler("metarl/HalfCheetahVel-v0", episodes_per_task=20, seed=1, num_workers=8) as sampler:
            episodes = sampler.sample(policy, params, tasks)   # == make_sampler(..., seed=1).sample(...)

    Args:
        env_id, episodes_per_task, seed, env_kwargs, horizon: as for
            :func:`~metarl.rl.sampler.make_sampler`.
        num_workers: actors, one CPU each (0: the cluster's CPUs).
        address: None starts a local Ray (on 127.0.0.1, ``num_workers`` CPUs, no dashboard;
            :meth:`close` shuts it down); ``'auto'`` joins the cluster this machine belongs to,
            ``'host:port'`` or ``'ray://host:port'`` a remote one (its nodes need ``metarl``
            and ``envs`` installed). A Ray already initialised in this process is used as it is.
        max_restarts: replacements of dead workers allowed within one ``sample`` call.
        start_timeout: seconds to wait for the actors to start, and for each replacement.
    """

    def __init__(
        self,
        env_id: str,
        *,
        episodes_per_task: int,
        num_workers: int = 0,
        seed: int = 0,
        env_kwargs: Mapping[str, Any] | None = None,
        horizon: int | None = None,
        address: str | None = None,
        max_restarts: int = 3,
        start_timeout: float = 120.0,
    ) -> None:
        if episodes_per_task < 1:
            raise ValueError(f"RaySampler: episodes_per_task must be >= 1, got {episodes_per_task}")
        if num_workers < 0:
            raise ValueError(f"RaySampler: num_workers must be >= 0 (0: the cluster's CPUs), got {num_workers}")
        self.env_id = envs.builtin_id(env_id, "RaySampler") if envs.is_builtin(env_id) else env_id
        self.episodes_per_task = int(episodes_per_task)
        self.env_kwargs = dict(env_kwargs or {})
        if envs.is_builtin(env_id):
            registered = gymnasium.spec(self.env_id).max_episode_steps
        else:  # any other id following the task protocol: the generic sampler's envs, in the actors
            registered = checked_time_limit(env_id, self.env_kwargs, horizon, "RaySampler")
        self.horizon = int(registered if horizon is None else horizon)
        if self.horizon < 1:
            raise ValueError(f"RaySampler: horizon must be >= 1, got {horizon}")
        self.address = address
        self.max_restarts = int(max_restarts)
        self.start_timeout = float(start_timeout)
        self._streams = SeedStreams(seed)
        self._task_env: Any = None
        self.workers: list[Any] = []

        import ray

        self._ray = ray
        self._owns_ray = False
        self._connect(num_workers)
        try:
            n = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(RolloutWorker)
            self.workers = [self._spawn() for _ in range(n)]
            ray.get([w.ready.remote() for w in self.workers], timeout=start_timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as e:
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise RayClusterError(
                f"Ray sampler: {num_workers or 'one per CPU'} workers did not start within {start_timeout:g} s "
                f"at {self._where()} ({cpus:g} CPUs; sampler.start_timeout sets the wait): {e}"
            ) from e

    # ------------------------------------------------------------------ Ray plumbing
    def _where(self) -> str:
        return repr(self.address) if self.address is not None else "a local Ray (address null)"

    def _connect(self, num_workers: int) -> None:
        ray = self._ray
        if self.address is not None:
            _check_reachable(self.address, timeout=10.0)
        if ray.is_initialized():
            return
        if self.address is None:  # a private instance on loopback
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            os.environ["RAY_AUTH_MODE"] = "disabled"
            kwargs = dict(num_cpus=num_workers or default_num_workers(), include_dashboard=False,
                          _node_ip_address="127.0.0.1")
        else:
            kwargs = dict(address=self.address)
        try:
            ray.init(**kwargs, logging_level=logging.WARNING)
        except Exception as e:  # ray.init raises ConnectionError, ValueError, RuntimeError, ...
            raise RayClusterError(f"Ray sampler: cannot start or join Ray at {self._where()}: {e}") from e
        self._owns_ray = True

    def _spawn(self) -> Any:
        return self._actor_class.remote(self.env_id, self.env_kwargs, list(sys.path))

    def _replace(self, i: int) -> None:
        ray = self._ray
        ray.kill(self.workers[i], no_restart=True)  # a no-op for a dead actor; frees a hung one
        self.workers[i] = self._spawn()
        # Ray queues an actor that no node can host (its node died, the others' CPUs are taken) forever
        ready, _ = ray.wait([self.workers[i].ready.remote()], timeout=self.start_timeout)
        if not ready:
            raise RayClusterError(
                f"Ray sampler: the replacement of worker {i} did not start within {self.start_timeout:g} s at "
                f"{self._where()} ({ray.cluster_resources().get('CPU', 0):g} CPU(s) left for {len(self.workers)} "
                "workers; a node was lost?): add a node or lower sampler.num_workers (or, if nodes are still "
                "starting, raise sampler.start_timeout), then --resume the run"
            )

    # ------------------------------------------------------------------ sampler interface
    def sample(
        self,
        policy: nn.Module,
        params: Mapping[str, torch.Tensor],
        tasks: Sequence[Task],
        *,
        per_task: bool = False,
    ) -> list[Episodes]:
        """As :meth:`MultiTaskSampler.sample <metarl.rl.sampler.MultiTaskSampler.sample>`: one
        :class:`Episodes` ``[T, B, ...]`` per task, equal to the local sampler's (module doc)."""
        ray = self._ray
        tasks = list(tasks)
        if not tasks:
            raise ValueError("sample: tasks is empty")
        if not self.workers:
            raise RuntimeError("Ray sampler: sample after close()")
        check_params(params, len(tasks), per_task=per_task)
        B = self.episodes_per_task
        reset_seeds, noise_seeds = self._streams.draw(len(tasks), B)
        cpu = {k: v.detach().cpu() for k, v in params.items()}
        module = policy if all(p.device.type == "cpu" for p in policy.parameters()) else copy.deepcopy(policy).cpu()
        payload = ray.put((module, cpu))
        shares = _shares(len(tasks), len(self.workers))
        try:
            results = self._run(payload, tasks, shares, per_task=per_task, reset_seeds=reset_seeds,
                                noise_seeds=noise_seeds)
        except (ray.exceptions.RaySystemError, ConnectionError) as e:
            raise RayClusterError(f"Ray sampler: lost the Ray cluster at {self._where()}: {e}") from e
        return _join(results, self.horizon)

    def _run(
        self,
        payload: Any,
        tasks: list[Task],
        shares: list[tuple[int, int]],
        *,
        per_task: bool,
        reset_seeds: list[int],
        noise_seeds: list[int],
    ) -> list[tuple[Episodes, torch.Tensor | None]]:
        """Share ``j`` of the tasks on worker ``j``; a dead worker is replaced and its share rerun."""
        ray, B = self._ray, self.episodes_per_task
        results: list[tuple[Episodes, torch.Tensor | None] | None] = [None] * len(shares)
        todo, restarts = list(range(len(shares))), 0
        while todo:
            refs = {}
            for j in todo:  # share j runs on worker j
                lo, hi = shares[j]
                refs[j] = self.workers[j].rollout.remote(
                    payload, tasks[lo:hi], first=lo, per_task=per_task, episodes_per_task=B, horizon=self.horizon,
                    reset_seeds=reset_seeds[lo * B : hi * B], noise_seeds=noise_seeds[lo:hi],
                )
            failed = []
            for j, ref in refs.items():
                try:
                    results[j] = ray.get(ref)
                except _lost_errors(ray) as e:
                    failed.append((j, e))
            for j, e in failed:
                restarts += 1
                if restarts > self.max_restarts:
                    raise RayClusterError(
                        f"Ray sampler: workers at {self._where()} keep dying ({restarts} failures in one sample "
                        f"call, max_restarts={self.max_restarts}); last: {type(e).__name__}: {e}"
                    ) from e
                log.warning(
                    "Ray sampler: worker %d died (%s); replacing it and sampling its %d tasks again",
                    j, type(e).__name__, shares[j][1] - shares[j][0],
                )
                self._replace(j)
            todo = [j for j, _ in failed]
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop the workers, and the local Ray if this sampler started it."""
        if self.workers and self._ray.is_initialized():
            for i, w in enumerate(self.workers):
                try:
                    self._ray.kill(w, no_restart=True)
                except Exception as e:  # a lost cluster: report it, and let close() finish (it runs in finally blocks)
                    log.warning("Ray sampler: could not stop worker %d at %s: %s", i, self._where(), e)
        self.workers = []
        if self._task_env is not None:
            self._task_env.close()
            self._task_env = None
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Errors that mean the worker (or its node) is gone, not that the rollout itself failed:
    those are retried on a new worker; a rollout's own error (``RayTaskError``) is raised."""
    E = ray.exceptions
    return (E.RayActorError, E.WorkerCrashedError, E.NodeDiedError, E.ObjectLostError, E.LocalRayletDiedError)


def _join(shares: Sequence[tuple[Episodes, torch.Tensor | None]], horizon: int) -> list[Episodes]:
    """The shares' episodes as one list, one per task, with the local sampler's padding: the
    frozen observation until the last episode of the whole batch ended (zeros after)."""
    stop = max(int(e.lengths().max()) for e, _ in shares)
    out: list[Episodes] = []
    for episodes, frozen in shares:
        own = int(episodes.lengths().max())
        if own < stop:
            assert frozen is not None
            obs = episodes.observations.clone()
            n, _, b = episodes.rewards.shape
            obs[:, own:stop] = frozen.view(n, 1, b, *obs.shape[3:])
            episodes = dataclasses.replace(episodes, observations=obs, success=episodes.successes())
        out.extend(episodes.unstack())
    return out
