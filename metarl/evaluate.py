"""``metarl evaluate``: adaptation curves on fresh held-out tasks, with baselines, as JSON and a plot.

Output schema (DESIGN.md)::

    {"benchmark": str, "metric": "return"|"mse"|"accuracy", "n_tasks": N,
     "by_step": [{"step": k, "mean": float, "ci95": float}, ...],
     "baselines": {name: {"by_step": [...], "per_task": [...]}, ...}, ...,  # RL baselines: per_task too
     "tasks": [task] * N,  # RL: each held-out task's parameters, e.g. {"velocity": 1.3}
     "per_task": [[float] * N] * (K + 1)}

``ci95`` is 1.96 standard errors of the per-task metric. ``per_task`` is the run's metric on each
held-out task after each step, so that runs evaluated on the same tasks can be pooled (:func:`pool_runs`)
and, in RL, read against the task that scored it (``tasks``, in the same order);
where the env reports success (Meta-World), ``success`` and ``per_task_success`` give the success rate
the same way.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.checkpoint import atomic_write_bytes, load_checkpoint
from metarl.config import ConfigError, config_from_dict, with_overrides
from metarl.stats import iqm, stratified_bootstrap_ci

#: Config keys ``metarl evaluate --set`` may change: how to adapt at test time, how many points each
#: held-out sinusoid is scored on (``task.query``; the Meta-SGD protocol uses 100), and where to run
#: or find data, never what was trained.
EVAL_KEYS = frozenset({
    "inner.lr", "test_lr_decay", "test_lr_after_first", "explore_std", "sampler.backend", "sampler.num_workers",
    "sampler.address", "dataset.root", "dataset.cache_dir", "dataset.download", "task.query", "env.episodes_per_task",
})

#: Keys that change how a return is scored, not the dynamics or the policy: the locomotion envs' control
#: cost on the action clipped to the box (rllab's, so the paper's, reward) or on the raw sample
#: (Gymnasium's), and the half-cheetahs' training-only pitch cost (``pitch_cost_weight=0`` scores the
#: paper's reward). ``metarl evaluate --set`` applies them to the run and to every ``--baseline`` alike.
SCORING_KEYS = frozenset({"env.kwargs.clip_ctrl_cost", "env.kwargs.pitch_cost_weight"})


def summarize(curve: torch.Tensor) -> list[dict[str, float]]:
    """The ``by_step`` entries of a ``[K+1, N]`` curve (metric after k steps, N tasks): per step the
    mean and ``ci95`` (1.96 standard errors; 0 for one task), for every benchmark's result."""
    n = curve.shape[1]
    std = curve.std(dim=1, unbiased=True) if n > 1 else torch.zeros(curve.shape[0])
    return [
        {"step": k, "mean": float(curve[k].mean()), "ci95": float(1.96 * std[k] / n**0.5)}
        for k in range(curve.shape[0])
    ]


def evaluate(
    checkpoint: str | Path,
    *,
    n_tasks: int | None = None,
    steps: int | None = None,
    shots: int | None = None,
    seed: int = 1,
    baselines: dict[str, str] | None = None,
    pretrain_iterations: int = 10_000,
    overrides: Sequence[tuple[str, Any]] = (),
    baseline_lrs: dict[str, float] | None = None,
    task_set: str | None = None,
    random: bool = True,
) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint; returns the result dict (see module docstring).

    ``overrides`` change evaluation-time keys of the run's config only (:data:`EVAL_KEYS`, e.g.
    ``("test_lr_after_first", 0.5)`` for the paper's test-time step sizes, or where the data
    lives); the result records them under ``"overrides"``. ``baseline_lrs`` (RL): an inner lr for
    a baseline (a ``baselines`` name, or ``random``) instead of the run's; recorded per baseline.
    ``task_set`` (RL): held-out tasks from ``finn2017`` or a JSON file (:func:`metarl.rl.evaluation.load_task_set`)
    instead of ``n_tasks`` drawn with ``seed``; recorded as ``"task_set"``. ``random=False`` (RL) skips the
    randomly initialised policy's row, where only the run's own curve is wanted.
    """
    state = load_checkpoint(checkpoint)
    for key, _ in overrides:
        if key not in EVAL_KEYS | SCORING_KEYS:
            raise ConfigError(f"--set {key}: evaluation may change only {sorted(EVAL_KEYS | SCORING_KEYS)}; the "
                              "rest of the config is the trained run's")
    scoring = [(key, value) for key, value in overrides if key in SCORING_KEYS]
    _check_scoring(state["config"], scoring)
    cfg = config_from_dict(state["config"], overrides)
    _check_inner_lr(cfg, dict(overrides))
    n_tasks = n_tasks if n_tasks is not None else cfg.eval.test_tasks
    steps = steps if steps is not None else cfg.inner.test_steps
    if n_tasks <= 0:
        raise ConfigError(f"--tasks: got {n_tasks}; expected a number of tasks > 0, e.g. --tasks 40")
    if steps < 0:
        raise ConfigError(f"--steps: got {steps}; expected adaptation steps >= 0, e.g. --steps 3")
    if shots is not None and shots <= 0:
        raise ConfigError(f"--shots must be > 0, got {shots}")
    if task_set is not None and getattr(cfg, "benchmark", None) != "rl":
        raise ConfigError(f"--task-set: applies to RL runs only; this is a {cfg.benchmark} run")
    if not random and getattr(cfg, "benchmark", None) != "rl":
        raise ConfigError(f"random=False: applies to RL runs only; this is a {cfg.benchmark} run")
    _check_baseline_lrs(cfg, baseline_lrs or {}, set(baselines or {}))
    base_states = {name: load_checkpoint(path) for name, path in (baselines or {}).items()}
    for base in base_states.values():
        base["config"] = with_overrides(base["config"], scoring)  # scored as the run is
    from metarl.families import family_of

    body = family_of(cfg).evaluate(
        cfg, state["learner"], n_tasks=n_tasks, steps=steps, seed=seed, shots=shots, baselines=base_states,
        pretrain_iterations=pretrain_iterations, **({"baseline_lrs": baseline_lrs} if baseline_lrs else {}),
        **({"task_set": task_set} if task_set is not None else {}),
        **({} if random else {"random": False}),
    )
    if task_set is not None:
        n_tasks = len(body["tasks"])
    per_task = body.pop("per_task")
    per_task_success = body.pop("per_task_success", None)
    return {
        "benchmark": cfg.name,
        "metric": body.pop("metric"),
        "n_tasks": n_tasks,
        **({"task_set": task_set} if task_set is not None else {}),
        **({"overrides": dict(overrides)} if overrides else {}),
        "by_step": body.pop("by_step"),
        "baselines": body.pop("baselines"),
        "iteration": int(state["iteration"]),
        "algorithm": getattr(cfg, "algorithm", "maml"),
        "seed": seed,
        **body,  # RL: "tasks", which write_json puts with the long parts at the end
        "per_task": per_task,  # last: the long parts of the JSON
        **({} if per_task_success is None else {"per_task_success": per_task_success}),
    }


def _check_inner_lr(cfg: Any, overrides: dict[str, Any]) -> None:
    """``--set inner.lr``: the test-time step size, for runs with one fixed rate only (learned rates would
    ignore it)."""
    if "inner.lr" not in overrides:
        return
    learned = [key for key, on in (("inner.learn_lr", getattr(cfg.inner, "learn_lr", False)),
                                   ("mamlpp.lslr", getattr(getattr(cfg, "mamlpp", None), "lslr", False))) if on]
    if learned:
        raise ConfigError(f"--set inner.lr: this run learned its inner rates ({learned[0]}: true) and adapts with "
                          "them, not with inner.lr; drop --set inner.lr")


def _check_baseline_lrs(cfg: Any, lrs: dict[str, float], names: set[str]) -> None:
    """Refuse a baseline lr for a non-RL run, an unknown baseline, or a step size that is not > 0."""
    if not lrs:
        return
    if getattr(cfg, "benchmark", None) != "rl":
        raise ConfigError("--baseline-lr: applies to RL runs only (their baselines adapt by policy gradient)")
    for name, lr in lrs.items():
        if name not in names | {"random"}:
            raise ConfigError(f"--baseline-lr {name}=...: no baseline named {name!r}; name one given with "
                              f"--baseline ({', '.join(sorted(names)) or 'none'}) or random")
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"--baseline-lr {name}={lr!r}: expected a step size > 0, e.g. {name}=0.2")


def _check_scoring(config: dict[str, Any], scoring: Sequence[tuple[str, Any]]) -> None:
    """Refuse a scoring override of the wrong type (``clip_ctrl_cost``: true or false; ``pitch_cost_weight``: a
    number >= 0) or that the run's env does not take."""
    import metarl.envs  # noqa: F401  (registers the built-in envs whose defaults are looked up)
    from metarl.rl.evaluation import env_kwargs_with_defaults  # not at the top: it imports this module

    env_id = (config.get("env") or {}).get("id")
    for key, value in scoring:
        if key.endswith(".clip_ctrl_cost") and not isinstance(value, bool):
            raise ConfigError(f"--set {key}={value!r}: expected true or false")
        if key.endswith(".pitch_cost_weight") and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf")):
            raise ConfigError(f"--set {key}={value!r}: expected a number >= 0 (0 scores the paper's reward)")
        if env_id is None or key.rsplit(".", 1)[1] not in env_kwargs_with_defaults(env_id, {}):
            raise ConfigError(f"--set {key}: the run's env {env_id} has no such option; it applies to the "
                              "locomotion envs (HalfCheetah*, Ant*) only")


def _baseline_label(name: str, baseline: dict[str, Any]) -> str:
    """A baseline's row name, with its inner lr where ``--baseline-lr`` set one."""
    return f"{name} (lr {baseline['inner_lr']:g})" if "inner_lr" in baseline else name


#: How a run's row is named in tables and plots, by its config's ``algorithm``.
LABELS = {"maml": "MAML", "promp": "ProMP", "pretrain": "pretrained", "reptile": "Reptile"}


def _label(result: dict[str, Any]) -> str:
    return LABELS.get(result.get("algorithm", "maml"), str(result.get("algorithm")))


def _paired_rows(result: dict[str, Any]) -> list[tuple[str, list[dict[str, float]]]]:
    """For each baseline with per-task scores (RL): the run minus the baseline, task by task, summarised as a
    step is (mean and 95% interval of the per-task differences): tighter than comparing two means over tasks
    that differ widely in difficulty."""
    run = torch.as_tensor(result.get("per_task", []), dtype=torch.float64)
    rows = []
    for name, b in result["baselines"].items():
        base = torch.as_tensor(b.get("per_task", []), dtype=torch.float64)
        if base.numel() and base.shape == run.shape:
            rows.append((f"{_label(result)} - {name}, paired", summarize(run - base)))
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The paper's kind of table: metric (mean +/- 95% CI) after each number of steps, per model."""
    rows = [(_label(result), result["by_step"])]
    rows += [(_baseline_label(n, b), b["by_step"]) for n, b in result["baselines"].items()]
    steps = [s["step"] for s in result["by_step"]]
    head = f"{result['metric']} on {result['n_tasks']} held-out tasks ({result['benchmark']}, it {result['iteration']})"
    if "success" in result:  # Meta-World: the run's success rate by step
        rows.append(("success", result["success"]))
    rows += _paired_rows(result)
    width = max(12, *(len(name) + 2 for name, _ in rows))
    lines = [head, "steps".ljust(width) + "".join(f"{k:>18d}" for k in steps)]
    for name, by_step in rows:
        lines.append(name.ljust(width) + "".join(f"{s['mean']:>10.4g} ± {s['ci95']:<5.2g}" for s in by_step))
    return "\n".join(lines)


#: Keys whose values must agree for runs to have been evaluated on the same held-out tasks.
SAME_TASKS = ("benchmark", "metric", "n_tasks", "seed", "shots", "overrides")


def pool_runs(results: Sequence[dict[str, Any]], *, reps: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Pool the evaluations of several runs (seeds) on the same held-out tasks, per step: the IQM of the
    pooled ``[runs, tasks]`` metric with its stratified-bootstrap interval (:mod:`metarl.stats`), the mean
    of the runs' means and their min and max (the spread between runs).

    Raises :class:`ConfigError` (a ``ValueError``) naming the key where the runs differ (benchmark,
    metric, ``n_tasks``, evaluation ``seed``, shots, overrides, steps) or a result without ``per_task``.
    """
    if not results:
        raise ConfigError("pool_runs: no results to pool")
    for key in SAME_TASKS:
        values = [r.get(key) for r in results]
        if any(v != values[0] for v in values):
            raise ConfigError(f"cannot pool runs evaluated differently: {key} differs ({values}); evaluate "
                              "every run on the same held-out tasks (same benchmark, --tasks, --seed, --shots, --set)")
    tasks = [r["tasks"] for r in results if "tasks" in r]
    if any(t != tasks[0] for t in tasks):
        raise ConfigError("cannot pool: the runs were evaluated on different held-out tasks (their \"tasks\" differ); "
                          "evaluate every run of one env with the same --tasks and --seed")
    missing = [i for i, r in enumerate(results) if "per_task" not in r]
    if missing:
        raise ConfigError(f"cannot pool: result(s) {missing} have no per_task scores (evaluate them again)")
    curves = [np.asarray(r["per_task"], dtype=np.float64) for r in results]
    shapes = [c.shape for c in curves]
    if any(s != shapes[0] or len(s) != 2 or s[1] != results[0]["n_tasks"] for s in shapes):
        raise ConfigError(f"cannot pool: per_task shapes {shapes} differ (steps) or disagree with n_tasks "
                          f"{results[0]['n_tasks']}")
    scores = np.stack(curves, axis=1)  # [K+1, runs, tasks]
    run_means = scores.mean(axis=2)  # [K+1, runs]
    by_step = []
    for k, m in enumerate(scores):
        lo, hi = stratified_bootstrap_ci(m, iqm, reps=reps, seed=seed, level=level)
        by_step.append({"step": k, "iqm": iqm(m), "iqm_ci": [lo, hi], "mean": float(run_means[k].mean()),
                        "min": float(run_means[k].min()), "max": float(run_means[k].max())})
    first = results[0]
    pooled = {
        **{key: first[key] for key in SAME_TASKS if key in first},
        "n_runs": len(results),
        "iterations": [r.get("iteration") for r in results],
        "bootstrap": {"reps": reps, "seed": seed, "level": level, "strata": "tasks"},
        "by_step": by_step,
    }
    if all("per_task_success" in r for r in results):  # Meta-World: the mean success rate, as papers give it
        success = np.stack([np.asarray(r["per_task_success"], dtype=np.float64) for r in results], axis=1)
        pooled["success_by_step"] = []
        for k, m in enumerate(success):
            lo, hi = stratified_bootstrap_ci(m, _mean, reps=reps, seed=seed, level=level)
            run_means = m.mean(axis=1)
            pooled["success_by_step"].append({"step": k, "mean": float(m.mean()), "ci": [lo, hi],
                                              "min": float(run_means.min()), "max": float(run_means.max())})
    return pooled


def _mean(m: np.ndarray) -> float:
    return float(m.mean())


def format_pooled(pooled: dict[str, Any]) -> str:
    """The pooled table of :func:`pool_runs`: per step the IQM with its bootstrap interval, the mean of
    the run means and their range."""
    level = round(100 * pooled["bootstrap"]["level"])
    head = (f"{pooled['metric']} on {pooled['n_tasks']} held-out tasks ({pooled['benchmark']}), pooled over "
            f"{pooled['n_runs']} runs: IQM [{level}% stratified-bootstrap CI], mean of run means [min, max]")
    lines = [head, f"{'step':>4}  {'IQM':>10}  {f'{level}% CI':<23}  {'mean':>10}  run means"]
    for s in pooled["by_step"]:
        lo, hi = s["iqm_ci"]
        lines.append(f"{s['step']:>4d}  {s['iqm']:>10.4g}  {f'[{lo:.4g}, {hi:.4g}]':<23}  {s['mean']:>10.4g}  "
                     f"[{s['min']:.4g}, {s['max']:.4g}]")
    if "success_by_step" in pooled:
        lines.append(f"success rate: mean over runs and tasks [{level}% stratified-bootstrap CI], run means [min, max]")
        for s in pooled["success_by_step"]:
            lo, hi = s["ci"]
            lines.append(f"{s['step']:>4d}  {s['mean']:>10.4g}  {f'[{lo:.4g}, {hi:.4g}]':<23}  "
                         f"[{s['min']:.4g}, {s['max']:.4g}]")
    return "\n".join(lines)


#: Keys whose rows are written one per line (600 tasks x 11 steps would otherwise take 6,600 lines).
_ROWS = ("tasks", "per_task", "per_task_success")


def _dumps(value: Any, depth: int = 0) -> str:
    """``json.dumps(value, indent=2)``, except that the lists under :data:`_ROWS` keys, at any depth (a pooled
    result's ``per_run`` holds whole results), put one row per line and come last in their object."""
    pad = "  " * depth
    if isinstance(value, dict) and value:
        keys = [k for k in value if k not in _ROWS] + [k for k in _ROWS if k in value]
        items = []
        for key in keys:
            v = value[key]
            if key in _ROWS and isinstance(v, (list, tuple)) and v:
                rows = f",\n{pad}    ".join(json.dumps(row) for row in v)
                text = f"[\n{pad}    {rows}\n{pad}  ]"
            else:
                text = _dumps(v, depth + 1)
            name = key if isinstance(key, str) else json.dumps(key)  # JSON's own names for 1, True, None keys
            items.append(f"{pad}  {json.dumps(name)}: {text}")
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)) and value:
        return "[\n" + ",\n".join(f"{pad}  {_dumps(v, depth + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """The result as indented JSON, ``tasks`` one line per task and ``per_task`` one line per step."""
    atomic_write_bytes(path, (_dumps(result) + "\n").encode())


#: Which way is better for each metric, said on the plots' y axis.
BETTER = {"return": "higher", "accuracy": "higher", "mse": "lower"}


def axis_labels(ax: Any, metric: str) -> None:
    """Integer gradient-step ticks on x, the metric and which way is better on y."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(f"{metric} ({BETTER[metric]} is better)" if metric in BETTER else metric)


def plot(result: dict[str, Any], path: str | Path) -> None:
    """The adaptation curve of MAML and each baseline, with 95% CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = [(_label(result), result["by_step"])]
    rows += [(_baseline_label(n, b), b["by_step"]) for n, b in result["baselines"].items()]
    for name, by_step in rows:
        k = [s["step"] for s in by_step]
        m = [s["mean"] for s in by_step]
        c = [s["ci95"] for s in by_step]
        ax.plot(k, m, marker="o", ms=3, label=name)
        ax.fill_between(k, [a - b for a, b in zip(m, c)], [a + b for a, b in zip(m, c)], alpha=0.2)
    axis_labels(ax, result["metric"])
    ax.set_title(f"{result['benchmark']}: {result['n_tasks']} held-out tasks")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def combine_runs(by_steps: Sequence[Sequence[dict[str, float]]]) -> list[dict[str, float]]:
    """One ``by_step`` curve from several runs' (seeds') ``by_step`` curves on the same held-out tasks: per
    step the mean of their means, and ``ci95`` that of the mean of independent estimates
    (``sqrt(sum ci_i^2) / n``). The runs share their tasks, so this treats the seeds' task samples as
    independent: an approximation, good enough for a figure (``pool_runs`` gives the exact interval)."""
    n = len(by_steps)
    if n == 0 or any(len(b) != len(by_steps[0]) for b in by_steps):
        raise ValueError(f"combine_runs: need curves of equal length, got {[len(b) for b in by_steps]}")
    return [{"step": rows[0]["step"], "mean": float(np.mean([r["mean"] for r in rows])),
             "ci95": float(np.sqrt(sum(r["ci95"] ** 2 for r in rows)) / n)} for rows in zip(*by_steps, strict=True)]


#: The paper's own Figure 5 numbers (``experiments/paper_figure5_data.py`` from the result files in Finn's
#: ``maml_rl`` repository): per benchmark and policy, mean, 95% interval, IQM and the per-task returns per step.
PAPER_FIGURE5 = Path(__file__).parent / "rl" / "finn2017_figure5.json"


@functools.cache
def _paper_benchmarks() -> dict[str, Any]:
    """:data:`PAPER_FIGURE5`'s benchmarks, read once per process."""
    return json.loads(PAPER_FIGURE5.read_text())["benchmarks"]


def paper_reference(benchmark: str) -> dict[str, Any] | None:
    """The paper's curves for a run's benchmark name (``halfcheetah_vel``, or a variant such as
    ``halfcheetah_vel_promp``: the longest known name it starts with), or None where the paper has none
    (AntGoal, the supervised benchmarks). Keys: ``protocol`` (how the paper measured them) and one
    ``{"n_tasks", "by_step", "per_task"}`` per policy (``maml``, ``pretrained``, ``random``, ``oracle``);
    ``per_task[step][task]`` in the order of ``--task-set finn2017``."""
    known = _paper_benchmarks()
    names = [k for k in known if benchmark == k or benchmark.startswith(k + "_")]
    return known[max(names, key=len)] if names else None


def plot_panels(results: Sequence[dict[str, Any]], path: str | Path, *, paper: bool = False) -> None:
    """The paper's Figure 5 layout: one panel per benchmark, the return after 0..K steps of MAML and each
    baseline (random, pretrained, oracle where evaluated), mean and 95% interval over tasks and over the
    runs (seeds) of that benchmark (:func:`combine_runs`). The oracle is drawn flat at its return before
    adapting, as the paper draws it; a baseline's ``--baseline-lr`` step size is shown in its label.
    ``paper=True`` adds the paper's own MAML and pretrained curves (:func:`paper_reference`), dotted, in the
    colours of ours, where the paper has the benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["benchmark"], []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    every = sorted({n for r in results for n in r["baselines"]})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {n: palette[(i + 1) % len(palette)] for i, n in enumerate(every)}  # one colour per name in every panel
    for ax, (bench, runs) in zip(axes[0], groups.items(), strict=True):
        names = [_label(runs[0])] + sorted({n for r in runs for n in r["baselines"]})
        for name in names:
            curves = [r["by_step"] if name == _label(runs[0]) else r["baselines"][name]["by_step"]
                      for r in runs if name == _label(runs[0]) or name in r["baselines"]]
            rows = combine_runs(curves)
            label = name
            lrs = {r["baselines"][name].get("inner_lr") for r in runs if name in r["baselines"]} - {None}
            if len(lrs) == 1:
                label = f"{name} (lr {lrs.pop():g})"
            if name == "oracle":  # as in the paper: its return before adapting (it is given the task)
                rows, label = [dict(rows[0], step=s["step"]) for s in runs[0]["by_step"]], "oracle (not adapted)"
            k, m, c = ([s[key] for s in rows] for key in ("step", "mean", "ci95"))
            col = color.get(name, palette[0])
            ax.plot(k, m, marker="o" if name != "oracle" else None, ms=3, label=label, color=col,
                    linestyle="--" if name == "oracle" else "-")
            ax.fill_between(k, [a - b for a, b in zip(m, c)], [a + b for a, b in zip(m, c)], alpha=0.2, color=col)
        ref = paper_reference(bench) if paper else None
        for name in ("maml", "pretrained") if ref else ():
            if name in ref:
                k, m = ([s[key] for s in ref[name]["by_step"]] for key in ("step", "mean"))
                ax.plot(k, m, marker="x", ms=4, linestyle=":", label=f"paper: {'MAML' if name == 'maml' else name}",
                        color=palette[0] if name == "maml" else color.get(name, "grey"))
        axis_labels(ax, runs[0]["metric"])
        seeds = f"{len(runs)} runs" if len(runs) > 1 else "1 run"
        n = runs[0]["n_tasks"]
        tasks = f"the paper's {n} tasks" if runs[0].get("task_set") == "finn2017" else f"{n} held-out tasks"
        ax.set_title(f"{bench}\n{tasks}, {seeds}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
