"""How far an RL score moves with the evaluation's own sampling: each run scored as `metarl evaluate` scores
it, once per sampling seed, on the same held-out tasks. One evaluation samples each task's episodes once
(the paper's protocol), so a run's score carries that draw's noise; this script measures it, per run and
for the mean of the runs, so that a gap between seeds or to a target can be told from the draw.

Usage: python experiments/sampling_seeds.py RUN [RUN ...] --seeds 1001-1010 [--task-set finn2017|FILE.json]
                                            [--tasks N] [--steps 1] [--set KEY=VALUE ...] [--out FILE.json]

With ``--task-set`` the tasks stay fixed and only the sampling changes with the seed (at seed S a run's
returns are exactly those of ``metarl evaluate RUN --task-set ... --seed S``); with ``--tasks N`` the tasks
are drawn with each seed too, as ``--tasks N --seed S`` draws them. ``--set`` takes evaluate's keys (e.g.
``test_lr_after_first=0.5``). The randomly initialised policy is not scored. Prints, per step, each run's
mean over the seeds with its standard deviation, and the mean of the runs: its value at each seed, their
mean, standard deviation and range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from metarl.checkpoint import CheckpointError
from metarl.config import ConfigError, parse_overrides
from metarl.evaluate import evaluate


def parse_seeds(text: str) -> list[int]:
    """``1001-1010`` (inclusive) or ``1,5,9``."""
    try:
        if "-" in text.strip("-"):
            low, high = (int(x) for x in text.split("-", 1))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected a range such as 1001-1010 or numbers such as 1,2,3") from None
    if len(seeds) < 2:
        raise ValueError(f"--seeds {text!r}: give at least two seeds, e.g. 1001-1010")
    return seeds


def spread(means: np.ndarray) -> dict[str, list]:
    """``means [seeds, runs, steps]`` -> per step: each run's mean and standard deviation over the seeds,
    the mean of the runs at each seed, and that mean's mean, standard deviation and range over the seeds."""
    of_runs = means.mean(1)  # [seeds, steps]
    return {"run_mean": means.mean(0).T.tolist(), "run_std": means.std(0, ddof=1).T.tolist(),
            "mean_of_runs": of_runs.T.tolist(), "mean_of_runs_mean": of_runs.mean(0).tolist(),
            "mean_of_runs_std": of_runs.std(0, ddof=1).tolist(), "mean_of_runs_min": of_runs.min(0).tolist(),
            "mean_of_runs_max": of_runs.max(0).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--seeds", required=True, help="sampling seeds: 1001-1010 or 1,2,3")
    parser.add_argument("--task-set", help="finn2017 or a JSON file of tasks (fixed across seeds)")
    parser.add_argument("--tasks", type=int, help="held-out tasks drawn with each seed (without --task-set)")
    parser.add_argument("--steps", type=int, default=1, help="adaptation steps (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an evaluation-time key")
    parser.add_argument("--out", type=Path, help="write every run's curve at every seed and the summary as JSON")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        overrides = parse_overrides(args.set)
        curves = []  # [seeds][runs] -> by-step means
        for seed in seeds:
            row = []
            for run in args.runs:
                result = evaluate(run, n_tasks=args.tasks, steps=args.steps, seed=seed, overrides=overrides,
                                  task_set=args.task_set, random=False)
                row.append([step["mean"] for step in result["by_step"]])
            curves.append(row)
            print(f"seed {seed}: " + "  ".join(f"{c[-1]:8.2f}" for c in row)
                  + f"   mean of runs {np.mean([c[-1] for c in row]):8.2f} (after {args.steps} steps)", flush=True)
    except (ValueError, ConfigError, CheckpointError) as err:
        print(f"sampling_seeds: {err}", file=sys.stderr)
        return 2
    summary = spread(np.asarray(curves, dtype=float))
    for k in range(args.steps + 1):
        runs = "  ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(summary["run_mean"][k], summary["run_std"][k],
                                                               strict=True))
        print(f"step {k}: runs (mean ± sd over {len(seeds)} seeds) {runs}; mean of runs "
              f"{summary['mean_of_runs_mean'][k]:.2f}, sd {summary['mean_of_runs_std'][k]:.2f}, range "
              f"[{summary['mean_of_runs_min'][k]:.2f}, {summary['mean_of_runs_max'][k]:.2f}]")
    if args.out:
        args.out.write_text(json.dumps({"runs": args.runs, "seeds": seeds, "task_set": args.task_set,
                                        "tasks": args.tasks, "steps": args.steps, "overrides": dict(overrides),
                                        "by_seed": curves, **summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
