"""How a half-cheetah run moves before and after adapting: forward speed and torso pitch per goal
(RESULTS.md, "HalfCheetahVel: a seed that rears up").

  python experiments/gait.py RUN_OR_CHECKPOINT [...] [--goals 0.1,0.5,0.9,1.3,1.6,1.9|finn2017] [--steps 1]
                             [--pitch 1.2] [--seed 5] [--out OUT.json]

For each run (a run directory or a ``.pt`` checkpoint of a HalfCheetahVel or HalfCheetahDir run) and each
goal (a goal velocity, or a direction +1/-1; ``finn2017``: the paper's 40 test goals of the run's env, as
``metarl evaluate --task-set finn2017``, whose returns it reproduces at the same ``--seed``), the script
samples the run's episodes per task, adapts as ``metarl evaluate`` does (the run's inner loop, the paper's
test-time step sizes: ``test_lr_after_first`` 0.5), and reports after 0..``--steps`` steps: the mean
return, the mean forward speed over the first and the second half of the episodes, the share of states
whose torso is pitched beyond ``--pitch`` radians (1.57 is upright on the hind leg, 3.14 on the back), the
mean pitch, and the return split into the control cost an episode paid and the rest (the task's term),
which tells a costly gait from a slow or fast one. Speed and pitch are read off the observation
(Gymnasium's layout: the root's pitch is ``qpos[2]``, its forward speed ``qvel[0]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.checkpoint import CheckpointError, load_checkpoint
from metarl.config import ConfigError, config_from_dict
from metarl.rl.build import make_env, policy_module, sampler_for
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import adaptation_returns, finn2017_test_tasks
from metarl.seeding import eval_seed

HALF_CHEETAHS = ("HalfCheetahVel", "HalfCheetahDir")


def observation_indices(env: gym.Env) -> tuple[int, int]:
    """Where the root's pitch (``qpos[2]``) and forward speed (``qvel[0]``) sit in the observation: after
    the ``qpos`` entries Gymnasium keeps (it skips the first ``skipped_qpos``) come the ``qvel`` ones."""
    base = env.unwrapped
    skipped = base.observation_structure["skipped_qpos"]
    return 2 - skipped, base.model.nq - skipped


def control_costs(env: gym.Env, actions: torch.Tensor) -> torch.Tensor:
    """The control cost the env charged for each action (``actions [..., act]`` -> ``[...]``), by the env's
    own batched rule (``control_costs`` of ``envs.locomotion``)."""
    return torch.as_tensor(env.unwrapped.control_costs(actions.double().numpy()))


def gait(episodes: Episodes, pitch_index: int, speed_index: int, pitch_limit: float,
         control: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Per task of ``episodes`` (stacked ``[N, T, B, obs]``): the forward speed over each half of the horizon,
    the share of live states pitched beyond ``pitch_limit``, the mean pitch, and, given each step's control
    cost ``control [N, T, B]``, an episode's mean control cost and its return without it."""
    obs, masks = episodes.observations, episodes.masks
    half = obs.shape[1] // 2
    speed, pitch = obs[..., speed_index], obs[..., pitch_index]

    def mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (x * m).sum((1, 2)) / m.sum((1, 2))

    rows = [{"speed_first_half": float(a), "speed_second_half": float(b), "pitched_share": float(c),
             "pitch_mean": float(d)}
            for a, b, c, d in zip(mean(speed[:, :half], masks[:, :half]), mean(speed[:, half:], masks[:, half:]),
                                  mean((pitch.abs() > pitch_limit).to(obs.dtype), masks), mean(pitch, masks),
                                  strict=True)]
    if control is not None:
        per_episode = lambda x: (x.double() * masks).sum(1).mean(1)  # noqa: E731  [N, T, B] -> [N]
        for row, cost, ret in zip(rows, per_episode(control), per_episode(episodes.rewards), strict=True):
            row["control_cost"], row["task_return"] = float(cost), float(ret + cost)
    return rows


def measure(path: str, goals: list[float] | None, steps: int, pitch_limit: float, seed: int) -> dict[str, Any]:
    """One run's gait on ``goals`` (None: the paper's test goals) after 0..``steps`` steps."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], [("sampler.num_workers", 1), ("test_lr_after_first", 0.5)])
    if getattr(cfg, "benchmark", None) != "rl" or not any(name in cfg.env.id for name in HALF_CHEETAHS):
        raise ValueError(f"{path}: a {getattr(cfg.env, 'id', cfg.benchmark)} run; the gait is read for "
                         f"{' and '.join(HALF_CHEETAHS)} runs only")
    env = make_env(cfg)
    sampler = sampler_for(cfg, eval_seed(seed))
    try:
        key = next(iter(env.unwrapped.sample_tasks(1, np.random.default_rng(0))[0]))  # "velocity" or "direction"
        if goals is None:
            goals = [task[key] for task in finn2017_test_tasks(cfg.env.id)]
        tasks = [{key: goal} for goal in goals]
        policy = policy_module(cfg, env)
        policy.load_state_dict(state["learner"]["model"])
        batches: list[Episodes] = []
        curve = adaptation_returns(cfg, policy, tasks, steps=steps, sampler=sampler, seed=eval_seed(seed),
                                   episodes_out=batches)
        pitch_index, speed_index = observation_indices(env)
        rows = []
        for k, batch in enumerate(batches):
            control = control_costs(env, batch.actions)
            for i, stats in enumerate(gait(batch, pitch_index, speed_index, pitch_limit, control)):
                rows.append({"step": k, "goal": goals[i], "return": float(curve[k, i]), **stats})
    finally:
        sampler.close()
        env.close()
    return {"run": path, "iteration": int(state["iteration"]), "goal": key, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--goals", default="0.1,0.5,0.9,1.3,1.6,1.9",
                        help="goal velocities, or directions 1,-1 (default 0.1,0.5,0.9,1.3,1.6,1.9), or finn2017: "
                             "the paper's 40 test goals")
    parser.add_argument("--steps", type=int, default=1, help="adaptation steps (default 1)")
    parser.add_argument("--pitch", type=float, default=1.2, help="pitch counted as reared, radians (default 1.2)")
    parser.add_argument("--seed", type=int, default=5, help="seeds the sampling (default 5)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        goals = None if args.goals == "finn2017" else [float(g) for g in args.goals.split(",")]
    except ValueError:
        print(f"gait: --goals {args.goals!r}: expected numbers separated by commas, e.g. 0.5,1.5, or finn2017",
              file=sys.stderr)
        return 2
    if args.steps < 0 or not args.pitch > 0:
        print(f"gait: --steps {args.steps} must be >= 0 and --pitch {args.pitch} > 0", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    results = []
    try:
        for run in args.runs:
            results.append(measure(run, goals, args.steps, args.pitch, args.seed))
            print(f"{run} (iteration {results[-1]['iteration']})")
            for r in results[-1]["rows"]:
                print(f"  step {r['step']}  {results[-1]['goal']} {r['goal']:+.2f}  return {r['return']:8.1f}  speed "
                      f"{r['speed_first_half']:5.2f} / {r['speed_second_half']:5.2f}  pitched beyond {args.pitch:g}: "
                      f"{r['pitched_share']:4.2f}  mean pitch {r['pitch_mean']:+.2f}  "
                      f"control cost {r['control_cost']:6.1f}  task {r['task_return']:8.1f}", flush=True)
    except (ValueError, ConfigError, CheckpointError) as err:
        print(f"gait: {err}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps({"goals": args.goals if goals is None else goals, "steps": args.steps,
                                        "pitch": args.pitch, "seed": args.seed,
                                        "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
