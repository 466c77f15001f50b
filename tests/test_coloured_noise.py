"""experiments/coloured_noise.py: AR(1) noise with unit variance, applied to the pre-update rollouts only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.rl.build import make_env, policy_module, sampler_for
from metarl.rl.evaluation import adaptation_returns
from metarl.rl.policies import policy_distribution
from tests.scripts import load_experiment
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("coloured_noise")


def test_ar1_keeps_unit_variance_and_correlates_by_rho_to_the_lag(script) -> None:
    white = torch.randn(60, 20_000, generator=torch.Generator().manual_seed(0))
    out = script.coloured(white, 0.8)
    assert torch.equal(out[0], white[0]) and torch.equal(script.coloured(white, 0.0), white)
    assert out[-1].std().item() == pytest.approx(1.0, abs=0.03)
    for lag in (1, 3):
        r = np.corrcoef(out[40].numpy(), out[40 + lag].numpy())[0, 1]
        assert r == pytest.approx(0.8**lag, abs=0.03)
    with pytest.raises(ValueError, match="--rho"):
        script.coloured(white, 1.0)


def test_only_the_pre_update_rollouts_are_coloured(script) -> None:
    """With rho near 1 consecutive pre-update actions barely change around the mean, while the adapted policies'
    noise stays white; outside the block the sampler is the plain one again."""
    cfg = tiny_cfg("metarl/Navigation2D-v0", "nav", policy={"hidden": [8], "activation": "tanh", "init_std": 0.01})
    env = make_env(cfg)
    policy = policy_module(cfg, env)
    tasks = env.unwrapped.sample_tasks(2, np.random.default_rng(0))
    env.close()

    def episodes():
        out: list = []
        params: list = []
        sampler = sampler_for(cfg, 5)
        try:
            adaptation_returns(cfg, policy, tasks, steps=1, sampler=sampler, seed=5, episodes_out=out,
                               params_out=params)
        finally:
            sampler.close()
        return [(batch, p) for batch, p in zip(out, params, strict=True)]

    def step_change(batch, params) -> float:
        """Mean |eps_{t+1} - eps_t| / mean |eps_t| over the first steps: about 1.1 for white noise.
        ``params``: shared (theta, pre-update) or stacked per task (adapted); ``batch``: ``[N, T, B, ...]``."""
        n = batch.observations.shape[0]
        stacked = {k: v if v.dim() == p.dim() + 1 else v.expand(n, *v.shape)
                   for (k, v), p in zip(params.items(), policy.parameters(), strict=True)}
        with torch.no_grad():
            mean = policy_distribution(policy, stacked, batch.observations, per_task=True).mean
        noise = batch.actions - mean
        return float((noise[:, 1:6] - noise[:, :5]).abs().mean() / noise[:, :6].abs().mean())

    with script.coloured_pre_update(0.99):
        pre, post = episodes()
    assert step_change(*pre) < 0.3 < step_change(*post)
    plain_pre, _ = episodes()
    assert step_change(*plain_pre) > 0.3
