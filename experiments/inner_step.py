"""How far one inner step moves a policy: the size of MAML's adaptation, in distribution space
(RESULTS.md, "AntDir": why the torch initialisation barely adapts at first).

  python experiments/inner_step.py SUBJECT [SUBJECT ...] [--tasks N] [--seed S] [--out OUT.json]

A SUBJECT is a config with a weight init, ``CONFIG:INIT`` (a shipped config or a YAML file; INIT ``torch``
or ``xavier``), or a checkpoint, ``PATH.pt`` (a trained policy, with the config saved in it). For each, the
script samples N tasks (``--seed``: the tasks and the episodes' seeds, the same for every subject), takes the
run's inner step on the pre-update episodes, and reports over their live states the mean
``KL(pi_theta || pi_theta')`` and, for a Gaussian policy, the mean ``|mu' - mu| / sigma`` (the mean
action's move in standard deviations), with the returns before and after the step, and the cosine between
the meta-gradient (through the adaptation) and the gradient of the same post-update loss without it (the
pretrained baseline's direction). A policy whose inner step barely moves it gets almost no meta-learning
signal through the adaptation: its meta-gradient is then nearly the pretrained policy's (cosine near 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from metarl.checkpoint import CheckpointError, load_checkpoint
from metarl.config import ConfigError, config_from_dict, load_config
from metarl.maml import Params, detach_params, params_of
from metarl.rl.adapt import adapt_on_episodes
from metarl.rl.episodes import Episodes
from metarl.rl.learner import RLLearner
from metarl.rl.objective import MetaBatch, meta_batch, meta_objective
from metarl.rl.policies import policy_distribution
from metarl.trpo import flatten

INITS = ("torch", "xavier")


def step_size(policy: nn.Module, theta: Params, fast: Params, episodes: Episodes) -> dict[str, float]:
    """The move from ``theta`` (shared) to ``fast`` (stacked ``[N, *shape]``, one set per task) on the live
    states of ``episodes`` (stacked ``[N, T, B, ...]``): mean ``KL(pi_theta || pi_fast)`` and, for a Gaussian
    policy, the mean over states and action dimensions of ``|mu_fast - mu_theta| / sigma_theta``."""
    n = episodes.rewards.shape[0]
    shared = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in theta.items()}
    with torch.no_grad():
        before = policy_distribution(policy, shared, episodes.observations, per_task=True)
        after = policy_distribution(policy, fast, episodes.observations, per_task=True)
        masks = episodes.masks
        out = {"kl": float((kl_divergence(before, after) * masks).sum() / masks.sum())}
        if isinstance(before, Independent) and isinstance(before.base_dist, Normal):
            moved = ((after.base_dist.loc - before.base_dist.loc).abs() / before.base_dist.scale).mean(-1)
            out["mean_shift_in_std"] = float((moved * masks).sum() / masks.sum())
    return out


def gradient_alignment(learner: RLLearner, theta: Params, train: list[Episodes], valid: Episodes) -> float:
    """The cosine between the meta-gradient at ``theta`` (the post-update loss on ``valid`` through the
    adaptation on ``train``) and the gradient of the same loss with the adaptation left out (theta'_i = theta:
    what a pretrained policy would follow)."""
    batch = meta_batch(train, valid, learner.algo.advantages)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    grads = []
    for b in (batch, MetaBatch((), batch.valid)):
        loss = meta_objective(learner.module, leaves, b, learner.algo.inner).loss
        g = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads.append(flatten([torch.zeros_like(p) if d is None else d
                              for p, d in zip(leaves.values(), g, strict=True)]))
    return float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))


def subject_config(subject: str, seed: int) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """The config and (for a checkpoint) the policy's weights of one SUBJECT, on one sampler core."""
    overrides = [("seed", seed), ("sampler.num_workers", 1), ("update_threads", 1)]
    if subject.endswith(".pt"):
        path = Path(subject)
        if not path.is_file():
            raise ValueError(f"{subject}: no such checkpoint; pass PATH.pt or CONFIG:INIT")
        state = load_checkpoint(path)
        return config_from_dict(state["config"], overrides), state["learner"]["model"]
    name, _, init = subject.rpartition(":")
    if not name or init not in INITS:
        raise ValueError(f"{subject!r}: expected CONFIG:INIT with INIT one of {', '.join(INITS)} "
                         "(e.g. ant_dir:xavier), or a checkpoint PATH.pt")
    return load_config(name, [f"policy.init={init}", *(f"{k}={v}" for k, v in overrides)]), None


def measure(subject: str, n_tasks: int, seed: int) -> dict[str, Any]:
    """One SUBJECT's inner step on ``n_tasks`` tasks drawn with ``seed``."""
    cfg, weights = subject_config(subject, seed)
    learner = RLLearner(cfg)
    try:
        if weights is not None:
            learner.module.load_state_dict(weights)
        tasks = learner.env.unwrapped.sample_tasks(n_tasks, np.random.default_rng(seed))
        train, valid = learner.sample_adapted(tasks)
        theta = detach_params(params_of(learner.module))
        fast = adapt_on_episodes(learner.module, theta, train[:1], learner.algo.inner, learner.algo.advantages)
        row = {"subject": subject, "init": cfg.policy.init, "inner_lr": cfg.inner.lr,
               **step_size(learner.module, theta, fast, train[0]),
               "cos_meta_vs_pretrain_gradient": gradient_alignment(learner, theta, train, valid),
               "return_pre": float(train[0].returns().mean()), "return_post": float(valid.returns().mean())}
    finally:
        learner.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subjects", nargs="+", metavar="SUBJECT", help="CONFIG:INIT (e.g. ant_dir:xavier) or PATH.pt")
    parser.add_argument("--tasks", type=int, default=4, help="tasks sampled (default 4)")
    parser.add_argument("--seed", type=int, default=3, help="seeds the tasks and the episodes (default 3)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        print(f"inner_step: --tasks {args.tasks}: need at least 1 task", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = []
    try:
        for subject in args.subjects:
            rows.append(measure(subject, args.tasks, args.seed))
            r = rows[-1]
            shift = f"  mean |dmu|/sigma {r['mean_shift_in_std']:.4f}" if "mean_shift_in_std" in r else ""
            print(f"{subject}: KL(pre || post) {r['kl']:.5f}{shift}  cos(meta-gradient, without adaptation) "
                  f"{r['cos_meta_vs_pretrain_gradient']:.4f}  return {r['return_pre']:.1f} -> {r['return_post']:.1f}",
                  flush=True)
    except (ValueError, ConfigError, CheckpointError) as err:
        print(f"inner_step: {err}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps({"tasks": args.tasks, "seed": args.seed, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
