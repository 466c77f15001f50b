"""The RESULTS table of `experiments/sinusoid_family.sh`: query MSE (mean ± 95% CI over the held-out
sinusoids) of each method at K = 5, 10, 20 after 1 step (the Meta-SGD paper's protocol), after 5 and
after 10, with the published numbers beside them.

Usage: python experiments/sinusoid_family_table.py OUT_DIR
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

METHODS = [("maml", "MAML"), ("metasgd", "Meta-SGD"), ("anil", "ANIL"), ("mamlpp", "MAML++"),
           ("maml5steps", "MAML, 5 inner steps in training"),
           ("maml5steps-clip", "MAML, 5 inner steps, meta-gradient clipped at 10")]
SHOTS = (5, 10, 20)
#: Li et al. 2017 (arXiv 1707.09835) Table 1, one step, MSE ± 95% CI; only K = 5 is quoted here
#: (the K = 10 and 20 columns were not checked against the paper).
PUBLISHED = {"maml": ("1.13 ± 0.18", "see paper", "see paper"),
             "metasgd": ("0.90 ± 0.16", "see paper", "see paper")}


def cell(run: Path, step: int) -> str:
    """``mean ± ci95`` after ``step`` steps, or why there is none."""
    path = run / "eval.json"
    if not path.exists():
        return "-"
    by_step = {s["step"]: s for s in json.loads(path.read_text())["by_step"]}
    s = by_step.get(step)
    if s is None:
        return "-"
    if not math.isfinite(s["mean"]) or s["mean"] > 1e3:
        return "diverges"
    return f"{s['mean']:.3f} ± {s['ci95']:.3f}"


def table(out: Path) -> str:
    lines = []
    for step in (1, 5, 10):
        steps = f"{step} step{'s' if step > 1 else ''}"
        lines += [f"\nQuery MSE after {steps} (600 held-out tasks, 100 query points each)\n",
                  "| method | " + " | ".join(f"K={k}" for k in SHOTS) + " |",
                  "|---|" + "---|" * len(SHOTS)]
        for key, name in METHODS:
            lines.append(f"| {name} | " + " | ".join(cell(out / f"{key}-k{k}", step) for k in SHOTS) + " |")
        if step == 1:
            for key, name in METHODS:
                if key in PUBLISHED:
                    lines.append(f"| {name} (Li et al. 2017) | " + " | ".join(PUBLISHED[key]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python experiments/sinusoid_family_table.py OUT_DIR  (the folder sinusoid_family.sh wrote)")
    print(table(Path(sys.argv[1])))
