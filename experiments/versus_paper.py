"""Our returns against the paper's own, goal for goal: evaluations made with `metarl evaluate --task-set
finn2017` (the 40 goals of Finn et al.'s test scripts) beside the per-task returns of its Figure 5
(`metarl/rl/finn2017_figure5.json`). Per step: the paper's mean, ours (each run, and their mean where several
runs of a benchmark are given), and the paired difference ours - paper over the goals with its 95%
interval (1.96 standard errors of the per-goal differences); then each baseline both have.

Usage: python experiments/versus_paper.py EVAL.json [EVAL.json ...]
(a pooled JSON, `metarl evaluate RUN1 RUN2 ... --task-set finn2017 --out FILE.json`, gives its runs)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from metarl.evaluate import paper_reference, summarize


def paired(ours: np.ndarray, paper: np.ndarray) -> str:
    """``mean ± ci95`` of the per-goal differences ours - paper (arrays ``[tasks]``), as `metarl evaluate`
    summarises a step."""
    (row,) = summarize(torch.as_tensor(ours - paper)[None])
    return f"{row['mean']:+7.1f} ± {row['ci95']:4.1f}"


def _labels(paths: list[str]) -> list[str]:
    """Each run's column: its run directory's name (the file's parent), or the file's name where two files
    share a directory."""
    parents = [Path(p).parent.name for p in paths]
    return parents if len(set(parents)) == len(parents) else [Path(p).name for p in paths]


def _runs_of(path: str, result: dict) -> list[tuple[str, dict]]:
    """The runs in one file: itself, or each run of a pooled JSON (``per_run``), named as if it were that
    run's own file, so that its column is the run directory's name."""
    if "per_run" not in result:
        return [(path, result)]
    names = []
    for run in result["runs"]:
        run = Path(run)
        directory = run.parent.parent if run.suffix in (".pt", ".safetensors") else run  # RUN/checkpoints/x.pt
        names.append(str(directory / Path(path).name))
    return list(zip(names, result["per_run"]))


def compare(bench: str, runs: list[tuple[str, dict]]) -> list[str]:
    """The lines of one benchmark's comparison."""
    ref = paper_reference(bench)
    if ref is None:
        return [f"{bench}: the paper has no curves for it"]
    paper = np.asarray(ref["maml"]["per_task"])
    curves = [np.asarray(r["per_task"])[: len(paper)] for _, r in runs]
    steps = min(len(paper), *(len(c) for c in curves))
    lines = [f"{bench} ({len(runs)} run{'s' * (len(runs) > 1)}; paper: {ref['protocol']})",
             "steps  paper     " + "".join(f"{label[-22:]:>24s}" for label in _labels([name for name, _ in runs]))
             + ("      mean of runs   ours - paper (paired)" if len(runs) > 1 else "   ours - paper (paired)")]
    for k in range(steps):
        mean = np.mean([c[k] for c in curves], axis=0)
        row = f"{k:5d}  {paper[k].mean():8.1f}  " + "".join(f"{c[k].mean():24.1f}" for c in curves)
        if len(runs) > 1:
            row += f"{mean.mean():19.1f}"
        lines.append(row + f"   {paired(mean, paper[k])}")
    for name in ("pretrained", "random", "oracle"):
        ours = [r["baselines"][name] for _, r in runs if name in r.get("baselines", {})]
        if name in ref and ours:
            theirs = [s["mean"] for s in ref[name]["by_step"]]
            mine = [s["mean"] for s in ours[0]["by_step"]][: len(theirs)]
            lines.append(f"{name:>11s}: paper " + " ".join(f"{m:7.1f}" for m in theirs)
                         + " | ours " + " ".join(f"{m:7.1f}" for m in mine))
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python experiments/versus_paper.py EVAL.json [EVAL.json ...]", file=sys.stderr)
        return 2
    groups: dict[str, list[tuple[str, dict]]] = {}
    for path in argv:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            print(f"versus_paper: cannot read {path}: {e}", file=sys.stderr)
            return 2
        for name, run in _runs_of(path, result):
            if run.get("task_set") != "finn2017" or "per_task" not in run:
                print(f"versus_paper: {name} is not an evaluation on the paper's goals; make it with "
                      "`metarl evaluate RUN --task-set finn2017 --out FILE.json`", file=sys.stderr)
                return 2
            groups.setdefault(run["benchmark"], []).append((name, run))
    for bench, runs in groups.items():
        print("\n".join(compare(bench, runs)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
