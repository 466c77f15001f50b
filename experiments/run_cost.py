"""What a reported result cost: environment steps, training wall time, and the meta-iteration's time split into
sampling and update, read from the runs' ``metrics.csv`` (RESULTS.md, "AntDir on the paper's goals, and what
each result cost").

  python experiments/run_cost.py SUBJECT [SUBJECT ...]

SUBJECT is a run directory (cost to its last logged iteration), ``RUN_DIR@N`` (to iteration N), or an
evaluation JSON written by ``metarl evaluate --out`` inside a run directory (to the iteration it evaluated:
a ``best.pt`` evaluation names the best iteration, not the last).

Wall time is the sum over the run's segments: ``time/elapsed_s`` restarts from 0 when a run is resumed,
so each segment's last value before a restart is added up. It does not count the time between a stop and
its resume, and it is the time on whatever else the machine was doing then (RESULTS says what).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _float(row: dict[str, str], key: str) -> float:
    """A logged value, 0.0 where the column is empty or absent (an older run's metrics lack some)."""
    return float(row.get(key) or 0.0)


def cost(run: Path, upto: int | None = None) -> dict[str, float]:
    """The cost of ``run`` up to iteration ``upto`` (its last logged one when None): iterations, env steps,
    wall seconds (summed over resumed segments) and per-iteration means of sampling, update and the rest."""
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if upto is None or int(r["iteration"]) <= upto]
    if not rows:
        raise ValueError(f"{run} has no logged iteration{'' if upto is None else f' up to {upto}'}")
    wall, previous = 0.0, 0.0
    for row in rows:
        elapsed = _float(row, "time/elapsed_s")
        if elapsed < previous:  # a resume restarted the clock: bank the segment that ended
            wall += previous
        previous = elapsed
    wall += previous
    n = len(rows)
    sample = sum(_float(r, "time/sample_s") for r in rows) / n
    update = sum(_float(r, "time/update_s") for r in rows) / n
    return {"iteration": int(rows[-1]["iteration"]), "env_steps": _float(rows[-1], "train/env_steps"),
            "wall_s": wall, "sample_s": sample, "update_s": update, "other_s": max(wall / n - sample - update, 0.0)}


def subject(arg: str) -> tuple[str, Path, int | None]:
    """A SUBJECT argument as (label, run directory, iteration or None)."""
    path, _, at = arg.partition("@")
    p = Path(path)
    if p.suffix == ".json":
        with open(p) as f:
            iteration = json.load(f).get("iteration")
        return "/".join(p.parts[-3:]), p.parent, int(iteration) if iteration is not None else None
    if at and not at.isdigit():
        raise ValueError(f"{arg}: the iteration after @ must be a whole number, e.g. {path}@300")
    return "/".join(p.parts[-2:]) + (f"@{at}" if at else ""), p, int(at) if at else None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python experiments/run_cost.py RUN_DIR[@N] | EVAL.json ...", file=sys.stderr)
        return 2
    lines = ["| run | iteration | env steps | wall time | per iteration: sampling / update / other (s) |",
             "|---|---|---|---|---|"]
    for arg in argv:
        try:
            label, run, upto = subject(arg)
            c = cost(run, upto)
        except (OSError, ValueError, KeyError) as e:
            print(f"run_cost: {e}", file=sys.stderr)
            return 2
        hours = c["wall_s"] / 3600
        lines.append(f"| {label} | {c['iteration']} | {c['env_steps'] / 1e6:.1f}M | {hours:.2f} h | "
                     f"{c['sample_s']:.1f} / {c['update_s']:.1f} / {c['other_s']:.1f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
