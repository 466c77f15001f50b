"""The paper's own Figure 5 numbers, summarised from the result files its authors published.

Finn's `maml_rl` repository (github.com/cbfinn/maml_rl, MIT licence) keeps, in `icml/`, the per-task returns
its plotting scripts drew Figure 5 (and the 2D-navigation figure) from: `icml_{env}_results_{policy}.pkl`,
key `task_avg_returns`, a `[steps, 40 tasks]` array (the oracle: its return before adapting only). This
script reads them and writes the mean, the 95% interval (1.96 standard errors over the tasks, as `metarl
evaluate` reports), the interquartile mean and the per-task returns per step, under our benchmark names, so
that our results are compared with the paper's data and not with values read off its plot (goal for goal
with `metarl evaluate --task-set finn2017`, which draws the same goals as the paper's test scripts).

Usage: python experiments/paper_figure5_data.py MAML_RL_ICML_DIR [OUT.json]
  (OUT defaults to metarl/rl/finn2017_figure5.json, which `experiments/figure5.py --paper` draws)
"""

from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch

from metarl.evaluate import summarize
from metarl.stats import iqm

#: the repository's file prefix -> our benchmark name, and the policies its plotting script drew
#: (`icml/make_*_plots.py`: `maml`, `pretrain`, `random`, `oracle`; the 2D navigation's `pretrain` is `maml0`)
ENVS = {
    "cheetah": "halfcheetah_vel",
    "cheetahdirec": "halfcheetah_dir",
    "ant": "ant_vel",
    "antdirec": "ant_dir",
    "point": "navigation2d",
}
POLICIES = {"maml": "maml", "pretrain": "pretrained", "random": "random", "oracle": "oracle"}
STEPS = 4  # the figures draw 0..3 steps (`n_itr = 4`)
#: how the returns were measured, from `maml_examples/test_maml_*.py` (the checkpoint, the episodes of each
#: adaptation step, MAML's step size then each later step's, the baselines' step sizes)
PROTOCOL = {
    "halfcheetah_vel": "MAML trained on 10 episodes per task, iteration 475; 20 episodes per step; lr 0.1 then "
                       "0.05; pretrained 0.02, random 0.1",
    "halfcheetah_dir": "MAML iteration 100 of a run named with meta step size 0.02; 20 episodes per step; lr 0.1 "
                       "then 0.05; pretrained 0.2, random 1.0",
    "ant_vel": "MAML trained on 20 episodes per task, iteration 375; 20 episodes per step; lr 0.1 then 0.05; "
               "pretrained 0.2, random 1.0",
    "ant_dir": "MAML trained on 40 episodes per task, iteration 575; 40 episodes per step; lr 0.1 then 0.001; "
               "pretrained 0.2, random 1.0",
    "navigation2d": "MAML trained with inner lr 0.5, 20 episodes per task, 20 tasks per meta-batch; 40 "
                    "episodes per step; lr 0.5 then 0.25",
}


def summary(returns: np.ndarray) -> list[dict[str, float]]:
    """``by_step`` rows of a ``[steps, tasks]`` array as `metarl evaluate` writes them (mean, 1.96 standard
    errors over the tasks), rounded, with the IQM over the tasks added."""
    rows = summarize(torch.as_tensor(returns[:STEPS]))
    return [{"step": row["step"], "mean": round(row["mean"], 2), "ci95": round(row["ci95"], 2), "iqm": round(iqm(r), 2)}
            for row, r in zip(rows, returns[:STEPS], strict=True)]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).parents[1] / "metarl/rl/finn2017_figure5.json"
    data: dict = {
        "source": "github.com/cbfinn/maml_rl @ 9c8e2eb, icml/icml_{env}_results_{policy}.pkl, 'task_avg_returns'",
        "note": "Finn et al. 2017, Figure 5 (and the 2D-navigation figure): the return per held-out task "
                "after 0-3 steps; mean, 95% interval (1.96 SE over tasks), IQM, and per_task[step][task] in "
                "the order of the paper's test goals (metarl evaluate --task-set finn2017). The oracle is not "
                "adapted.",
        "benchmarks": {},
    }
    for prefix, bench in ENVS.items():
        entry: dict = {"protocol": PROTOCOL[bench]}
        for name, policy in POLICIES.items():
            fname = f"icml_{prefix}_results_{'maml0' if (prefix, name) == ('point', 'pretrain') else name}.pkl"
            path = src / fname
            if not path.exists():
                continue
            with open(path, "rb") as f:
                returns = np.asarray(pickle.load(f, encoding="latin1")["task_avg_returns"], dtype=float)
            entry[policy] = {"n_tasks": int(returns.shape[1]), "by_step": summary(returns),
                             "per_task": [[round(float(x), 2) for x in row] for row in returns[:STEPS]]}
        data["benchmarks"][bench] = entry
    text = json.dumps(data, indent=1)
    text = re.sub(r'\{\s+("step"[^{}]*?)\s+\}', lambda m: "{" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "}", text)
    numbers = r"\[\s+(-?[0-9.e-]+(?:,\s+-?[0-9.e-]+)*)\s+\]"  # a step's per-task returns: on one line
    text = re.sub(numbers, lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    out.write_text(text + "\n")  # one line per step
    print(f"wrote {out}: {', '.join(data['benchmarks'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
