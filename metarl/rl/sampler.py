"""Batched multi-task episode sampling: all tasks x episodes advance together, one policy call per step.

MAML-RL (Finn et al. 2017, arXiv 1703.03400, Alg. 3) samples K episodes per task for a
meta-batch of tasks, with the initial parameters (before adaptation) and with each task's
adapted ones (after). :meth:`MultiTaskSampler.sample` does both: ``params`` are shared (a
``Params`` dict) or per task (stacked, ``[N, ...]``, as ``metarl.maml.adapt_batched``
returns). The ``N * B`` sub-envs of one batched env (:func:`envs.vector.make_vec`) step
together; the policy runs once per time step on the ``[N, B, obs_dim]`` observations of
all of them, under ``torch.no_grad``, and every array is preallocated ``[T, N*B, ...]``.

Randomness: each sampler owns a ``numpy.random.Generator`` (per-episode reset seeds) and a
``torch.Generator`` (action noise), both derived from ``seed``; each ``sample`` call
advances them, so successive calls differ and a run is reproducible from the seed (also
across ``num_workers``: the physics is deterministic per sub-env).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

import envs
from envs.vector import VecTaskEnv, make_vec
from metarl.rl.episodes import Episodes
from metarl.rl.policies import policy_distribution, sample_actions

#: ``act(obs [N, B, *obs_shape]) -> (actions [N, B, *act_shape], log_probs [N, B])``
ActFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Task = dict[str, Any]


def collect(
    vec: VecTaskEnv,
    tasks: Sequence[Task],
    *,
    episodes_per_task: int,
    horizon: int,
    act: ActFn,
    seeds: Sequence[int],
) -> list[Episodes]:
    """Run ``episodes_per_task`` episodes of each task in ``vec`` (a batched env) with ``act``.

    Sub-env ``n * B + b`` runs episode ``b`` of task ``n``, reset with ``seeds[n * B + b]``.
    Every episode lasts ``horizon`` steps or until it terminates; ``masks[t]`` is 1 for the
    steps taken while the episode was alive (the terminating step included) and 0 after.
    After its end an episode's entries are padding: its frozen last observation, actions and
    log-probs the policy produced for it anyway, reward 0; zeros once every episode has
    ended, where the loop stops.

    Returns one :class:`Episodes` per task with ``[T, B, ...]`` fields (views of one
    ``[T, N, B, ...]`` buffer); observations and rewards are float32.
    """
    n_tasks, per_task = len(tasks), int(episodes_per_task)
    if n_tasks == 0:
        raise ValueError("collect: tasks is empty")
    nb = n_tasks * per_task
    if vec.num_envs != nb:
        raise ValueError(f"collect: the batched env has {vec.num_envs} sub-envs, need {n_tasks} x {per_task}")
    if len(seeds) != nb:
        raise ValueError(f"collect: need {nb} seeds, got {len(seeds)}")
    env_tasks = [t for t in tasks for _ in range(per_task)]
    obs = vec.reset(env_tasks, seeds)
    observations = torch.zeros(horizon, nb, *vec.observation_shape)
    rewards = torch.zeros(horizon, nb)
    masks = torch.zeros(horizon, nb)
    log_probs = torch.zeros(horizon, nb)
    actions: torch.Tensor | None = None
    alive = torch.ones(nb, dtype=torch.bool)
    with torch.no_grad():
        for t in range(horizon):
            observations[t].copy_(obs)
            masks[t].copy_(alive)
            a, lp = act(observations[t].view(n_tasks, per_task, *vec.observation_shape))
            if actions is None:
                actions = torch.zeros(horizon, nb, *a.shape[2:], dtype=a.dtype)
            actions[t].copy_(a.reshape(nb, *a.shape[2:]))
            log_probs[t].copy_(lp.reshape(nb))
            obs, r, done = vec.step(actions[t])
            rewards[t].copy_(r)
            torch.logical_not(done, out=alive)
            if not bool(alive.any()):
                break
    assert actions is not None

    def split(x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.view(horizon, n_tasks, per_task, *x.shape[2:]).unbind(1))

    fields = [split(x) for x in (observations, actions, rewards, masks, log_probs)]
    return [Episodes(*per_task_fields) for per_task_fields in zip(*fields, strict=True)]


class MultiTaskSampler:
    """Samples ``episodes_per_task`` episodes for each of a list of tasks (see the module doc).

    Usage::

        with make_sampler("metarl/HalfCheetahVel-v0", episodes_per_task=20, seed=1) as sampler:
            tasks = sampler.sample_tasks(40, np.random.default_rng(0))
            before = sampler.sample(policy, params, tasks)                  # shared params
            after = sampler.sample(policy, fast, tasks, per_task=True)      # [N, ...] params

    The batched env is built on first use for ``N * episodes_per_task`` sub-envs and rebuilt
    when a call brings a different number of tasks.
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
        env_id = env_id.removeprefix("envs:")
        if env_id not in envs.ENV_IDS:
            raise ValueError(f"make_sampler: unknown env id {env_id!r}; known: {list(envs.ENV_IDS)}")
        if episodes_per_task < 1:
            raise ValueError(f"make_sampler: episodes_per_task must be >= 1, got {episodes_per_task}")
        self.env_id = env_id
        self.episodes_per_task = int(episodes_per_task)
        self.num_workers = num_workers
        self.env_kwargs = dict(env_kwargs or {})
        registered = gymnasium.spec(env_id).max_episode_steps
        self.horizon = int(registered if horizon is None else horizon)
        if self.horizon < 1:
            raise ValueError(f"make_sampler: horizon must be >= 1, got {horizon}")
        seq = np.random.SeedSequence(seed)
        np_seq, torch_seq = seq.spawn(2)
        self._rng = np.random.default_rng(np_seq)
        self._generator = torch.Generator().manual_seed(int(torch_seq.generate_state(1, np.uint64)[0] >> 1))
        self._vec: VecTaskEnv | None = None
        self._task_env: Any = None
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def _vec_for(self, n_tasks: int) -> VecTaskEnv:
        nb = n_tasks * self.episodes_per_task
        if self._vec is None or self._vec.num_envs != nb:
            self.close()
            self._vec = make_vec(self.env_id, nb, num_workers=self.num_workers, env_kwargs=self.env_kwargs)
        return self._vec

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks from the env's task distribution (its ``sample_tasks``), drawn with ``rng``."""
        if self._task_env is None:
            self._task_env = gymnasium.make(self.env_id, **self.env_kwargs).unwrapped
        return self._task_env.sample_tasks(n, rng)

    def _generator_for(self, device: torch.device) -> torch.Generator:
        """The CPU stream, or for another device a generator seeded from it (once)."""
        if device.type == "cpu":
            return self._generator
        if device not in self._device_generators:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
            self._device_generators[device] = torch.Generator(device).manual_seed(seed)
        return self._device_generators[device]

    def sample(
        self,
        policy: nn.Module,
        params: Mapping[str, torch.Tensor],
        tasks: Sequence[Task],
        *,
        per_task: bool = False,
    ) -> list[Episodes]:
        """``episodes_per_task`` episodes of each task under ``policy`` with ``params``.

        Args:
            policy: a module whose forward returns ``Independent(Normal)`` or ``Categorical``.
            params: shared parameters, or with ``per_task=True`` a stacked dict whose tensors
                have a leading task dim ``N = len(tasks)``.
            tasks: the tasks (dicts, e.g. from :meth:`sample_tasks`).

        Returns one :class:`Episodes` per task, ``[T, B, ...]`` with ``T`` the horizon and
        ``B = episodes_per_task``; ``log_probs`` are those of the sampled actions.
        """
        tasks = list(tasks)
        if per_task:
            for name, p in params.items():
                if p.dim() == 0 or p.shape[0] != len(tasks):
                    raise ValueError(
                        f"sample: per_task params must have a leading dim of len(tasks)={len(tasks)}, "
                        f"but {name!r} has shape {tuple(p.shape)}"
                    )
        vec = self._vec_for(len(tasks))
        device = next(iter(params.values())).device if params else torch.device("cpu")
        generator = self._generator_for(device)

        def act(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dist = policy_distribution(policy, params, obs.to(device), per_task=per_task)
            a = sample_actions(dist, generator)
            return a.cpu(), dist.log_prob(a).cpu()

        seeds = self._rng.integers(0, 2**63 - 1, size=vec.num_envs).tolist()
        return collect(vec, tasks, episodes_per_task=self.episodes_per_task, horizon=self.horizon, act=act, seeds=seeds)

    def state_dict(self) -> dict[str, Any]:
        """The state of the sampler's random streams, for checkpoints."""
        return {
            "numpy": self._rng.bit_generator.state,
            "torch": self._generator.get_state(),
            "devices": {str(d): g.get_state() for d, g in self._device_generators.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the random streams saved by :meth:`state_dict` (a resumed run samples as the
        uninterrupted one would)."""
        self._rng.bit_generator.state = state["numpy"]
        self._generator.set_state(state["torch"])
        self._device_generators = {
            torch.device(d): torch.Generator(torch.device(d)).set_state(g) for d, g in state["devices"].items()
        }

    def close(self) -> None:
        """Stop the physics threads/processes (a later ``sample`` starts them again)."""
        if self._vec is not None:
            self._vec.close()
            self._vec = None
        if self._task_env is not None:
            self._task_env.close()
            self._task_env = None

    def __enter__(self) -> MultiTaskSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_sampler(
    env_id: str,
    *,
    episodes_per_task: int,
    num_workers: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    horizon: int | None = None,
) -> MultiTaskSampler:
    """A :class:`MultiTaskSampler` for ``env_id`` (one of ``envs.ENV_IDS``; ``envs:`` prefix allowed).

    Args:
        episodes_per_task: B, the episodes sampled per task and call.
        num_workers: physics threads (HalfCheetah) or processes (Ant); default: the cores
            this process may use. Navigation2D runs in the calling thread.
        seed: seeds the sampler's own reset-seed and action-noise streams.
        env_kwargs: passed to ``gymnasium.make`` (e.g. ``{"squared": True}``).
        horizon: episode length; default: the id's registered ``max_episode_steps``.
    """
    return MultiTaskSampler(
        env_id,
        episodes_per_task=episodes_per_task,
        num_workers=num_workers,
        seed=seed,
        env_kwargs=env_kwargs,
        horizon=horizon,
    )
