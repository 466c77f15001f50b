"""Reptile (Nichol et al. 2018, arXiv 1803.02999): its update against the closed form on a quadratic, and a
seeded learning check on the sinusoid through the real config and builder."""

from __future__ import annotations

import pytest
import torch

from metarl.config import load_config
from metarl.families import family_of
from metarl.fewshot.learner import adaptation_curve
from metarl.fewshot.reptile import (
    adapt_on_minibatches,
    minibatch_indices,
    outer_step_size,
    reptile_update,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_reptile_update_equals_closed_form_on_quadratics(k):
    """L_i(w) = 1/2 (w - c_i)^T A (w - c_i): k SGD steps give phi_i = c_i + (I - lr A)^k (theta - c_i),
    and the update theta + eps mean_i (phi_i - theta)."""
    torch.manual_seed(0)
    d, n, lr, eps = 4, 5, 0.05, 0.7
    m = torch.randn(d, d, dtype=torch.float64)
    a = m @ m.T + torch.eye(d, dtype=torch.float64)
    c = torch.randn(n, d, dtype=torch.float64)
    theta = {"w": torch.randn(d, dtype=torch.float64)}

    def loss(params, data):
        ci, _ = data  # this step's minibatch: [1, d], the task's c
        r = params["w"] - ci[0]
        return 0.5 * r @ a @ r

    data = c[:, None, None, :].expand(n, k, 1, d)  # [tasks, steps, batch, d]: each step sees its task's c
    phis = adapt_on_minibatches(loss, theta, data, data, lr=lr, task_chunk=2)
    contraction = torch.linalg.matrix_power(torch.eye(d, dtype=torch.float64) - lr * a, k)
    phi_ref = c + (theta["w"] - c) @ contraction.T
    torch.testing.assert_close(phis["w"], phi_ref, rtol=1e-12, atol=1e-12)
    new = reptile_update(theta, phis, eps)
    torch.testing.assert_close(new["w"], theta["w"] + eps * (phi_ref - theta["w"]).mean(0), rtol=1e-12, atol=1e-12)


def test_outer_step_size_anneals_linearly_to_final():
    assert outer_step_size(1, 100, 1.0, 0.0) == 1.0
    assert outer_step_size(51, 100, 1.0, 0.0) == pytest.approx(0.5)
    assert outer_step_size(100, 100, 1.0, 0.2) == pytest.approx(0.208)


def test_minibatches_are_passes_without_replacement():
    idx = minibatch_indices(3, 10, 4, 5, torch.Generator().manual_seed(0))  # 20 points drawn: two passes
    assert idx.shape == (3, 5, 4)
    for t in range(3):
        flat = idx[t].flatten()
        assert sorted(flat[:10].tolist()) == list(range(10)) and sorted(flat[10:].tolist()) == list(range(10))
    assert minibatch_indices(2, 6, 0, 3, torch.Generator()).shape == (2, 3, 6)


def test_reptile_learns_the_sinusoid_quickly():
    """The shipped config, shortened: after 1,500 outer updates (a few seconds) the post-adaptation MSE on held-out
    tasks beats the same network's at initialisation, and the learner trains through the shared loop's interface."""
    cfg = load_config("sinusoid_reptile", ["num_iterations=1500", "meta_batch_size=5", "reptile.outer_lr=1.0",
                                           "eval.tasks=100"])
    learner = family_of(cfg).build_learner(cfg)
    batch = learner.val_batch

    def post_mse() -> float:
        curve = adaptation_curve(learner.module, learner.params(), batch, loss="mse", lr=cfg.inner.lr, steps=10)
        return float(curve[-1].mean())

    before = post_mse()
    for it in range(1, cfg.num_iterations + 1):
        metrics = learner.train_step(it, log=it == cfg.num_iterations)
    assert metrics["reptile/outer_lr"] == pytest.approx(1.0 / cfg.num_iterations)
    after = post_mse()
    assert after < 0.6 * before, (before, after)
    state = learner.state_dict()
    learner.load_state_dict(state)
    assert set(learner.validate()) == {"val/mse_pre", "val/mse_post"}
