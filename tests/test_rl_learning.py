"""MAML-TRPO end to end on Navigation2D: a short seeded run must learn to adapt in one step."""

from __future__ import annotations

import torch

from metarl.checkpoint import load_checkpoint
from metarl.config import config_from_dict
from metarl.evaluate import evaluate
from metarl.training import train

torch.set_num_threads(1)


def nav_cfg(**over):
    data = {
        "benchmark": "rl", "name": "nav-test", "seed": 1, "num_iterations": 20, "meta_batch_size": 10,
        "log_every": 1, "checkpoint_every": 10, "eval": {"every": 5, "tasks": 5, "test_tasks": 20},
        "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
        "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 10},
        "policy": {"hidden": [64, 64], "activation": "tanh"},
    }
    data.update(over)
    return config_from_dict(data)


def test_navigation_adapts_in_one_step(tmp_path):
    run = train(nav_cfg(), logdir=tmp_path / "nav", quiet=True)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/return_pre", "train/return_post", "trpo/kl", "trpo/ls_steps", "trpo/accepted",
                "trpo/grad_norm", "train/inner_loss", "train/adapt_kl", "train/entropy", "time/sample_s",
                "time/update_s", "time/env_steps_per_s", "val/return_pre", "val/return_post", "train/env_steps",
                "train/episode_length"):
        assert key in header, key
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    steps = [float(r[header.index("train/env_steps")]) for r in rows]
    assert steps[0] > 0 and all(b > a for a, b in zip(steps, steps[1:]))  # a cumulative count
    col = header.index("val/return_post")
    validated = [(int(r[0]), float(r[col])) for r in rows if r[col]]
    assert [it for it, _ in validated] == [5, 10, 15, 20]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iteration"] == max(validated, key=lambda x: x[1])[0]
    res = evaluate(run, n_tasks=40, steps=1, seed=7)
    pre, post = (s["mean"] for s in res["by_step"])
    rand_post = res["baselines"]["random"]["by_step"][1]["mean"]
    ci = res["by_step"][1]["ci95"] + res["by_step"][0]["ci95"]
    assert post > pre + max(ci, 3.0), res["by_step"]
    assert post > rand_post + 3.0, (post, rand_post)


def test_rl_resume_is_exact(tmp_path):
    cfg = nav_cfg(num_iterations=4, meta_batch_size=3, env={"id": "metarl/Navigation2D-v0", "episodes_per_task": 3},
                  checkpoint_every=100)
    full = train(cfg, logdir=tmp_path / "full", quiet=True)
    part = train(cfg, logdir=tmp_path / "part", quiet=True, stop_after=2)
    train(resume=part, quiet=True)
    a, b = load_checkpoint(full)["learner"]["model"], load_checkpoint(part)["learner"]["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
