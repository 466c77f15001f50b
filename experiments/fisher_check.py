"""How good a TRPO direction each Fisher strategy gives, on one meta-batch at a checkpoint
(RESULTS.md, "Meta-RL: half-cheetah": why the subsampled Fisher stalls).

  python experiments/fisher_check.py RUN_DIR [--checkpoint PATH] [--seed S] [--out OUT.json]
      [--strategy NAME:KIND:TASKS:EPISODES[:DAMPING] ...]

Loads the policy of ``PATH`` (default RUN_DIR/checkpoints/last.pt), samples one meta-batch of the run's
config with ``--seed``, and takes the meta-step from the same gradient and data under each strategy
(``trpo.fisher`` KIND, ``trpo.fisher_tasks`` TASKS, ``trpo.fisher_episodes`` EPISODES, and the CG
damping): the surrogate gain at the accepted step, its KL, the backtracking steps and the time. The
line search checks the exact KL either way, so a strategy only changes the direction and its scale;
a better direction gains more surrogate inside the same trust region. Default strategies: the exact
meta-Fisher, 5, 10 and 20 tasks of it, and all tasks on 5 post-update episodes each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from metarl.checkpoint import load_checkpoint
from metarl.config import config_from_dict
from metarl.rl.build import make_algorithm
from metarl.rl.learner import RLLearner

DEFAULT = ["exact:meta:0:0", "5 tasks:meta:5:0", "10 tasks:meta:10:0", "20 tasks:meta:20:0", "5 episodes:meta:0:5"]


def parse_strategy(text: str) -> tuple[str, str, int, int, float | None]:
    """``NAME:KIND:TASKS:EPISODES[:DAMPING]`` -> its fields (damping None: the config's)."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"--strategy {text!r}: expected NAME:KIND:TASKS:EPISODES[:DAMPING], e.g. '5 tasks:meta:5:0'")
    name, kind, tasks, episodes = parts[:4]
    return name, kind, int(tasks), int(episodes), float(parts[4]) if len(parts) == 5 else None


def compare(run: Path, checkpoint: Path, seed: int, strategies: list[str]) -> dict:
    """Sample one meta-batch at ``checkpoint`` and take the meta-step under every strategy."""
    state = load_checkpoint(checkpoint)
    data = dict(state["config"])
    data.update(seed=seed, update_threads=1)
    data["sampler"] = {**data["sampler"], "num_workers": 1}
    cfg = config_from_dict(data)
    learner = RLLearner(cfg)
    try:
        learner.module.load_state_dict(state["learner"]["model"])
        tasks = learner.env.unwrapped.sample_tasks(cfg.meta_batch_size, learner.np_rng)
        train, valid = learner.sample_adapted(tasks)
    finally:
        learner.close()
    policy = learner.module
    theta = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    rows = []
    for text in strategies:  # the learner's own meta-step, built by the run's config with this Fisher
        name, kind, n_tasks, n_episodes, damping = parse_strategy(text)
        trpo = {**data["trpo"], "fisher": kind, "fisher_tasks": n_tasks, "fisher_episodes": n_episodes}
        if damping is not None:
            trpo["cg_damping"] = damping
        algo = make_algorithm(config_from_dict({**data, "trpo": trpo}), policy, learner.env)
        policy.load_state_dict(theta)
        start = time.perf_counter()
        m = algo.step(train, valid)
        rows.append({"strategy": name, "fisher": kind, "fisher_tasks": n_tasks, "fisher_episodes": n_episodes,
                     "cg_damping": trpo["cg_damping"],
                     "gain": m["surrogate_before"] - m["surrogate_after"], "kl": m["kl"],
                     "ls_steps": m["ls_steps"], "step_norm": m["step_norm"], "seconds": time.perf_counter() - start})
        r = rows[-1]
        print(f"{name:>12}: surrogate gain {r['gain']:.5f}  kl {r['kl']:.4f}  backtracks {r['ls_steps']:.0f}  "
              f"step norm {r['step_norm']:.4f}  {r['seconds']:.1f} s", flush=True)
    return {"run": run.name, "checkpoint": checkpoint.name, "iteration": state["iteration"], "seed": seed,
            "return_pre": float(train[0].returns().mean()), "return_post": float(valid.returns().mean()),
            "strategies": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an RL run directory (its config.yaml and checkpoints/)")
    parser.add_argument("--checkpoint", type=Path, help="default RUN/checkpoints/last.pt")
    parser.add_argument("--seed", type=int, default=7, help="seeds the meta-batch's tasks and episodes")
    parser.add_argument("--strategy", action="extend", nargs="+",
                        help=f"NAME:KIND:TASKS:EPISODES[:DAMPING], one or more per flag; default {DEFAULT}")
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or args.run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        print(f"fisher_check: no checkpoint {checkpoint}; pass a run directory with checkpoints/last.pt "
              "or --checkpoint", file=sys.stderr)
        return 2
    strategies = args.strategy or DEFAULT
    try:
        for text in strategies:
            parse_strategy(text)
    except ValueError as err:
        print(f"fisher_check: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    result = compare(args.run, checkpoint, args.seed, strategies)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
