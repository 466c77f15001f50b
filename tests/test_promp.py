"""ProMP (Rothfuss et al. 2019): its clipped objective, KL penalty, Adam steps and coefficient rule
against hand computations and finite differences, and a short training run through the CLI parts."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.maml import Params, detach_params, params_of
from metarl.rl.adapt import InnerBatch, InnerLoop, adapt_on_episodes
from metarl.rl.episodes import Episodes
from metarl.rl.losses import kl_divergence, old_distribution
from metarl.rl.objective import meta_batch, meta_objective
from metarl.rl.policies import GaussianMLPPolicy, policy_distribution, sample_actions
from metarl.rl.promp import ProMP, adapt_kl_coeff, clipped_ratio_loss
from metarl.trpo import flatten, unflatten

torch.set_num_threads(1)
N, T, B = 2, 5, 3


def make_problem(seed: int, **kwargs) -> tuple[ProMP, GaussianMLPPolicy, list[Episodes], Episodes]:
    """A float64 Gaussian policy, its ProMP and synthetic stacked episodes: pre-update sampled by
    theta, post-update by the LVC-adapted params (reward pulls a + s towards a task goal)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), activation="tanh", init_std=0.8).double()
    algo = ProMP(policy, inner=InnerLoop(lr=0.5, estimator="lvc"), **kwargs)
    g = torch.Generator().manual_seed(seed)

    def rollouts(params: Params, per_task: bool) -> Episodes:
        obs = torch.randn(N, T, B, 2, generator=g, dtype=torch.float64)
        masks = (torch.arange(T)[None, :, None] < torch.randint(2, T + 1, (N, 1, B), generator=g)).double()
        with torch.no_grad():
            dist = policy_distribution(policy, params, obs, per_task=per_task)
            actions = sample_actions(dist, g)
            log_probs = dist.log_prob(actions)
        goals = torch.tensor([[1.0, -1.0], [-0.5, 0.5]], dtype=torch.float64)[:, None, None, :]
        return Episodes(obs, actions, -(actions + obs - goals).pow(2).sum(-1) * masks, masks, log_probs)

    theta = detach_params(params_of(policy))
    train = [rollouts(theta, False)]
    valid = rollouts(adapt_on_episodes(policy, theta, train, algo.inner, algo.advantages), True)
    return algo, policy, train, valid


def test_clipped_ratio_loss_is_ppos_min_of_clipped_and_unclipped_terms() -> None:
    """Hand-computed: inside the clip range the term is r A; outside, min(r A, clip(r) A) picks the
    pessimistic one: clipped for A > 0 and r > 1 + eps and for A < 0 and r < 1 - eps, unclipped for
    A < 0 and r > 1 + eps."""
    logp_old = torch.zeros(1, 1, 4, dtype=torch.float64)
    ratios = torch.tensor([1.1, 1.5, 1.5, 0.5], dtype=torch.float64)
    adv = torch.tensor([[[2.0, 2.0, -2.0, -1.0]]], dtype=torch.float64)
    masks = torch.ones(1, 1, 4, dtype=torch.float64)
    episodes = Episodes(torch.zeros(1, 1, 4, 1), torch.zeros(1, 1, 4, 1), torch.zeros(1, 1, 4), masks, logp_old)
    loss = clipped_ratio_loss(0.3)(None, ratios.log().view(1, 1, 4), InnerBatch(episodes, adv))
    expected = -(1.1 * 2.0 + 1.3 * 2.0 + 1.5 * -2.0 + 0.7 * -1.0) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_promp_objective_gradient_matches_finite_differences() -> None:
    """The objective differentiated through the LVC adaptation (second order), the clipped
    surrogate and the pre-update KL penalty, against central differences, away from theta_0 (so
    the KL term and the clipping are active)."""
    algo, policy, train, valid = make_problem(1, kl_coeff=0.3, clip_eps=0.05)
    batch = meta_batch(train, valid, algo.advantages)
    theta = detach_params(params_of(policy))
    with torch.no_grad():
        old = meta_objective(policy, theta, batch, algo.inner, chunk=algo.task_chunk).old
        pre_old = old_distribution(policy, theta, batch.train[0].episodes)
    x0 = flatten(theta) + 0.2 * torch.randn(flatten(theta).shape, generator=torch.Generator().manual_seed(5),
                                            dtype=torch.float64)

    def objective(flat: torch.Tensor) -> torch.Tensor:
        return algo._loss(unflatten(flat, theta), batch, old, pre_old)[0]

    leaves = {k: v.clone().requires_grad_(True) for k, v in unflatten(x0, theta).items()}
    value, post, outer_kl, inner_kl = algo._loss(leaves, batch, old, pre_old)
    grad = flatten(torch.autograd.grad(value, list(leaves.values())))
    assert float(inner_kl.detach()) > 1e-3 and float(post.detach()) != 0.0
    fd = torch.empty_like(x0)
    h = 1e-6
    with torch.no_grad():
        for i in range(x0.numel()):
            e = torch.zeros_like(x0)
            e[i] = h
            fd[i] = (objective(x0 + e) - objective(x0 - e)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    # the penalty is KL(pi_theta_o || pi_theta) on the pre-update states, computed independently
    kl = kl_divergence(policy, unflatten(x0, theta), theta, train[0])
    assert float(inner_kl.detach()) == pytest.approx(float(kl), rel=1e-10)


def test_first_adam_step_moves_each_parameter_by_lr_against_its_gradient_sign() -> None:
    """At theta_0 the ratio is 1 (nothing clipped) and the KL penalty has zero gradient, so the
    first step's gradient is the meta-gradient of the plain likelihood-ratio surrogate through
    the LVC adaptation; Adam's first update is lr * g / (|g| + eps) (bias-corrected moments)."""
    algo, policy, train, valid = make_problem(2, steps=1, lr=1e-2, kl_coeff=0.7)
    batch = meta_batch(train, valid, algo.advantages)
    theta = detach_params(params_of(policy))
    x0 = flatten(theta).clone()
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    surrogate = meta_objective(policy, leaves, batch, algo.inner).loss
    g = flatten(torch.autograd.grad(surrogate, list(leaves.values())))
    metrics = algo.step(train, valid)
    moved = flatten(params_of(policy)).detach()
    torch.testing.assert_close(moved, x0 - 1e-2 * g / (g.abs() + 1e-8), rtol=1e-9, atol=1e-12)
    assert metrics["loss_after"] < metrics["loss_before"]
    assert metrics["logp_gap"] < 1e-10 and metrics["inner_kl"] > 0


def test_steps_lower_the_objective_and_keep_adam_state_across_iterations() -> None:
    algo, policy, train, valid = make_problem(3, steps=5)
    m = algo.step(train, valid)
    assert m["loss_after"] < m["loss_before"]
    assert {"loss_before", "loss_after", "surrogate_after", "kl", "inner_kl", "kl_coeff", "entropy",
            "logp_gap"} == set(m)
    state = algo.state_dict()
    assert all(s["step"] == 5 for s in state["optimizer"]["state"].values())
    twin, twin_policy, *_ = make_problem(3, steps=5)
    twin.load_state_dict(state)
    assert twin.optimizer.state_dict()["state"][0]["step"] == 5 and twin.kl_coeff == algo.kl_coeff


def test_adaptive_kl_coefficient_halves_and_doubles_around_the_target() -> None:
    assert adapt_kl_coeff(1.0, 0.001, 0.01) == 0.5  # below target / 1.5
    assert adapt_kl_coeff(1.0, 0.02, 0.01) == 2.0  # above 1.5 target
    assert adapt_kl_coeff(1.0, 0.01, 0.01) == 1.0
    algo, policy, train, valid = make_problem(4, adaptive_kl=True, kl_coeff=1e-3, target_kl=1e3)
    algo.step(train, valid)
    assert algo.kl_coeff == pytest.approx(5e-4)  # the KL is far below a target of 1000
    fixed, _, train, valid = make_problem(4, kl_coeff=1e-3, target_kl=1e3)
    fixed.step(train, valid)
    assert fixed.kl_coeff == 1e-3
    with pytest.raises(ValueError, match="clip_eps"):
        ProMP(policy, clip_eps=1.5)


def test_promp_trains_validates_evaluates_and_resumes_through_the_runner(tmp_path) -> None:
    """``algorithm: promp`` through ``metarl.training.train``: its metrics are logged under ``promp/``, the
    Adam state and coefficient are checkpointed (resume is bit-exact) and evaluation adapts it."""
    from metarl.checkpoint import load_checkpoint
    from metarl.config import config_from_dict
    from metarl.evaluate import evaluate
    from metarl.training import train

    cfg = config_from_dict({
        "benchmark": "rl", "name": "promp-test", "seed": 2, "num_iterations": 4, "meta_batch_size": 3,
        "algorithm": "promp", "inner_estimator": "lvc", "log_every": 1, "checkpoint_every": 100,
        "eval": {"every": 2, "tasks": 3, "test_tasks": 3}, "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
        "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 3}, "policy": {"hidden": [8, 8]},
        "promp": {"adaptive_kl": True},
    })
    full = train(cfg, logdir=tmp_path / "full", quiet=True)
    header = (full / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("promp/loss_before", "promp/loss_after", "promp/inner_kl", "promp/kl_coeff", "val/return_post"):
        assert key in header, key
    part = train(cfg, logdir=tmp_path / "part", quiet=True, stop_after=2)
    train(resume=part, quiet=True)
    a, b = load_checkpoint(full)["learner"], load_checkpoint(part)["learner"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert a["algorithm"]["kl_coeff"] == b["algorithm"]["kl_coeff"]
    res = evaluate(full, n_tasks=3, steps=1, seed=1)
    assert len(res["by_step"]) == 2 and all(math.isfinite(s["mean"]) for s in res["by_step"])


def test_promp_config_values_are_validated() -> None:
    from metarl.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="promp.clip_eps"):
        config_from_dict({"benchmark": "rl", "algorithm": "promp", "promp": {"clip_eps": 2.0}})
