"""``explore_std``: the pre-update episodes are sampled with the policy's std times c; the inner step (with the
policy's own log-probs) and the adapted policies are the policy's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.cli import main as cli_main
from metarl.config import ConfigError
from metarl.maml import detach_params, params_of
from metarl.rl.adapt import adapt_on_episodes, episodes_at
from metarl.rl.build import advantage_estimator, inner_loop, make_env, policy_module, sampler_for
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import adaptation_returns
from metarl.rl.learner import RLLearner
from metarl.rl.losses import action_log_probs, log_prob_gap
from metarl.rl.policies import widened
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)
NAV = "metarl/Navigation2D-v0"


def test_widened_shifts_log_std_only() -> None:
    params = {"mu.0.weight": torch.randn(3, 2), "log_std": torch.tensor([0.1, -0.4])}
    wide = widened(params, 2.0)
    assert torch.equal(wide["log_std"], params["log_std"] + math.log(2.0))
    assert wide["mu.0.weight"] is params["mu.0.weight"]
    assert widened(params, 1.0) == params
    with pytest.raises(ValueError, match="no log_std"):
        widened({"w": torch.zeros(1)}, 1.5)


def _curve(cfg, policy, tasks, seed: int = 7):
    params_out: list = []
    episodes_out: list[Episodes] = []
    sampler = sampler_for(cfg, seed)
    try:
        adaptation_returns(cfg, policy, tasks, steps=1, sampler=sampler, seed=seed, params_out=params_out,
                           episodes_out=episodes_out)
    finally:
        sampler.close()
    return params_out, episodes_out


def test_evaluation_widens_the_pre_update_episodes_only() -> None:
    """The same action noise, c times further from the mean at the first (common) state; the step is taken at
    theta's own log-probs (a hand-written REINFORCE step on task 0); the adapted policy samples with its own std."""
    c = 2.0
    cfg1, cfgc = tiny_cfg(NAV, "nav"), tiny_cfg(NAV, "nav", explore_std=c)
    env = make_env(cfg1)
    policy = policy_module(cfg1, env)
    tasks = env.unwrapped.sample_tasks(2, np.random.default_rng(0))
    env.close()
    theta = detach_params(params_of(policy))
    _, eps1 = _curve(cfg1, policy, tasks)
    paramsc, epsc = _curve(cfgc, policy, tasks)

    obs0 = eps1[0].observations[:, 0]
    assert torch.equal(obs0, epsc[0].observations[:, 0])  # the same reset states
    mean0 = policy(obs0).mean
    torch.testing.assert_close(epsc[0].actions[:, 0] - mean0, c * (eps1[0].actions[:, 0] - mean0))
    assert log_prob_gap(policy, widened(theta, c), epsc[0]) < 1e-4 < log_prob_gap(policy, theta, epsc[0])

    batch = epsc[0]
    adv = advantage_estimator(cfgc)(batch)
    task0 = episodes_at(batch, 0)
    leaf = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    logp = action_log_probs(policy, leaf, task0)
    loss = -(logp * adv[0] * task0.masks).sum() / task0.masks.sum()
    grads = torch.autograd.grad(loss, list(leaf.values()))
    by_hand = {k: theta[k] - cfgc.inner.lr * g for k, g in zip(leaf, grads, strict=True)}
    for k in theta:
        torch.testing.assert_close(paramsc[1][k][0], by_hand[k], rtol=1e-5, atol=1e-6)
    assert log_prob_gap(policy, paramsc[1], epsc[1], per_task=True) < 1e-4


def test_training_widens_the_pre_update_episodes_only() -> None:
    cfg = tiny_cfg(NAV, "nav", explore_std=1.5)
    learner = RLLearner(cfg)
    try:
        tasks = learner.sample_tasks(cfg.meta_batch_size, learner.np_rng)
        theta = detach_params(params_of(learner.module))
        (train,), valid = learner.sample_adapted(tasks)
        assert log_prob_gap(learner.module, widened(theta, 1.5), train) < 1e-4
        assert log_prob_gap(learner.module, theta, train) > 0.1
        adapted = adapt_on_episodes(learner.module, theta, [train], inner_loop(cfg), advantage_estimator(cfg))
        assert log_prob_gap(learner.module, adapted, valid, per_task=True) < 1e-4
    finally:
        learner.close()


def test_explore_std_is_checked_in_one_line(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="explore_std"):
        tiny_cfg(NAV, "nav", explore_std=0.0)
    walk = "tests.walk_env:metarl_test/Walk-v0"
    with pytest.raises(ConfigError, match="discrete actions .*set explore_std: 1"):
        policy_module(tiny_cfg(walk, "walk", explore_std=2.0, env={"kwargs": {"discrete": True}}))
    assert cli_main(["train", "navigation2d", "--set", "explore_std=-1", "--logdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "explore_std" in err[0]
