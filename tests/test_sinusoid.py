"""Sinusoid tasks and a short seeded learning run: adaptation must help on held-out tasks."""

from __future__ import annotations

import math

import pytest
import torch

import metarl
from metarl.config import ConfigError, config_from_dict
from metarl.evaluate import evaluate
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.training import train

torch.set_num_threads(1)


def test_sinusoid_tasks_follow_the_paper_distribution():
    tasks = SinusoidTasks(shots=10, query=7)
    b = tasks.sample(2000, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (2000, 10, 1) and b.x_query.shape == (2000, 7, 1)
    x = torch.cat([b.x_support, b.x_query], 1)
    y = torch.cat([b.y_support, b.y_query], 1)
    assert x.min() >= -5 and x.max() <= 5
    # recover amplitude and phase per task by least squares on sin/cos features: y = a sin x + c cos x
    feats = torch.cat([torch.sin(x), torch.cos(x)], -1)
    coef = torch.linalg.lstsq(feats, y).solution.squeeze(-1)
    amp = coef.norm(dim=-1)
    phase = torch.atan2(-coef[:, 1], coef[:, 0])  # A sin(x - p) = A cos p sin x - A sin p cos x
    assert amp.min() >= 0.1 - 1e-4 and amp.max() <= 5.0 + 1e-4
    assert phase.min() >= -1e-4 and phase.max() <= math.pi + 1e-4
    assert abs(amp.mean().item() - 2.55) < 0.1
    # the same generator seed gives the same tasks; another gives others
    again = tasks.sample(2000, torch.Generator().manual_seed(0))
    assert torch.equal(again.y_query, b.y_query)
    assert not torch.equal(tasks.sample(2000, torch.Generator().manual_seed(1)).y_query, b.y_query)


def test_short_run_adapts_on_held_out_tasks(tmp_path):
    cfg = config_from_dict({
        "benchmark": "sinusoid", "name": "learn", "seed": 0, "num_iterations": 1500,
        "log_every": 500, "checkpoint_every": 1500, "eval": {"every": 1500, "tasks": 50},
    })
    run = train(cfg, logdir=tmp_path / "run", quiet=True)
    res = evaluate(run, n_tasks=200, steps=10, seed=123, pretrain_iterations=1500)
    maml = [s["mean"] for s in res["by_step"]]
    pre = [s["mean"] for s in res["baselines"]["pretrained"]["by_step"]]
    assert maml[1] < 0.5 * maml[0], maml
    assert maml[10] < 0.3 * maml[0], maml
    assert maml[1] < pre[1] and maml[10] < 0.5 * pre[10], (maml, pre)

    # Meta-SGD's protocol scores each held-out sinusoid on 100 query points: an evaluation-time key;
    # what was trained (the support size K, the network) stays the run's
    wide = evaluate(run, n_tasks=200, steps=1, seed=123, pretrain_iterations=0, overrides=[("task.query", 100)])
    assert wide["overrides"] == {"task.query": 100}
    assert [s["mean"] for s in wide["by_step"]] != maml[:2]
    with pytest.raises(ConfigError, match="task.shots"):
        evaluate(run, n_tasks=10, steps=1, overrides=[("task.shots", 5)])

    # the notebook API gives the same post-adaptation error as evaluate on a task of its own
    r = metarl.load(run)
    b = SinusoidTasks().sample(1, torch.Generator().manual_seed(9))
    fast = r.adapt(r.transform(b.x_support[0]), b.y_support[0], steps=10)
    err_fast = ((r.predict(fast, b.x_query[0]) - b.y_query[0]) ** 2).mean()
    err_0 = ((r.predict(r.params, b.x_query[0]) - b.y_query[0]) ** 2).mean()
    assert err_fast < err_0


def test_evaluation_tasks_are_not_the_training_tasks_of_the_same_seed():
    from metarl.config import SinusoidConfig
    from metarl.fewshot.build import sinusoid_tasks, sinusoid_test_batch

    cfg = SinusoidConfig(seed=3)
    train = sinusoid_tasks(cfg).sample(50, torch.Generator().manual_seed(3))
    held_out = sinusoid_test_batch(cfg, 50, 3, None)
    assert not torch.isin(held_out.y_query, train.y_query).any()
    assert torch.equal(sinusoid_test_batch(cfg, 50, 3, None).y_query, held_out.y_query)
