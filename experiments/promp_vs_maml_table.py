"""The RESULTS.md table of experiments/promp_vs_maml_trpo.sh: per run, iterations and environment
steps within the budget, wall time until the validation return after one step first reached each
target, and the held-out evaluation after 0..3 steps (mean ± 95% CI over tasks).

Usage: python experiments/promp_vs_maml_table.py OUT_DIR [TARGET ...]   (e.g. -17 -13 for 2D navigation)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def wall_times(rows: list[dict[str, str]]) -> list[float]:
    """Training wall time at each row, summed over resumed calls (``time/elapsed_s`` restarts at 0 in each)."""
    out, offset, last = [], 0.0, 0.0
    for r in rows:
        elapsed = float(r.get("time/elapsed_s") or last)
        if elapsed < last:  # a resumed call: its clock started again
            offset += last
        last = elapsed
        out.append(offset + elapsed)
    return out


def first_time_at(rows: list[dict[str, str]], target: float) -> str:
    """Training wall time at the first validation whose 1-step return is >= target."""
    for r, t in zip(rows, wall_times(rows), strict=True):
        value = r.get("val/return_post", "")
        if value and float(value) >= target:
            return f"{t / 60:.1f} min (it {r['iteration']})"
    return "not reached"


def main(argv: list[str]) -> int:
    out, targets = Path(argv[0]), [float(t) for t in argv[1:]]
    print("| run | iterations | env steps | " + " | ".join(f"time to {t:g}" for t in targets)
          + " | best.pt it | step 0 | step 1 | step 2 | step 3 |")
    print("|---" * (7 + len(targets)) + "|")
    for run in sorted(p for p in out.iterdir() if p.is_dir()):
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        steps = sum(float(r["time/env_steps_per_s"]) * float(r["time/sample_s"]) for r in rows)
        evals = sorted(run.glob("eval-*.json"))
        res = json.loads(evals[-1].read_text()) if evals else None
        cells = [f"{s['mean']:.1f} ± {s['ci95']:.1f}" for s in res["by_step"]] if res else ["-"] * 4
        print(f"| {run.name} | {rows[-1]['iteration']} | {steps / 1e6:.2f}M | "
              + " | ".join(first_time_at(rows, t) for t in targets)
              + f" | {res['iteration'] if res else '-'} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
