"""Meta-iteration time of MAML-TRPO, split into sampling and meta-update.

Workloads of the reference PyTorch implementation (tristandeleu/pytorch-maml-rl), whose
times measured on this 2-core machine are printed beside ours for the ratio:
2D navigation (meta-batch 20, 20 episodes, 100 steps, 2x64 tanh, 1 inner step; 5.1 s =
2.8 s sampling + 2.4 s update) and HalfCheetahVel (meta-batch 40, 20 episodes, 100 steps;
22.8 s = 16.2 s + 6.7 s). Those reference numbers are quoted from the issue tracker, not
re-measured by this script.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from metarl.config import config_from_dict, parse_overrides
from metarl.progress import progress
from metarl.rl.learner import RLLearner

WORKLOADS = {
    "navigation2d": ("metarl/Navigation2D-v0", 20, 100, (5.1, 2.8, 2.4)),
    "halfcheetah_vel": ("metarl/HalfCheetahVel-v0", 40, 100, (22.8, 16.2, 6.7)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metarl bench rl", description=__doc__)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    ap.add_argument("--iterations", type=int, default=5, help="timed meta-iterations (after 1 warm-up)")
    ap.add_argument("--workers", type=int, default=0, help="physics threads (0: all cores)")
    ap.add_argument("--update-threads", type=int, default=1, help="torch threads of the meta-update (0: all cores)")
    ap.add_argument("--fisher-tasks", type=int, default=0, help="FVP on this many random tasks (0: all, exact)")
    ap.add_argument("--fisher", choices=["meta", "post"], default="meta",
                    help="meta: Fisher through the adaptation (exact); post: the post-update policies' own (J = I)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (e.g. trpo.ls_rescale=true, inner_estimator=lvc)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.workload or ["navigation2d"]:
        env_id, mb, horizon, ref = WORKLOADS[name]
        cfg = config_from_dict({
            "benchmark": "rl", "name": f"bench-{name}", "seed": 0, "num_iterations": args.iterations + 1,
            "meta_batch_size": mb, "env": {"id": env_id, "episodes_per_task": 20},
            "policy": {"hidden": [64, 64], "activation": "tanh"}, "sampler": {"num_workers": args.workers},
            "update_threads": args.update_threads, "trpo": {"fisher_tasks": args.fisher_tasks, "fisher": args.fisher},
        }, parse_overrides(args.set))
        learner = RLLearner(cfg)
        learner.sampler.horizon = horizon  # the reference workload's horizon
        try:
            its = progress(range(args.iterations + 1), desc=f"bench {name}", leave=False)
            rows = [learner.train_step(i, True) for i in its][1:]
        finally:
            learner.close()
        s = statistics.median(r["time/sample_s"] for r in rows)
        u = statistics.median(r["time/update_s"] for r in rows)
        print(f"{name}: meta-batch {mb} x 20 episodes x {horizon} steps, 2x64 tanh, median of {args.iterations}, "
              f"update threads {args.update_threads or 'all'}, "
              f"Fisher ({args.fisher}) on {args.fisher_tasks or 'all'} tasks" + "".join(f", {o}" for o in args.set))
        if "trpo/ls_steps" in rows[0]:
            ls = statistics.mean(r["trpo/ls_steps"] for r in rows)
            print(f"  line search: {ls:.1f} backtracking steps per iteration on average")
        print(f"  ours       {s + u:6.2f} s/it  (sampling {s:5.2f} s, meta-update {u:5.2f} s)")
        print(f"  reference  {ref[0]:6.2f} s/it  (sampling {ref[1]:5.2f} s, meta-update {ref[2]:5.2f} s)  [quoted]")
        print(f"  speed-up   {ref[0] / (s + u):6.2f}x   (sampling {ref[1] / s:.2f}x, meta-update {ref[2] / u:.2f}x)")
    return 0
