"""Two evaluations of ours on the same tasks, goal for goal: after each step, each one's mean, the paired
difference B - A over the tasks with its 95% interval (1.96 standard errors of the per-task
differences, as `metarl evaluate` summarises a step) and on how many tasks B is ahead. Pairing removes
the spread between tasks, which dominates the interval of either mean on its own.

Usage: python experiments/paired.py A.json B.json
(two `metarl evaluate ... --out FILE.json` results made on the same tasks: the same `--task-set`, or the
same `--tasks N --seed S`; pooled files are compared through the mean of their runs per task)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from metarl.evaluate import summarize


def curve(result: dict) -> np.ndarray:
    """``[steps, tasks]`` returns of one evaluation; a pooled one's runs averaged per task."""
    if "per_run" in result:
        return np.mean([np.asarray(r["per_task"], dtype=float) for r in result["per_run"]], axis=0)
    return np.asarray(result["per_task"], dtype=float)


def compare(a: dict, b: dict) -> list[dict[str, float]]:
    """Per step: A's and B's means, B - A paired (mean, ci95) and the count of tasks where B > A."""
    ca, cb = curve(a), curve(b)
    steps = min(len(ca), len(cb))
    diff = torch.as_tensor(cb[:steps] - ca[:steps])
    return [{"step": k, "a": float(ca[k].mean()), "b": float(cb[k].mean()), "diff": row["mean"],
             "ci95": row["ci95"], "b_ahead": int((diff[k] > 0).sum()), "tasks": int(diff.shape[1])}
            for k, row in enumerate(summarize(diff))]


def _load(path: str) -> dict:
    with open(path) as f:
        result = json.load(f)
    if "per_task" not in result and "per_run" not in result:
        raise ValueError(f"{path} has no per-task results; make it with `metarl evaluate RUN ... --out FILE.json`")
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python experiments/paired.py A.json B.json", file=sys.stderr)
        return 2
    try:
        a, b = (_load(p) for p in argv)
    except (OSError, ValueError) as e:
        print(f"paired: {e}", file=sys.stderr)
        return 2
    if a.get("tasks") != b.get("tasks") or a.get("benchmark") != b.get("benchmark"):
        print(f"paired: {argv[0]} and {argv[1]} were not scored on the same tasks; evaluate both with the same "
              "--task-set, or the same --tasks N --seed S", file=sys.stderr)
        return 2
    print(f"{a.get('benchmark')}: A = {argv[0]}, B = {argv[1]}")
    print("steps         A         B    B - A (paired)   B ahead")
    for r in compare(a, b):
        print(f"{r['step']:5d}  {r['a']:8.1f}  {r['b']:8.1f}  {r['diff']:+8.1f} ± {r['ci95']:4.1f}   "
              f"{r['b_ahead']}/{r['tasks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
