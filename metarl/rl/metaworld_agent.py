"""Meta-World's own meta-learning evaluation of a metarl run, so that its numbers compare with papers'.

``metaworld.evaluation.metalearning_evaluation`` runs unchanged on Meta-World's held-out task sets
(``Meta-World/ML1-test``, ``ML10-test``, ``ML45-test``): for each of ``num_evals`` rounds it gives
every test env a task, lets the agent sample ``adaptation_episodes`` episodes and adapt, repeated
``adaptation_steps`` times, then counts successes over ``evaluation_episodes`` episodes that end at
the first success. :class:`MAMLAgent` is its ``MetaLearningAgent`` on a loaded run: the run's policy
and the run's own inner loop (:func:`metarl.rl.adapt.adapt_on_episodes`, each step on all episodes
sampled since ``init``, as :func:`metarl.rl.evaluation.adaptation_returns` adapts).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.config import ConfigError
from metarl.maml import Params
from metarl.rl.adapt import adapt_on_episodes
from metarl.rl.build import advantage_estimator, inner_loop, make_env, test_step_sizes
from metarl.rl.episodes import Episodes
from metarl.rl.policies import policy_distribution_fn
from metarl.rl.sampler import actions_from_noise, log_prob_from_noise

__all__ = ["MAMLAgent", "official_evaluation", "official_settings", "pool_official", "same_official_evaluation",
           "timesteps_to_episodes"]


def timesteps_to_episodes(steps: list[Any], episodes: int) -> Episodes:
    """The first ``episodes`` episodes of each env from Meta-World's ``Timestep`` records (one per vector
    step: ``observation [E, d]``, ``action [E, a]``, ``reward [E]``, ``terminated [E]``, ``truncated [E]``,
    ``aux_policy_outputs["log_prob"] [E]``) as stacked ``Episodes [E, T, B, ...]``, T the longest episode.

    The vector env resets an env in the step its episode ends (Meta-World's same-step autoreset), so
    env ``e``'s episode ``b`` is the run of its steps between two ends.
    """
    obs = np.stack([s.observation for s in steps], 1)  # [E, L, d]
    act = np.stack([s.action for s in steps], 1)
    rew = np.stack([s.reward for s in steps], 1)
    logp = np.stack([s.aux_policy_outputs["log_prob"] for s in steps], 1)
    done = np.stack([np.logical_or(s.terminated, s.truncated) for s in steps], 1)
    n_env = obs.shape[0]
    bounds = []  # per env: the (start, stop) of its first `episodes` episodes
    for e in range(n_env):
        ends = np.flatnonzero(done[e])[:episodes] + 1
        if len(ends) < episodes:
            raise ValueError(f"timesteps_to_episodes: env {e} finished {len(ends)} episodes, need {episodes}")
        bounds.append(list(zip([0, *ends[:-1]], ends, strict=True)))
    horizon = max(stop - start for b in bounds for start, stop in b)
    shape = (n_env, horizon, episodes)
    out = {"observations": torch.zeros(*shape, obs.shape[-1]), "actions": torch.zeros(*shape, act.shape[-1]),
           "rewards": torch.zeros(shape), "masks": torch.zeros(shape), "log_probs": torch.zeros(shape)}
    for e, b in enumerate(bounds):
        for k, (start, stop) in enumerate(b):
            t = stop - start
            out["observations"][e, :t, k] = torch.from_numpy(obs[e, start:stop]).float()
            out["actions"][e, :t, k] = torch.from_numpy(act[e, start:stop]).float()
            out["rewards"][e, :t, k] = torch.from_numpy(rew[e, start:stop]).float()
            out["log_probs"][e, :t, k] = torch.from_numpy(logp[e, start:stop]).float()
            out["masks"][e, :t, k] = 1.0
    return Episodes(**out)


class MAMLAgent:
    """Meta-World's ``MetaLearningAgent`` protocol (``metaworld.evaluation``) for a loaded run
    (:func:`metarl.load`), one task per env of the vector env.

    ``init`` starts from the meta-learned parameters; ``adapt_action`` samples from the policy (of the
    parameters adapted so far) and records its log-probs; ``step`` keeps the transitions; ``adapt``
    takes one step of the run's inner loop on every batch gathered since ``init``; ``eval_action`` acts
    with the adapted parameters, sampling as the run's own evaluation does (``deterministic``: the
    mean action). The policy is feed-forward, so ``reset`` has nothing to do.

    Args:
        run: a loaded RL run (``metarl.load(path)``).
        adaptation_episodes: the episodes per env that ``adapt`` uses (Meta-World's
            ``adaptation_episodes``).
        seed: seeds the action noise.
        on_init: called at the start of each :meth:`init` (the evaluation's rounds; progress).
    """

    def __init__(self, run: Any, *, adaptation_episodes: int, seed: int = 0, deterministic: bool = False,
                 on_init: Callable[[], None] | None = None) -> None:
        self.run = run
        self.adaptation_episodes = int(adaptation_episodes)
        self.deterministic = deterministic
        self._theta: Params = dict(run.params)
        self._generator = torch.Generator().manual_seed(seed)
        self._on_init = on_init
        self._start()

    def init(self) -> None:
        """New tasks: back to the meta-learned parameters, no episodes."""
        if self._on_init is not None:
            self._on_init()
        self._start()

    def _start(self) -> None:
        self._params: Params = self._theta
        self._per_task = False
        self._batches: list[Episodes] = []
        self._steps: list[Any] = []
        self._forward = policy_distribution_fn(self.run.module, self._params, per_task=False)

    def _dist(self, observations: np.ndarray) -> Any:
        obs = torch.as_tensor(observations, dtype=torch.float32).unsqueeze(1)  # [E, 1, d]: one episode per env
        with torch.no_grad():
            return self._forward(obs)

    def _sample(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = self._dist(observations)
        with torch.no_grad():
            noise = torch.randn(dist.base_dist.loc.shape, generator=self._generator)
            a = actions_from_noise(dist, noise)
            logp = log_prob_from_noise(dist, a, noise)
        return a[:, 0].numpy().astype(np.float64), logp[:, 0].numpy()

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        actions, logp = self._sample(observations)
        return actions, {"log_prob": logp}

    def step(self, timestep: Any) -> None:
        self._steps.append(timestep)

    def adapt(self) -> None:
        """One step of the run's inner loop, on all episodes gathered since :meth:`init`."""
        cfg = self.run.config
        self._batches.append(timesteps_to_episodes(self._steps, self.adaptation_episodes))
        self._steps = []
        self._params = adapt_on_episodes(self.run.module, self._theta, self._batches, inner_loop(cfg),
                                         advantage_estimator(cfg), **test_step_sizes(cfg))
        self._per_task = True
        self._forward = policy_distribution_fn(self.run.module, self._params, per_task=True)

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        if self.deterministic:
            return self._dist(observations).base_dist.loc[:, 0].numpy().astype(np.float64)
        return self._sample(observations)[0]

    def reset(self, env_mask: np.ndarray) -> None:
        """Nothing to reset: the policy keeps no state between steps."""


def official_evaluation(
    run: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """``metaworld.evaluation.metalearning_evaluation`` of ``run`` (a loaded Meta-World run) on its
    benchmark's test tasks; returns ``{"benchmark", "success_rate", "return", "success_by_env", "settings"}``.

    ``settings`` are :func:`official_settings`'s keywords (``num_evals``, ``adaptation_steps``,
    ``adaptation_episodes``, ``evaluation_episodes``, ``meta_batch_size``, ``total_tasks_per_cls``,
    ``max_episode_steps``, ``seed``, ``deterministic``, ``vector_strategy``).
    Defaults: Meta-World's (``num_evals=10``; 20 envs in the vector env, ``meta_batch_size``, shared evenly
    among the test env classes; the first 40 test goals of each class, ``total_tasks_per_cls``, dealt out
    among its envs), ``adaptation_steps`` the run's ``inner.test_steps``,
    ``adaptation_episodes`` its ``env.episodes_per_task``, episodes of the env's own length (500), and
    ``seed`` the run's ``benchmark_seed``: Meta-World's held-out goals of the task sets the run
    trained on. ``max_episode_steps`` shortens episodes (for tests only: papers use 500).
    ``progress(done, num_evals)`` is called as each round begins (the rounds done before it).
    ``vector_strategy``: Meta-World's vector env, ``"sync"`` (all envs in this process, Meta-World's default)
    or ``"async"`` (one process per env); both give the same numbers (tested): the envs' transitions and the
    agent's action noise do not depend on where the envs step. On 2 cores async was no faster (one ML1-reach
    round: 117 s async, 111 s sync); with many cores it may be (not measured).
    """
    from metaworld.evaluation import metalearning_evaluation

    import metarl.envs.metaworld  # noqa: F401  (Meta-World's benchmarks)

    vector_strategy = settings.get("vector_strategy", "sync")
    if vector_strategy not in ("async", "sync"):
        raise ValueError(f"official_evaluation: vector_strategy must be 'async' or 'sync', got {vector_strategy!r}")
    spec = official_settings(run, **settings)
    settings = spec["settings"]
    benchmark, seed = spec["env_name"], settings["seed"]
    num_evals, meta_batch_size = settings["num_evals"], settings["meta_batch_size"]
    adaptation_steps, adaptation_episodes = settings["adaptation_steps"], settings["adaptation_episodes"]
    evaluation_episodes, max_episode_steps = settings["evaluation_episodes"], settings["max_episode_steps"]
    total_tasks_per_cls, deterministic = settings["total_tasks_per_cls"], settings["deterministic"]
    ml1 = benchmark not in metarl.envs.metaworld.BENCHMARKS
    extra = {"env_name": benchmark} if ml1 else {}
    if max_episode_steps is not None:
        extra["max_episode_steps"] = max_episode_steps
    envs = gym.make_vec(f"Meta-World/{'ML1' if ml1 else benchmark}-test", seed=seed, meta_batch_size=meta_batch_size,
                        total_tasks_per_cls=total_tasks_per_cls, vector_strategy=vector_strategy, **extra)
    rounds = itertools.count()  # the evaluation calls agent.init once per round
    agent = MAMLAgent(run, adaptation_episodes=adaptation_episodes, seed=seed, deterministic=deterministic,
                      on_init=None if progress is None else lambda: progress(next(rounds), num_evals))
    try:
        success, mean_return, by_env = metalearning_evaluation(
            agent, envs, num_evals=num_evals, adaptation_steps=adaptation_steps,
            adaptation_episodes=adaptation_episodes, evaluation_episodes=evaluation_episodes,
        )
    finally:
        envs.close()
    return {"benchmark": spec["benchmark"], "success_rate": float(success), "return": float(mean_return),
            "success_by_env": {k: float(v) for k, v in by_env.items()}, "settings": settings}


def official_settings(
    run: Any,
    *,
    num_evals: int = 10,
    adaptation_steps: int | None = None,
    adaptation_episodes: int | None = None,
    evaluation_episodes: int = 3,
    meta_batch_size: int = 20,
    total_tasks_per_cls: int | None = 40,
    max_episode_steps: int | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    vector_strategy: str = "sync",
) -> dict[str, Any]:
    """What :func:`official_evaluation` with the same arguments would run and record, without running it:
    ``{"benchmark", "env_name", "settings"}`` with the run's defaults filled in (its ``inner.test_steps``,
    ``env.episodes_per_task``, ``benchmark_seed`` and iteration). Lets a caller tell whether a stored
    result (its ``benchmark`` and ``settings``) is the one these arguments would give.
    """
    import metarl.envs.metaworld  # noqa: F401  (the run's env: its benchmark and seed)

    cfg = run.config
    env = make_env(cfg)
    try:
        base = env.unwrapped
        if not isinstance(base, metarl.envs.metaworld.MetaWorldTaskEnv):
            raise ConfigError(f"Meta-World's official evaluation: the run's env {cfg.env.id} is not a Meta-World "
                              "task set (metarl.envs.metaworld)")
        benchmark, seed = base.benchmark, base.benchmark_seed if seed is None else seed
    finally:
        env.close()
    ml1 = benchmark not in metarl.envs.metaworld.BENCHMARKS
    return {
        "benchmark": f"ML1-{benchmark}" if ml1 else benchmark,
        "env_name": benchmark,
        "settings": {"num_evals": num_evals,
                     "adaptation_steps": cfg.inner.test_steps if adaptation_steps is None else adaptation_steps,
                     "adaptation_episodes": (cfg.env.episodes_per_task if adaptation_episodes is None
                                             else adaptation_episodes),
                     "evaluation_episodes": evaluation_episodes, "meta_batch_size": meta_batch_size,
                     "total_tasks_per_cls": total_tasks_per_cls, "max_episode_steps": max_episode_steps,
                     "seed": seed, "deterministic": deterministic, "vector_strategy": vector_strategy,
                     "iteration": run.iteration},
    }


#: Settings that do not change an official evaluation's numbers (``vector_strategy``: tested) or that
#: differ between the runs being pooled (``iteration``).
_POOL_FREE = ("vector_strategy", "iteration")


def same_official_evaluation(stored: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether ``stored`` (an :func:`official_evaluation` result) is what ``spec`` (:func:`official_settings`)
    would give again: same benchmark, same run iteration, same settings (``vector_strategy`` aside)."""
    a, b = stored.get("settings", {}), spec["settings"]
    return (stored.get("benchmark") == spec["benchmark"] and a.get("iteration") == b["iteration"]
            and {k: v for k, v in a.items() if k != "vector_strategy"}
            == {k: v for k, v in b.items() if k != "vector_strategy"})


def pool_official(results: list[dict[str, Any]], *, reps: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Any]:
    """Pool the official evaluations of several runs (seeds) of one benchmark: the mean success rate over
    runs, their range, and a percentile bootstrap interval.

    Meta-World's evaluation counts ``num_evals * evaluation_episodes`` episodes per test env, so each
    run's per-env success rate is a count ``k`` of ``n`` episodes. A replicate resamples the ``n`` counted
    episodes of each run and env with replacement (strata: run x env; drawn as ``Binomial(n, k / n)``),
    and takes the same statistic as Meta-World: the mean over envs, then over runs. The interval covers
    the episodes' sampling noise and the spread of the given runs, not the evaluation's choice of which
    episodes to count (the first to end in each round).

    Raises :class:`ConfigError` naming what differs between the runs' evaluations.
    """
    if not results:
        raise ConfigError("pool_official: no results to pool")
    first = results[0]
    for r in results[1:]:
        if r["benchmark"] != first["benchmark"]:
            raise ConfigError(f"cannot pool official evaluations of different benchmarks: {first['benchmark']} "
                              f"and {r['benchmark']}")
        differ = sorted(k for k in {*first["settings"], *r["settings"]} - set(_POOL_FREE)
                        if first["settings"].get(k) != r["settings"].get(k))
        if differ or set(r["success_by_env"]) != set(first["success_by_env"]):
            what = ", ".join(f"{k} ({first['settings'].get(k)} vs {r['settings'].get(k)})" for k in differ)
            raise ConfigError(f"cannot pool official evaluations run differently: {what or 'test envs differ'}; "
                              "evaluate every run with the same settings")
    envs = sorted(first["success_by_env"])
    n = first["settings"]["num_evals"] * first["settings"]["evaluation_episodes"]
    rates = np.array([[r["success_by_env"][e] for e in envs] for r in results], dtype=np.float64)  # [runs, envs]
    counts = np.rint(rates * n)
    if np.abs(counts / n - rates).max() > 1e-9:
        raise ConfigError(f"cannot pool: the success rates {rates.tolist()} are not counts of {n} episodes "
                          "(num_evals x evaluation_episodes); were the results edited?")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, counts / n, size=(reps, *counts.shape)) / n  # [reps, runs, envs]
    lo, hi = np.quantile(draws.mean(axis=2).mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    run_means = rates.mean(axis=1)
    return {
        "benchmark": first["benchmark"],
        "n_runs": len(results),
        "iterations": [r["settings"].get("iteration") for r in results],
        "success_rate": float(run_means.mean()),
        "ci": [float(lo), float(hi)],
        "min": float(run_means.min()),
        "max": float(run_means.max()),
        "success_rates": run_means.tolist(),
        "success_by_env": {e: float(rates[:, i].mean()) for i, e in enumerate(envs)},
        "return": float(np.mean([r["return"] for r in results])),
        "settings": {k: v for k, v in first["settings"].items() if k not in _POOL_FREE},
        "bootstrap": {"reps": reps, "seed": seed, "level": level, "strata": "run x env",
                      "episodes_per_env": n},
    }
