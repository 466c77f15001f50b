"""TRPO machinery (metarl/trpo.py) against explicit linear algebra and hand-made objectives."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from metarl.maml import Params, detach_params, functional_forward, params_of
from metarl.rl.episodes import Episodes
from metarl.rl.losses import kl_divergence, surrogate_loss
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_distribution, sample_actions
from metarl.trpo import conjugate_gradient, fisher_vector_product, flatten, trust_region_step, unflatten

torch.set_num_threads(1)


def tiny_problem(kind: str, seed: int = 0) -> tuple[torch.nn.Module, Params, Episodes, torch.Tensor]:
    """A 1-hidden-layer float64 policy and one task of ragged episodes sampled from it."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    T, B, obs_dim = 6, 4, 3
    if kind == "gaussian":
        policy = GaussianMLPPolicy(obs_dim, 2, hidden_sizes=(4,), init_std=0.7).double()
    else:
        policy = CategoricalMLPPolicy(obs_dim, 3, hidden_sizes=(4,)).double()
    theta = detach_params(params_of(policy))
    obs = torch.randn(T, B, obs_dim, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 5, 1])
    masks = (torch.arange(T)[:, None] < lengths[None, :]).double()
    with torch.no_grad():
        dist = policy_distribution(policy, theta, obs, per_task=False)
        actions = sample_actions(dist, g)
        log_probs = dist.log_prob(actions)
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64) * masks
    advantages = torch.randn(T, B, generator=g, dtype=torch.float64) * masks
    return policy, theta, Episodes(obs, actions, rewards, masks, log_probs), advantages


def test_flatten_unflatten_roundtrip() -> None:
    like = {"a": torch.randn(2, 3), "b": torch.randn(4), "c": torch.randn(1, 1, 2)}
    vec = flatten(like)
    assert vec.shape == (12,)
    back = unflatten(vec, like)
    assert list(back) == list(like)
    for k in like:
        assert torch.equal(back[k], like[k])
    with pytest.raises(ValueError):
        unflatten(torch.zeros(11), like)


@pytest.mark.parametrize("n", [5, 30])
def test_conjugate_gradient_solves_spd_system(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=4 * n, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-8)


def test_conjugate_gradient_stops_early_on_small_residual() -> None:
    calls = []

    def Avp(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return 2.0 * v

    x = conjugate_gradient(Avp, torch.ones(3, dtype=torch.float64), iters=10)
    torch.testing.assert_close(x, torch.full((3,), 0.5, dtype=torch.float64))
    assert len(calls) == 1  # A = 2I is solved in one iteration, then the residual is 0


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_fvp_equals_explicit_hessian_of_kl(kind: str) -> None:
    policy, theta, episodes, _ = tiny_problem(kind)
    x0 = flatten(theta)

    def kl_of_flat(x: torch.Tensor) -> torch.Tensor:
        return kl_divergence(policy, unflatten(x, theta), theta, episodes)

    H = torch.autograd.functional.hessian(kl_of_flat, x0)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    fvp = fisher_vector_product(kl_divergence(policy, leaves, theta, episodes), leaves, damping=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(fvp(v), H @ v + 0.1 * v, rtol=1e-9, atol=1e-11)


def test_hessian_of_kl_is_the_gaussian_fisher() -> None:
    """Independent check: at pi_new = pi_old, Hess KL = mean_s J_mu^T Sigma^-1 J_mu + 2 on log-std."""
    policy, theta, episodes, _ = tiny_problem("gaussian")
    x0 = flatten(theta)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    fvp = fisher_vector_product(kl_divergence(policy, leaves, theta, episodes), leaves, damping=0.0)
    F_fvp = torch.stack([fvp(e) for e in torch.eye(x0.numel(), dtype=torch.float64)], dim=1)

    live_obs = episodes.observations[episodes.masks > 0]  # [S, obs]

    def means(x: torch.Tensor) -> torch.Tensor:
        return functional_forward(policy, unflatten(x, theta), live_obs).mean  # [S, act]

    J = torch.autograd.functional.jacobian(means, x0)  # [S, act, P]
    inv_var = torch.exp(-2 * theta["log_std"])  # [act]
    F = torch.einsum("sap,a,saq->pq", J, inv_var, J) / live_obs.shape[0]
    offset = 0
    for name, t in theta.items():
        if name == "log_std":
            idx = torch.arange(offset, offset + t.numel())
            F[idx, idx] += 2.0
        offset += t.numel()
    torch.testing.assert_close(F_fvp, F, rtol=1e-9, atol=1e-11)


def _policy_objective(policy, theta, episodes, advantages):
    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            surrogate_loss(policy, p, episodes, advantages),
            kl_divergence(policy, p, theta, episodes),
        )

    return objective


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_step_improves_surrogate_within_kl_bound(kind: str) -> None:
    policy, theta, episodes, advantages = tiny_problem(kind)
    before = {k: v.clone() for k, v in theta.items()}
    max_kl = 0.01
    new, m = trust_region_step(_policy_objective(policy, theta, episodes, advantages), theta, max_kl=max_kl)
    assert m["accepted"] == 1.0
    for k in theta:  # the input is untouched
        assert torch.equal(theta[k], before[k])
    with torch.no_grad():
        old_d = policy_distribution(policy, theta, episodes.observations, per_task=False)
        new_d = policy_distribution(policy, new, episodes.observations, per_task=False)
        kl = torch.distributions.kl_divergence(old_d, new_d)
        realised_kl = float((kl * episodes.masks).sum() / episodes.masks.sum())
        realised_loss = float(surrogate_loss(policy, new, episodes, advantages))
    assert 0.0 < realised_kl <= max_kl
    assert realised_kl == pytest.approx(m["kl"], rel=1e-9)
    assert realised_loss == pytest.approx(m["surrogate_after"], rel=1e-9)
    assert m["surrogate_after"] < m["surrogate_before"]
    assert m["surrogate_before"] == pytest.approx(
        -float((advantages * episodes.masks).sum() / episodes.masks.sum())
    )


def test_full_step_is_scaled_natural_gradient() -> None:
    """With enough CG iterations, the first candidate is sqrt(2 delta / s^T F s) s, s = (F+cI)^-1 g."""
    policy, theta, episodes, advantages = tiny_problem("gaussian", seed=3)
    objective = _policy_objective(policy, theta, episodes, advantages)
    x0 = flatten(theta)
    damping, max_kl = 0.1, 1e-4  # a small trust region so that the full step is accepted
    new, m = trust_region_step(objective, theta, max_kl=max_kl, cg_iters=200, cg_damping=damping)
    assert m["accepted"] == 1.0 and m["ls_steps"] == 0.0

    def kl_of_flat(x: torch.Tensor) -> torch.Tensor:
        return kl_divergence(policy, unflatten(x, theta), theta, episodes)

    def loss_of_flat(x: torch.Tensor) -> torch.Tensor:
        return surrogate_loss(policy, unflatten(x, theta), episodes, advantages)

    A = torch.autograd.functional.hessian(kl_of_flat, x0) + damping * torch.eye(
        x0.numel(), dtype=torch.float64
    )
    g = torch.autograd.functional.jacobian(loss_of_flat, x0)
    s = torch.linalg.solve(A, g)
    expected = x0 - math.sqrt(2 * max_kl / float(s @ A @ s)) * s
    torch.testing.assert_close(flatten(new), expected, rtol=1e-6, atol=1e-9)
    assert m["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-9)


# Hand-made objectives on a 5-vector; the "KL" 0.5 |p - p0|^2 + c |p - p0|^4 has Hessian I at p0.
P0 = {"w": torch.zeros(5, dtype=torch.float64)}


def _quadratic_kl(p: Params, quartic: float) -> torch.Tensor:
    sq = (p["w"] - P0["w"]).pow(2).sum()
    return 0.5 * sq + quartic * sq**2


def test_backtracks_until_the_real_kl_is_within_bound() -> None:
    a = torch.ones(5, dtype=torch.float64)

    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return -(a * p["w"]).sum(), _quadratic_kl(p, quartic=100.0)

    new, m = trust_region_step(objective, P0, max_kl=0.01, cg_damping=0.0)
    # The full step has length sqrt(2 * 0.01); 0.5 t^2 + 100 t^4 <= 0.01 needs t <= 0.0884, i.e. 3
    # backtracks of 0.8.
    assert m["accepted"] == 1.0 and m["ls_steps"] == 3.0
    t = math.sqrt(0.02) * 0.8**3
    torch.testing.assert_close(new["w"], t * a / a.norm())
    assert m["kl"] <= 0.01


def test_rejects_a_step_that_makes_the_surrogate_worse() -> None:
    """loss = -a.p + |p|^2 with |a| tiny: every trial step (length >= 0.8^14 sqrt(0.02)) overshoots."""
    a = torch.full((5,), 1e-3, dtype=torch.float64)
    calls = []

    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return -(a * p["w"]).sum() + p["w"].pow(2).sum(), _quadratic_kl(p, quartic=0.0)

    params = {"w": P0["w"].clone()}
    new, m = trust_region_step(objective, params, max_kl=0.01, ls_max_steps=15)
    assert m["accepted"] == 0.0 and m["ls_steps"] == 15.0 and m["kl"] == 0.0
    assert m["surrogate_after"] == m["surrogate_before"] == 0.0
    assert len(calls) == 1 + 15
    assert torch.equal(new["w"], P0["w"]) and torch.equal(params["w"], P0["w"])


def test_rejects_when_every_candidate_violates_the_kl_bound() -> None:
    a = torch.ones(5, dtype=torch.float64)

    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return -(a * p["w"]).sum(), _quadratic_kl(p, quartic=1e9)

    new, m = trust_region_step(objective, P0, max_kl=0.01)
    assert m["accepted"] == 0.0
    assert torch.equal(new["w"], P0["w"])


def test_rejects_non_finite_candidates() -> None:
    a = torch.ones(5, dtype=torch.float64)

    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        loss = -(a * p["w"]).sum()
        if not torch.is_grad_enabled():  # every line-search evaluation blows up
            loss = loss * float("nan")
        return loss, _quadratic_kl(p, quartic=0.0)

    new, m = trust_region_step(objective, P0, max_kl=0.01)
    assert m["accepted"] == 0.0 and torch.equal(new["w"], P0["w"])


def test_zero_gradient_takes_no_step() -> None:
    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return p["w"].pow(2).sum(), _quadratic_kl(p, quartic=0.0)

    new, m = trust_region_step(objective, P0, max_kl=0.01)
    assert m["accepted"] == 0.0 and m["grad_norm"] == 0.0
    assert torch.equal(new["w"], P0["w"])


def test_live_module_parameters_are_neither_written_nor_given_grads() -> None:
    policy, theta, episodes, advantages = tiny_problem("gaussian")
    live = params_of(policy)
    new, m = trust_region_step(_policy_objective(policy, theta, episodes, advantages), live, max_kl=0.01)
    assert m["accepted"] == 1.0
    for k, p in live.items():
        assert torch.equal(p.detach(), theta[k])
        assert p.grad is None
        assert not new[k].requires_grad


def test_conjugate_gradient_residual_gives_the_quadratic_form() -> None:
    torch.manual_seed(11)
    m = torch.randn(6, 6, dtype=torch.float64)
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    x, r = conjugate_gradient(lambda v: A @ v, b, iters=3, return_residual=True)  # not converged
    torch.testing.assert_close(r, b - A @ x)
    torch.testing.assert_close(torch.dot(x, b - r), x @ A @ x)


def test_rescaled_line_search_jumps_to_the_bound_an_underestimated_fisher_overshoots() -> None:
    """A Fisher 20x too flat (the preconditioner's KL is the true one / 20) puts the first
    candidate at 20x the bound. Plain backtracking needs 7 factors of 0.8 (0.8^14 * 20 <= 1);
    refitting the quadratic on the measured KL lands inside at the second candidate, at
    0.95^2 of the bound, in the same direction."""
    a = torch.ones(5, dtype=torch.float64)

    def objective(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return -(a * p["w"]).sum(), _quadratic_kl(p, quartic=0.0)

    def flat_fisher(p: Params, kl: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return fisher_vector_product(_quadratic_kl(p, quartic=0.0) / 20.0, p, 0.0)

    plain_new, plain = trust_region_step(objective, P0, max_kl=0.01, cg_damping=0.0, fisher=flat_fisher)
    new, m = trust_region_step(objective, P0, max_kl=0.01, cg_damping=0.0, fisher=flat_fisher, ls_rescale=True)
    assert plain["accepted"] == m["accepted"] == 1.0
    assert plain["ls_steps"] == 7.0 and m["ls_steps"] == 1.0
    assert m["kl"] == pytest.approx(0.95**2 * 0.01, rel=1e-9) and plain["kl"] == pytest.approx(20 * 0.8**14 * 0.01)
    torch.testing.assert_close(new["w"] / new["w"].norm(), plain_new["w"] / plain_new["w"].norm())
    # with the exact Fisher the first candidate is inside: both line searches take the full step
    exact = [trust_region_step(objective, P0, max_kl=0.01, cg_damping=0.0, ls_rescale=r)[1] for r in (False, True)]
    assert exact[0]["ls_steps"] == exact[1]["ls_steps"] == 0.0
