"""Aggregate scores of several runs the way Agarwal et al. 2021 (arXiv 2108.13264, "Deep RL at the edge
of the statistical precipice") recommend: the interquartile mean (IQM) of the pooled ``[runs, tasks]``
scores, with a stratified-bootstrap percentile interval.

Why: with a handful of seeds the mean over runs is at the mercy of one outlier run and its spread says
little; the IQM discards the best and worst quarter of all run-task scores (robust like the median,
yet it uses half the data, so its interval is tighter), and resampling runs *within each task*
(tasks are strata: they are the same held-out tasks for every run) gives an interval for the
uncertainty that comes from the finite number of runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries of ``scores`` (any shape): the mean of the sorted scores after
    dropping ``floor(n / 4)`` from each end.

    This is exactly ``scipy.stats.trim_mean(scores, 0.25, axis=None)``, which rliable uses: no fractional
    weights, so when ``n`` is not divisible by 4 slightly more than the middle half is kept (n = 5: the
    middle 3; n = 1..3: all of them).
    """
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=None)
    if x.size == 0:
        raise ValueError("iqm of no scores")
    cut = x.size // 4
    return float(x[cut:x.size - cut].mean())


def stratified_bootstrap_ci(
    scores: np.ndarray,
    stat: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over a ``[runs, tasks]`` matrix, tasks as strata.

    Each replicate draws, for every task column independently, ``runs`` rows with replacement (so each
    task keeps one score per run, and a task is never replaced by another), and applies ``stat`` to the
    resampled ``[runs, tasks]`` matrix. Returns the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the ``reps`` replicates (Agarwal et al. 2021, sec. 4 and appendix A.1).

    The resampling of one replicate is one array operation over all runs and tasks; the loop is over
    replicates only, so ``stat`` may be any function of a matrix and memory stays ``O(runs * tasks)``.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"stratified_bootstrap_ci needs a non-empty [runs, tasks] matrix, got shape {x.shape}")
    if reps < 1 or not 0 < level < 1:
        raise ValueError(f"reps must be >= 1 (got {reps}) and level in (0, 1) (got {level})")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    cols = np.arange(tasks)
    values = np.empty(reps)
    for r in range(reps):
        rows = rng.integers(0, runs, size=(runs, tasks))  # for each task column its own draw of runs
        values[r] = stat(x[rows, cols])
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
