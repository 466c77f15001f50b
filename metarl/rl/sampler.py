"""Batched multi-task episode sampling: all tasks x episodes advance together, one policy call per step.

MAML-RL (Finn et al. 2017, arXiv 1703.03400, Alg. 3) samples K episodes per task for a
meta-batch of tasks, with the initial parameters (before adaptation) and with each task's
adapted ones (after). :meth:`MultiTaskSampler.sample` does both: ``params`` are shared (a
``Params`` dict) or per task (stacked, ``[N, ...]``, as ``metarl.maml.adapt_batched``
returns). The ``N * B`` sub-envs of one batched env (:func:`envs.vector.make_vec`) step
together; the policy runs once per time step on the ``[N, B, obs_dim]`` observations of
all of them, under ``torch.no_grad``, and every array is preallocated ``[T, N*B, ...]``.

Randomness: each sampler owns :class:`SeedStreams`, a ``numpy.random.Generator`` (one reset
seed per episode) and a ``torch.Generator`` (one action-noise seed per task), both derived
from ``seed``. Each ``sample`` call draws its seeds from them, so successive calls differ and
a run is reproducible from the seed. Task ``n`` draws its whole ``[T, B, ...]`` action noise
from its own generator, seeded with its noise seed, and an episode's steps after its end hold
zero actions and log-probs: a task's live steps depend only on that task, its seeds and the
policy, not on the other tasks sampled beside it (only the frozen observations of padding run
until the batch's last episode ends). So the result is the same across ``num_workers`` (the
physics is deterministic per sub-env) and when the tasks are split across Ray actors
(:mod:`metarl.rl.ray_sampler`), which draw from the same streams in the driver.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

import metarl.envs as envs
from metarl.envs.vector import VecTaskEnv, make_vec
from metarl.rl.episodes import Episodes
from metarl.rl.policies import policy_distribution_fn

#: ``act(obs [N, B, *obs_shape]) -> (actions [N, B, *act_shape], log_probs [N, B])``
ActFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Task = dict[str, Any]


class Rollout(NamedTuple):
    """What :func:`rollout` leaves: the ``[T, N * B, ...]`` buffers of :func:`collect` (before its zeroing of
    the steps after each episode's end), the sub-envs' observations after the last step (``[N * B, ...]``:
    the frozen ones of ended episodes) and that step's index ``end`` (rows after it are zeros)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    masks: torch.Tensor
    log_probs: torch.Tensor
    last: torch.Tensor
    end: int


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
    After its end an episode's entries are padding: its frozen last observation, reward 0,
    and zero actions and log-probs; zeros once every episode has ended, where the loop stops.

    Returns one :class:`Episodes` per task with ``[T, B, ...]`` fields (views of one
    ``[T, N, B, ...]`` buffer); observations and rewards are float32.
    """
    r = rollout(vec, tasks, episodes_per_task=episodes_per_task, horizon=horizon, act=act, seeds=seeds)
    return episodes_from_buffers(r.observations, r.actions, r.rewards, r.masks, r.log_probs, len(tasks))


def rollout(
    vec: VecTaskEnv,
    tasks: Sequence[Task],
    *,
    episodes_per_task: int,
    horizon: int,
    act: ActFn,
    seeds: Sequence[int],
) -> Rollout:
    """:func:`collect`'s loop: the raw buffers, the last observations and the last step (see :class:`Rollout`)."""
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
    end = horizon - 1
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
                end = t
                break
    assert actions is not None
    return Rollout(observations, actions, rewards, masks, log_probs, obs.to(observations.dtype), end)


def episodes_from_buffers(observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                          masks: torch.Tensor, log_probs: torch.Tensor, n_tasks: int) -> list[Episodes]:
    """One :class:`Episodes` per task from a rollout's ``[T, N * B, ...]`` buffers (views of them), with
    the actions and log-probs of the steps after each episode's end zeroed (the policy acted on the frozen
    episodes too)."""
    dead = masks == 0
    actions.masked_fill_(dead.view(*dead.shape, *[1] * (actions.dim() - 2)), 0)
    log_probs.masked_fill_(dead, 0)
    horizon, nb = masks.shape

    def split(x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.view(horizon, n_tasks, nb // n_tasks, *x.shape[2:]).unbind(1))

    fields = [split(x) for x in (observations, actions, rewards, masks, log_probs)]
    return [Episodes(*per_task_fields) for per_task_fields in zip(*fields, strict=True)]


def check_params(params: Mapping[str, torch.Tensor], n_tasks: int, *, per_task: bool) -> None:
    """With ``per_task``, every tensor of ``params`` must have a leading task dim of ``n_tasks``."""
    if per_task:
        for name, p in params.items():
            if p.dim() == 0 or p.shape[0] != n_tasks:
                raise ValueError(
                    f"sample: per_task params must have a leading dim of len(tasks)={n_tasks}, "
                    f"but {name!r} has shape {tuple(p.shape)}"
                )


class SeedStreams:
    """A sampler's random streams, derived from ``seed``: a ``numpy.random.Generator`` for
    per-episode reset seeds and a ``torch.Generator`` for per-task action-noise seeds.

    The local sampler and the Ray driver (:mod:`metarl.rl.ray_sampler`) draw from the same
    streams in the same way, so their results and checkpointed states are interchangeable.
    """

    def __init__(self, seed: int = 0) -> None:
        np_seq, torch_seq = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(np_seq)
        self.generator = torch.Generator().manual_seed(int(torch_seq.generate_state(1, np.uint64)[0] >> 1))

    def draw(self, n_tasks: int, episodes_per_task: int) -> tuple[list[int], list[int]]:
        """The seeds of one ``sample`` call: ``(reset [N * B], noise [N])``.

        Sub-env ``n * B + b`` (episode ``b`` of task ``n``) resets with ``reset[n * B + b]``;
        task ``n`` draws its action noise from a generator seeded with ``noise[n]``.
        """
        reset = self.rng.integers(0, 2**63 - 1, size=n_tasks * episodes_per_task).tolist()
        noise = torch.randint(0, 2**62, (n_tasks,), generator=self.generator).tolist()
        return reset, noise

    def state_dict(self) -> dict[str, Any]:
        return {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a ``"devices"`` entry of older checkpoints is ignored)."""
        self.rng.bit_generator.state = state["numpy"]
        self.generator.set_state(state["torch"])


class SeededSampler:
    """The random-stream half of a sampler (local or Ray): checkpointable streams, and
    :meth:`seeded` to sample with other streams for a while (validation and evaluation reuse the
    training sampler's workers; their episodes depend only on the seed, as a fresh sampler's)."""

    _streams: SeedStreams

    def state_dict(self) -> dict[str, Any]:
        """The state of the sampler's random streams, for checkpoints (the same for both backends:
        a run can resume on the other)."""
        return self._streams.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the random streams saved by :meth:`state_dict` (a resumed run samples as the
        uninterrupted one would)."""
        self._streams.load_state_dict(state)

    @contextlib.contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """Sample from fresh streams seeded with ``seed`` inside the block; the run's streams
        continue untouched after it."""
        saved, self._streams = self._streams, SeedStreams(seed)
        try:
            yield
        finally:
            self._streams = saved


def draw_noise(dist: Distribution, noise_seeds: Sequence[int], horizon: int) -> torch.Tensor:
    """The action noise of a whole rollout, task ``n``'s from a generator seeded with ``noise_seeds[n]``.

    ``dist`` is the policy's distribution at the first step (batch shape ``[N, B]``). Returns,
    on CPU, standard normal noise ``[T, N, B, *event]`` for ``Independent(Normal)`` and
    uniform noise ``[T, N, B]`` for ``Categorical``. Each task's ``[T, B, ...]`` block comes
    from its own generator, so a task's actions do not depend on the tasks batched with it.
    """
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        draw, shape, dtype = torch.randn, dist.base_dist.loc.shape[1:], dist.base_dist.loc.dtype
    elif isinstance(dist, Categorical):
        draw, shape, dtype = torch.rand, dist.probs.shape[1:-1], dist.probs.dtype
    else:
        raise TypeError(f"the sampler supports Independent(Normal) and Categorical policies, got {type(dist)}")
    if dist.batch_shape[0] != len(noise_seeds):
        raise ValueError(f"draw_noise: {len(noise_seeds)} noise seeds for {dist.batch_shape[0]} tasks")
    gens = [torch.Generator().manual_seed(int(s)) for s in noise_seeds]
    return torch.stack([draw((horizon, *shape), generator=g, dtype=dtype) for g in gens], dim=1)


def policy_act(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    *,
    per_task: bool,
    noise_seeds: Sequence[int],
    horizon: int,
) -> ActFn:
    """The :data:`ActFn` of one :func:`collect` call: ``policy`` with ``params`` (shared, or
    stacked ``[N, ...]`` with ``per_task``) on the params' device, under ``torch.no_grad`` by
    the caller, acting with :func:`draw_noise`'s noise for ``noise_seeds`` (step ``t`` of the
    rollout uses ``noise[t]``; the function counts its calls)."""
    device = next(iter(params.values())).device if params else torch.device("cpu")
    with torch.no_grad():
        forward = policy_distribution_fn(policy, params, per_task=per_task)
    noise: torch.Tensor | None = None
    step = 0

    def act(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal noise, step
        dist = forward(obs.to(device))
        if noise is None:  # the whole [T, N, B, ...] noise at once, now that its shape is known
            noise = draw_noise(dist, noise_seeds, horizon).to(device)
        eps = noise[step]
        a = actions_from_noise(dist, eps)
        step += 1
        return a.cpu(), log_prob_from_noise(dist, a, eps).cpu()

    return act


def actions_from_noise(dist: Distribution, noise: torch.Tensor) -> torch.Tensor:
    """One action per batch element of ``dist`` from one step of :func:`draw_noise`'s noise:
    ``loc + scale * noise`` (Gaussian) or the inverse CDF at ``noise`` (categorical)."""
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return dist.base_dist.loc + dist.base_dist.scale * noise
    cdf = dist.probs.cumsum(-1)
    return (cdf < noise.unsqueeze(-1)).sum(-1).clamp_(max=cdf.shape[-1] - 1)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_prob_from_noise(dist: Distribution, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of an action made by :func:`actions_from_noise`.

    For the Gaussian, with ``a = loc + scale * eps``, it is
    ``sum_k -eps_k^2 / 2 - log scale_k - log(2 pi) / 2``: the same value as ``dist.log_prob(a)``
    (to float rounding) without recomputing ``(a - loc) / scale``; this is on the rollout
    loop's hot path. Categorical actions use ``dist.log_prob``.
    """
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return -(0.5 * noise.square() + dist.base_dist.scale.log() + _HALF_LOG_2PI).sum(-1)
    return dist.log_prob(action)


class TaskSource:
    """``sample_tasks`` for a sampler with ``env_id`` and ``env_kwargs``: one unwrapped env, made on
    first use, draws the tasks (shared by the local and the Ray sampler)."""

    env_id: str
    env_kwargs: dict[str, Any]
    _task_env: Any = None

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks from the env's task distribution (its ``sample_tasks``), drawn with ``rng``."""
        if self._task_env is None:
            self._task_env = gymnasium.make(self.env_id, **self.env_kwargs).unwrapped
        return self._task_env.sample_tasks(n, rng)


class VecSampler(TaskSource, SeededSampler):
    """What every local sampler shares: ``sample`` rolls out a batched env of ``tasks x
    episodes_per_task`` sub-envs (``_vec_for(n_tasks)``, the subclass's) with the seeds of
    :class:`SeedStreams` and the policy's action noise, so any two samplers give the same episodes
    for the same seed when their envs step the same."""

    episodes_per_task: int
    horizon: int
    _vec: Any = None

    def _vec_for(self, n_tasks: int) -> Any:
        raise NotImplementedError

    def _setup(self, who: str, env_id: str, episodes_per_task: int, num_workers: int | None,
               env_kwargs: Mapping[str, Any] | None, seed: int) -> None:
        """The settings and random streams every local sampler holds; ``who`` names it in errors."""
        if episodes_per_task < 1:
            raise ValueError(f"{who}: episodes_per_task must be >= 1, got {episodes_per_task}")
        self.env_id = env_id
        self.episodes_per_task = int(episodes_per_task)
        self.num_workers = num_workers
        self.env_kwargs = dict(env_kwargs or {})
        self._streams = SeedStreams(seed)
        self._vec = None
        self._task_env = None

    def _set_horizon(self, who: str, registered: int | None, horizon: int | None) -> None:
        self.horizon = int(registered if horizon is None else horizon)
        if self.horizon < 1:
            raise ValueError(f"{who}: horizon must be >= 1, got {horizon}")

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
        check_params(params, len(tasks), per_task=per_task)
        vec = self._vec_for(len(tasks))
        reset_seeds, noise_seeds = self._streams.draw(len(tasks), self.episodes_per_task)
        act = policy_act(policy, params, per_task=per_task, noise_seeds=noise_seeds, horizon=self.horizon)
        return collect(
            vec, tasks, episodes_per_task=self.episodes_per_task, horizon=self.horizon, act=act, seeds=reset_seeds
        )

    def close(self) -> None:
        """Stop the envs (physics threads / processes; a later ``sample`` starts them again)."""
        if self._vec is not None:
            self._vec.close()
            self._vec = None
        if self._task_env is not None:
            self._task_env.close()
            self._task_env = None

    def __enter__(self) -> VecSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultiTaskSampler(VecSampler):
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
        latent_dim: int = 0,
    ) -> None:
        env_id = envs.builtin_id(env_id, "make_sampler")
        self._setup("make_sampler", env_id, episodes_per_task, num_workers, env_kwargs, seed)
        self.latent_dim = int(latent_dim)
        self._set_horizon("make_sampler", gymnasium.spec(env_id).max_episode_steps, horizon)

    def _vec_for(self, n_tasks: int) -> VecTaskEnv:
        nb = n_tasks * self.episodes_per_task
        if self._vec is None or self._vec.num_envs != nb:
            self.close()
            self._vec = make_vec(self.env_id, nb, num_workers=self.num_workers, env_kwargs=self.env_kwargs,
                                 latent_dim=self.latent_dim)
        return self._vec

def make_sampler(
    env_id: str,
    *,
    episodes_per_task: int,
    num_workers: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    horizon: int | None = None,
    latent_dim: int = 0,
) -> MultiTaskSampler:
    """A :class:`MultiTaskSampler` for ``env_id`` (one of ``metarl.envs.ENV_IDS``; ``metarl.envs:`` prefix allowed).

    Args:
        episodes_per_task: B, the episodes sampled per task and call.
        num_workers: physics threads (HalfCheetah) or processes (Ant); default: the cores
            this process may use. Navigation2D runs in the calling thread.
        seed: seeds the sampler's own reset-seed and action-noise streams.
        env_kwargs: passed to ``gymnasium.make`` (e.g. ``{"squared": True}``).
        horizon: episode length; default: the id's registered ``max_episode_steps``.
        latent_dim: with d > 0, each episode's first action carries a latent ``z [d]`` that its later
            observations hold (:class:`metarl.envs.vector.LatentFeedback`; ``policy.latent_dim``).
    """
    return MultiTaskSampler(
        env_id,
        episodes_per_task=episodes_per_task,
        num_workers=num_workers,
        seed=seed,
        env_kwargs=env_kwargs,
        horizon=horizon,
        latent_dim=latent_dim,
    )
