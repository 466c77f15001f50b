"""Whether one inner step can tell goal velocities apart: HalfCheetahVel's adaptation per goal on the
same pre-update episodes (RESULTS.md, "HalfCheetahVel: one step cannot tell the fast goals apart").

  python experiments/goal_blind.py CHECKPOINT.pt [--goals 0.2,0.6,1.0,1.4,1.7,2.0] [--seed 1001] [--out OUT.json]

The goal is not in the policy's observation, so sampling every goal with the same seeds gives the same
pre-update episodes; only their rewards, ``-|v - goal| - control``, differ. When the pre-update episodes
never run faster than a goal, each episode's return is its speed sum minus a constant, so the advantages,
and with them the inner step, no longer depend on the goal. The pre-update episodes are sampled as the run
samples them (with its ``explore_std``); the spread of their speeds over episodes is reported. For each goal the
script reports the share of pre-update live steps
faster than the goal, how far the adapted parameters lie from those for the last (reference) goal, relative
to the step itself (``|theta'_g - theta'_ref| / |theta'_ref - theta|``), the
mean move of the adapted mean action from the reference's in the pre-update standard deviations, and the
adapted policy's forward speed and return on fresh episodes (the same seeds for every goal).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

from metarl.checkpoint import CheckpointError, load_checkpoint
from metarl.config import ConfigError, config_from_dict
from metarl.maml import detach_params, params_of
from metarl.rl.adapt import adapt_on_episodes
from metarl.rl.episodes import Episodes
from metarl.rl.learner import RLLearner
from metarl.rl.policies import policy_distribution, widened
from metarl.trpo import flatten


def observation_indices(env: Any) -> tuple[int, int]:
    """Where the root's pitch and forward speed sit in the observation: ``experiments/gait.py``'s reading."""
    spec = importlib.util.spec_from_file_location("gait", Path(__file__).with_name("gait.py"))
    assert spec is not None and spec.loader is not None
    gait = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gait)
    return gait.observation_indices(env)


def live_mean(x: torch.Tensor, masks: torch.Tensor) -> float:
    """The mean of ``x`` over the live steps of ``masks``."""
    return float((x * masks).sum() / masks.sum())


def measure(path: str, goals: list[float], seed: int) -> dict[str, Any]:
    """Adapt the checkpoint's policy to each goal on the same pre-update episodes; see the module doc."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], [("sampler.num_workers", 1), ("update_threads", 1)])
    if "HalfCheetahVel" not in cfg.env.id:
        raise ValueError(f"{path}: a {cfg.env.id} run; pass a HalfCheetahVel checkpoint")
    learner = RLLearner(cfg)
    try:
        learner.module.load_state_dict(state["learner"]["model"])
        _, speed_index = observation_indices(learner.env)
        theta = detach_params(params_of(learner.module))
        pre: list[Episodes] = []
        fast = []
        for goal in goals:
            with learner.sampler.seeded(seed):
                pre.append(learner._sample(widened(theta, cfg.explore_std), [{"velocity": goal}], per_task=False))
            fast.append(adapt_on_episodes(learner.module, theta, pre[-1:], learner.algo.inner,
                                          learner.algo.advantages))
        same = all(torch.equal(p.observations, pre[0].observations) for p in pre)
        flat_theta = flatten(list(theta.values()))
        ref = flatten([v[0] for v in fast[-1].values()])
        step = float((ref - flat_theta).norm())
        episodes = pre[0]
        with torch.no_grad():
            ref_dist = policy_distribution(learner.module, fast[-1], episodes.observations, per_task=True)
            base = policy_distribution(learner.module, {k: v.unsqueeze(0) for k, v in theta.items()},
                                       episodes.observations, per_task=True)
        rows = []
        speed = episodes.observations[..., speed_index]
        for goal, params in zip(goals, fast, strict=True):
            with learner.sampler.seeded(seed + 1):
                post = learner._sample(params, [{"velocity": goal}], per_task=True)
            with torch.no_grad():
                dist = policy_distribution(learner.module, params, episodes.observations, per_task=True)
                moved = ((dist.base_dist.loc - ref_dist.base_dist.loc).abs() / base.base_dist.scale).mean(-1)
            rows.append({
                "goal": goal,
                "pre_share_faster": live_mean((speed > goal).to(speed.dtype), episodes.masks),
                "theta_distance_to_ref": float((flatten([v[0] for v in params.values()]) - ref).norm()) / step,
                "mean_shift_to_ref_in_std": live_mean(moved, episodes.masks),
                "post_speed": live_mean(post.observations[..., speed_index], post.masks),
                "post_return": float(post.returns().mean()),
            })
    finally:
        learner.close()
    per_episode = (speed * episodes.masks).sum(-2) / episodes.masks.sum(-2).clamp(min=1)  # [1, B]
    return {"checkpoint": path, "iteration": int(state["iteration"]), "same_pre_update_episodes": same,
            "pre_speed": live_mean(speed, episodes.masks),
            "pre_episode_speed": {"mean": float(per_episode.mean()), "sd": float(per_episode.std()),
                                  "min": float(per_episode.min()), "max": float(per_episode.max())},
            "step_norm": step, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT.pt")
    parser.add_argument("--goals", default="0.2,0.6,1.0,1.4,1.7,2.0",
                        help="goal velocities, the last the reference (default 0.2,0.6,1.0,1.4,1.7,2.0)")
    parser.add_argument("--seed", type=int, default=1001, help="seeds the episodes (default 1001)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        goals = [float(g) for g in args.goals.split(",")]
    except ValueError:
        print(f"goal_blind: --goals {args.goals!r}: expected numbers separated by commas, e.g. 0.5,1.5,2.0",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    results = []
    try:
        for path in args.checkpoints:
            r = measure(path, goals, args.seed)
            results.append(r)
            e = r["pre_episode_speed"]
            print(f"{path} (iteration {r['iteration']}): pre-update speed {r['pre_speed']:.2f} m/s (per episode: sd "
                  f"{e['sd']:.3f}, {e['min']:.2f}-{e['max']:.2f}), the same pre-update episodes for every goal: "
                  f"{r['same_pre_update_episodes']}")
            for row in r["rows"]:
                print(f"  goal {row['goal']:4.2f}  pre-update steps faster {row['pre_share_faster']:5.3f}  "
                      f"|theta'_g - theta'_ref| / |step| {row['theta_distance_to_ref']:5.3f}  "
                      f"|dmu| to ref {row['mean_shift_to_ref_in_std']:5.3f} std  "
                      f"after: speed {row['post_speed']:5.2f}  return {row['post_return']:7.1f}", flush=True)
    except (ValueError, ConfigError, CheckpointError) as err:
        print(f"goal_blind: {err}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps({"goals": goals, "seed": args.seed, "checkpoints": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
