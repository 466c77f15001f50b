"""``metarl evaluate``: adaptation curves on fresh held-out tasks, with baselines, as JSON and a plot.

Output schema (DESIGN.md)::

    {"benchmark": str, "metric": "return"|"mse"|"accuracy", "n_tasks": N,
     "by_step": [{"step": k, "mean": float, "ci95": float}, ...],
     "baselines": {name: {"by_step": [...]}, ...}, ...}

``ci95`` is 1.96 standard errors of the per-task metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metarl.checkpoint import atomic_write_bytes, load_checkpoint
from metarl.config import ConfigError, config_from_dict


def evaluate(
    checkpoint: str | Path,
    *,
    n_tasks: int | None = None,
    steps: int | None = None,
    shots: int | None = None,
    seed: int = 1,
    baselines: dict[str, str] | None = None,
    pretrain_iterations: int = 10_000,
) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint; returns the result dict (see module docstring)."""
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    n_tasks = n_tasks if n_tasks is not None else cfg.eval.test_tasks
    steps = steps if steps is not None else cfg.inner.test_steps
    if n_tasks <= 0 or steps < 0:
        raise ConfigError(f"--tasks must be > 0 (got {n_tasks}) and --steps >= 0 (got {steps})")
    if shots is not None and shots <= 0:
        raise ConfigError(f"--shots must be > 0, got {shots}")
    base_states = {name: load_checkpoint(path) for name, path in (baselines or {}).items()}
    if cfg.benchmark in ("sinusoid", "classification"):
        from metarl.fewshot.build import evaluate_supervised

        if cfg.benchmark == "classification" and shots is not None:
            raise ConfigError("--shots applies to sinusoid runs; for classification use a config with dataset.shots")
        body = evaluate_supervised(
            cfg, state["learner"], n_tasks=n_tasks, steps=steps, seed=seed, shots=shots,
            baselines=base_states, pretrain_iterations=pretrain_iterations,
        )
    else:
        from metarl.rl.build import evaluate_rl

        body = evaluate_rl(cfg, state["learner"], n_tasks=n_tasks, steps=steps, seed=seed, baselines=base_states)
    return {
        "benchmark": cfg.name,
        "metric": body.pop("metric"),
        "n_tasks": n_tasks,
        "by_step": body.pop("by_step"),
        "baselines": body.pop("baselines"),
        "iteration": int(state["iteration"]),
        "seed": seed,
        **body,
    }


def format_table(result: dict[str, Any]) -> str:
    """The paper's kind of table: metric (mean +/- 95% CI) after each number of steps, per model."""
    rows = [("MAML", result["by_step"])] + [(n, b["by_step"]) for n, b in result["baselines"].items()]
    steps = [s["step"] for s in result["by_step"]]
    head = f"{result['metric']} on {result['n_tasks']} held-out tasks ({result['benchmark']}, it {result['iteration']})"
    lines = [head, "steps".ljust(12) + "".join(f"{k:>18d}" for k in steps)]
    for name, by_step in rows:
        lines.append(name.ljust(12) + "".join(f"{s['mean']:>10.4g} ± {s['ci95']:<5.2g}" for s in by_step))
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())


def plot(result: dict[str, Any], path: str | Path) -> None:
    """The adaptation curve of MAML and each baseline, with 95% CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = [("MAML", result["by_step"])] + [(n, b["by_step"]) for n, b in result["baselines"].items()]
    for name, by_step in rows:
        k = [s["step"] for s in by_step]
        m = [s["mean"] for s in by_step]
        c = [s["ci95"] for s in by_step]
        ax.plot(k, m, marker="o", ms=3, label=name)
        ax.fill_between(k, [a - b for a, b in zip(m, c)], [a + b for a, b in zip(m, c)], alpha=0.2)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(result["metric"])
    ax.set_title(f"{result['benchmark']}: {result['n_tasks']} held-out tasks")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
