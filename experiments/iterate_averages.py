"""Which average of the meta-parameters to evaluate (the ``ema`` config key), chosen on one set of held-out
tasks and reported on another (RESULTS.md, "2D navigation across seeds").

``ema`` does not change training, so one run per seed, with every iterate recorded, gives the run that any
decay would have produced; scoring each decay's average then costs evaluations only.

  python experiments/iterate_averages.py record RUN_DIR -- CONFIG --seed S [--set key=value ...]
      ``metarl train CONFIG --logdir RUN_DIR ...``, recording the policy's parameters after every
      meta-step in RUN_DIR/iterates.pt.
  python experiments/iterate_averages.py score --goals SEED [--decays 0,0.99] [--tasks 400] OUT.json RUN_DIR...
      For each decay and run: the average ``a <- d a + (1 - d) theta`` over all recorded iterates (from
      the first, as ``ema: d`` computes it), written as RUN_DIR/checkpoints/ema-D.pt, and its return
      after one inner step on the held-out tasks of SEED (the tasks and sampling seeds of ``metarl
      evaluate RUN --seed SEED``). OUT.json: the per-run means and their mean over runs, per decay.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.cli import main as metarl_main
from metarl.config import config_from_dict
from metarl.rl.evaluation import evaluate_rl
from metarl.rl.learner import RLLearner, update_average


def record(run: Path, train_args: list[str]) -> int:
    """``metarl train TRAIN_ARGS --logdir RUN`` with every iterate kept in RUN/iterates.pt."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    step = RLLearner.train_step

    def recording(self: RLLearner, iteration: int, log: bool) -> dict[str, float]:
        out = step(self, iteration, log)
        seen[iteration] = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return out

    RLLearner.train_step = recording  # type: ignore[method-assign]
    try:
        return metarl_main(["train", *train_args, "--logdir", str(run)])
    finally:
        RLLearner.train_step = step  # type: ignore[method-assign]
        if seen:
            torch.save(seen, run / "iterates.pt")


def averaged(iterates: dict[int, dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The ``ema: decay`` average after the last recorded iterate (the first one starts it)."""
    order = sorted(iterates)
    if order != list(range(order[0], order[-1] + 1)):
        raise ValueError(f"iterates {order[0]}..{order[-1]} have gaps: record the whole run")
    avg = {k: v.clone() for k, v in iterates[order[0]].items()}
    for i in order[1:]:
        update_average(avg, iterates[i], decay)
    return avg


def one_step_return(state: dict, goal_seed: int, n_tasks: int) -> float:
    """``metarl evaluate``'s mean return after one step for ``state`` (without its random baseline)."""
    result = evaluate_rl(config_from_dict(state["config"]), state["learner"], n_tasks=n_tasks, steps=1,
                         seed=goal_seed, baselines={}, random=False)
    return float(result["by_step"][1]["mean"])


def score(runs: list[Path], decays: list[float], goal_seed: int, n_tasks: int) -> dict:
    out: dict = {"goals_seed": goal_seed, "tasks": n_tasks, "runs": [str(r) for r in runs], "by_decay": {}}
    for run in runs:
        iterates = torch.load(run / "iterates.pt")
        last = load_checkpoint(run / "checkpoints" / "last.pt")
        if last["iteration"] != max(iterates):
            raise ValueError(f"{run}: last.pt is iteration {last['iteration']}, the iterates end at {max(iterates)}")
        for decay in decays:
            state = copy.deepcopy(last)
            state["learner"]["model"] = averaged(iterates, decay)
            state["learner"].pop("model_train", None)
            save_checkpoint(run / "checkpoints" / f"ema-{decay}.pt", state)
            value = one_step_return(state, goal_seed, n_tasks)
            out["by_decay"].setdefault(str(decay), {"runs": []})["runs"].append(value)
            print(f"{run} ema {decay}: {value:.3f}", flush=True)
    for entry in out["by_decay"].values():
        entry["mean"] = sum(entry["runs"]) / len(entry["runs"])
    return out


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("run", type=Path)
    r.add_argument("train_args", nargs=argparse.REMAINDER)
    s = sub.add_parser("score")
    s.add_argument("--goals", type=int, required=True)
    s.add_argument("--decays", default="0,0.9,0.95,0.98,0.99,0.995")
    s.add_argument("--tasks", type=int, default=400)
    s.add_argument("out", type=Path)
    s.add_argument("runs", type=Path, nargs="+")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "record":
        train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        return record(args.run, train_args)
    result = score(args.runs, [float(d) for d in args.decays.split(",")], args.goals, args.tasks)
    args.out.write_text(json.dumps(result, indent=1))
    for decay, entry in result["by_decay"].items():
        print(f"ema {decay}: mean {entry['mean']:.3f} over {len(entry['runs'])} runs ("
              + ", ".join(f"{v:.2f}" for v in entry["runs"]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
