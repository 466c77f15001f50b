"""Time-to-result on 2D navigation: wall time until the 1-step adapted return on held-out goals
first reaches -17 and then -13.

Trains MAML-TRPO on the reference workload (meta-batch 20, 20 episodes, 100 steps, 2x64 tanh,
1 inner step) and every ``--eval-every`` iterations evaluates one-step adaptation on a fixed
set of held-out goals (fresh episodes). Training time is counted; evaluation time is not.
The reference implementation (tristandeleu/pytorch-maml-rl) needed about 25 iterations
(2 minutes here) for -17 and about 200 iterations (15 minutes) for -13, as quoted in the
issue tracker (not re-measured by this script).
"""

from __future__ import annotations

import argparse
import time

import torch

from metarl.config import config_from_dict, parse_overrides
from metarl.rl.evaluation import adaptation_returns, evaluation_tasks
from metarl.rl.learner import RLLearner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metarl bench time-to-result", description=__doc__)
    ap.add_argument("--targets", type=float, nargs="+", default=[-17.0, -13.0])
    ap.add_argument("--max-iterations", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-goals", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = config_from_dict({
        "benchmark": "rl", "name": "ttr-navigation2d", "seed": args.seed, "num_iterations": args.max_iterations,
        "meta_batch_size": 20, "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 20},
        "policy": {"hidden": [64, 64], "activation": "tanh"}, "inner": {"lr": 0.1, "steps": 1},
    }, parse_overrides(args.set))
    learner = RLLearner(cfg)
    goals = evaluation_tasks(learner.env, args.eval_goals, args.seed)
    pending = sorted(args.targets)  # the easiest (lowest) target first
    train_s = 0.0
    print(f"targets {pending}; evaluating 1-step return on {args.eval_goals} held-out goals every "
          f"{args.eval_every} iterations")
    try:
        for it in range(1, args.max_iterations + 1):
            t = time.perf_counter()
            learner.train_step(it, log=False)
            train_s += time.perf_counter() - t
            if it % args.eval_every:
                continue
            curve = adaptation_returns(cfg, learner.module, goals, steps=1, sampler=learner.sampler, seed=it)
            post = float(curve[1].mean())
            print(f"  it {it:4d}  train {train_s:7.1f} s  1-step return on held-out goals {post:7.2f}", flush=True)
            while pending and post >= pending[0]:
                print(f"reached {pending[0]} at iteration {it} after {train_s:.1f} s of training "
                      f"({train_s / it:.2f} s/iteration)")
                pending.pop(0)
            if not pending:
                return 0
    finally:
        learner.close()
    print(f"not reached within {args.max_iterations} iterations: {pending}")
    return 1
