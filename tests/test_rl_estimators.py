"""Returns, GAE, normalisation, linear baseline and policy-gradient losses vs brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.maml import detach_params, params_of
from metarl.rl.advantages import discounted_returns, gae, normalize_advantages
from metarl.rl.baseline import baseline_features, fit_linear_baseline, linear_baseline_values
from metarl.rl.episodes import Episodes
from metarl.rl.losses import entropy, kl_divergence, masked_mean, reinforce_loss, surrogate_loss
from metarl.rl.policies import GaussianMLPPolicy, policy_distribution, sample_actions

torch.set_num_threads(1)

LENGTHS = [[7, 3, 1, 5], [2, 7, 6, 4]]  # two tasks, ragged episodes, horizon 7


def ragged(seed: int, obs_dim: int = 2) -> Episodes:
    """Stacked episodes [N=2, T=7, B=4] whose padding holds garbage (it must be ignored)."""
    g = torch.Generator().manual_seed(seed)
    N, T, B = 2, 7, 4
    masks = (torch.arange(T)[None, :, None] < torch.tensor(LENGTHS)[:, None, :]).double()
    obs = torch.randn(N, T, B, obs_dim, generator=g, dtype=torch.float64)
    rewards = torch.randn(N, T, B, generator=g, dtype=torch.float64)
    rewards = torch.where(masks > 0, rewards, torch.full_like(rewards, float("nan")))  # garbage padding
    obs = torch.where(masks[..., None] > 0, obs, torch.full_like(obs, float("inf")))
    actions = torch.randn(N, T, B, 2, generator=g, dtype=torch.float64)
    log_probs = torch.randn(N, T, B, generator=g, dtype=torch.float64)
    return Episodes(obs, actions, rewards, masks, log_probs)


def brute_force(rewards, values, lengths, gamma, lam):
    """Per-episode Python loops: returns R_t and GAE A_t (Schulman et al. 2016, eq. 16)."""
    N, T, B = rewards.shape
    R = np.zeros((N, T, B))
    A = np.zeros((N, T, B))
    for n in range(N):
        for b in range(B):
            L = lengths[n][b]
            ret, adv = 0.0, 0.0
            for t in reversed(range(L)):
                next_v = float(values[n, t + 1, b]) if t + 1 < L else 0.0
                delta = float(rewards[n, t, b]) + gamma * next_v - float(values[n, t, b])
                adv = delta + gamma * lam * adv
                ret = float(rewards[n, t, b]) + gamma * ret
                A[n, t, b], R[n, t, b] = adv, ret
    return R, A


@pytest.mark.parametrize("gamma,lam", [(0.99, 1.0), (0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_returns_and_gae_match_brute_force(gamma: float, lam: float) -> None:
    e = ragged(0)
    values = torch.randn(e.rewards.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values = torch.where(e.masks > 0, values, torch.full_like(values, float("nan")))  # ignored after the end
    R, A = brute_force(e.rewards, values, LENGTHS, gamma, lam)
    returns = discounted_returns(e.rewards, e.masks, gamma)
    adv = gae(e.rewards, values, e.masks, gamma, lam)
    np.testing.assert_allclose(returns.numpy(), R, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(adv.numpy(), A, rtol=1e-12, atol=1e-12)
    if lam == 1.0:
        torch.testing.assert_close(adv, torch.where(e.masks > 0, returns - values, 0.0))
    if lam == 0.0:  # one-step TD errors
        next_alive = torch.cat([e.masks[:, 1:], torch.zeros_like(e.masks[:, :1])], dim=1) > 0
        next_v = torch.where(next_alive, torch.cat([values[:, 1:], values[:, :1]], dim=1), 0.0)
        torch.testing.assert_close(adv, torch.where(e.masks > 0, e.rewards + gamma * next_v - values, 0.0))


def test_gae_of_one_task_equals_its_slice_of_the_stack() -> None:
    e = ragged(2)
    values = torch.randn(e.rewards.shape, dtype=torch.float64)
    stacked = gae(e.rewards, values, e.masks, 0.99, 0.9)
    for n, task in enumerate(e.unstack()):
        torch.testing.assert_close(gae(task.rewards, values[n], task.masks, 0.99, 0.9), stacked[n])


def test_normalize_advantages_over_live_steps_per_task() -> None:
    e = ragged(3)
    adv = torch.where(e.masks > 0, e.rewards * 3 + 2, torch.full_like(e.rewards, float("inf")))
    out = normalize_advantages(adv, e.masks)
    for n in range(2):
        live = out[n][e.masks[n] > 0]
        ref = adv[n][e.masks[n] > 0]
        assert float(live.mean()) == pytest.approx(0.0, abs=1e-12)
        assert float(live.std(unbiased=False)) == pytest.approx(1.0, rel=1e-6)
        torch.testing.assert_close(live, (ref - ref.mean()) / (ref.std(unbiased=False) + 1e-8))
    assert torch.all(out[e.masks == 0] == 0)


def test_baseline_features_are_the_documented_ones() -> None:
    e = ragged(4)
    feats = baseline_features(e.observations * 20, e.masks)  # *20 to exercise the clip at 10
    assert feats.shape == (2, 7, 4, 2 * 2 + 4)
    n, t, b = 1, 5, 2
    o = (e.observations[n, t, b] * 20).clamp(-10, 10)
    s = t / 100
    expected = torch.cat([o, o**2, torch.tensor([s, s**2, s**3, 1.0], dtype=torch.float64)])
    torch.testing.assert_close(feats[n, t, b], expected)


def test_baseline_fit_equals_numpy_lstsq_per_task() -> None:
    """Ridge with a tiny coefficient = least squares on the live steps (episodes long enough
    for the time features to be well conditioned, as in real use)."""
    g = torch.Generator().manual_seed(5)
    N, T, B = 2, 150, 3
    lengths = torch.tensor([[150, 80, 121], [64, 150, 99]])
    masks = (torch.arange(T)[None, :, None] < lengths[:, None, :]).double()
    obs = torch.randn(N, T, B, 2, generator=g, dtype=torch.float64).cumsum(dim=1) * 0.3
    rewards = torch.randn(N, T, B, generator=g, dtype=torch.float64) - obs.norm(dim=-1)
    e = Episodes(obs, torch.zeros(N, T, B, 2, dtype=torch.float64), rewards * masks, masks, rewards)
    gamma = 0.95
    values = linear_baseline_values(e, gamma, reg_coeff=1e-12)
    feats = baseline_features(e.observations, e.masks)
    returns = discounted_returns(e.rewards, e.masks, gamma)
    for n in range(N):
        live = (e.masks[n] > 0).numpy()
        X = feats[n].numpy()[live]  # [live steps, F]
        w, *_ = np.linalg.lstsq(X, returns[n].numpy()[live], rcond=None)
        np.testing.assert_allclose(values[n].numpy()[live], X @ w, rtol=1e-7, atol=1e-9)
    assert torch.all(values[e.masks == 0] == 0)
    # the batched solve equals a single-task solve
    w_all = fit_linear_baseline(feats, returns, e.masks, reg_coeff=1e-5)
    w_one = fit_linear_baseline(feats[1], returns[1], e.masks[1], reg_coeff=1e-5)
    torch.testing.assert_close(w_all[1], w_one)


def test_baseline_fit_of_ant_sized_features_on_two_threads() -> None:
    """The Ant's 214 features (105-float observation), mostly-zero contact columns, two tasks, two
    torch threads: torch 2.13's batched LU solve fails outright there; the fit must match a per-task
    numpy solve of the same ridge system."""
    g = torch.Generator().manual_seed(3)
    N, T, B, obs_dim = 2, 60, 2, 105
    obs = torch.randn(N, T, B, obs_dim, generator=g, dtype=torch.float64)
    obs[..., 27:] = 0.0  # the contact forces: zero while no leg presses on anything
    masks = (torch.arange(T)[None, :, None] < torch.tensor([[55, 60], [48, 57]])[:, None, :]).double()
    returns = torch.randn(N, T, B, generator=g, dtype=torch.float64) * masks
    feats = baseline_features(obs, masks)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = fit_linear_baseline(feats, returns, masks, reg_coeff=1e-5)
    finally:
        torch.set_num_threads(threads)
    for n in range(N):
        live = masks[n].numpy().astype(bool)
        X, y = feats[n].numpy()[live], returns[n].numpy()[live]
        expected = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ y)
        np.testing.assert_allclose(w[n].numpy(), expected, rtol=1e-6, atol=1e-8)


def test_baseline_fails_loudly_on_non_finite_data() -> None:
    e = ragged(6)
    rewards = e.rewards.clone()
    rewards[0, 0, 0] = float("nan")
    bad = Episodes(e.observations, e.actions, rewards, e.masks, e.log_probs)
    with pytest.raises(FloatingPointError):
        linear_baseline_values(bad, 0.99)


# ----------------------------------------------------------------------------- losses


def gaussian_policy(obs_dim: int = 2, hidden: tuple[int, ...] = (5,)) -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(obs_dim, 2, hidden_sizes=hidden, init_std=0.8).double()


def test_losses_ignore_padding_values_and_gradients() -> None:
    policy = gaussian_policy()
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params_of(policy).items()}
    e = ragged(7)
    adv = torch.randn(e.rewards.shape, dtype=torch.float64) * e.masks
    dead = e.masks == 0
    junk = Episodes(
        torch.where(dead[..., None], torch.full_like(e.observations, float("nan")), e.observations),
        torch.where(dead[..., None], torch.full_like(e.actions, float("inf")), e.actions),
        e.rewards,
        e.masks,
        torch.where(dead, torch.full_like(e.log_probs, -1e30), e.log_probs),  # exp would overflow
    )
    for fn in (reinforce_loss, surrogate_loss):
        a = fn(policy, theta, e, adv)
        b = fn(policy, theta, junk, adv)
        torch.testing.assert_close(a, b)
        ga = torch.autograd.grad(a, list(theta.values()))
        gb = torch.autograd.grad(b, list(theta.values()))
        for x, y in zip(ga, gb, strict=True):
            assert torch.isfinite(y).all()
            torch.testing.assert_close(x, y)


def test_surrogate_at_sampling_params_has_the_reinforce_gradient() -> None:
    policy = gaussian_policy()
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params_of(policy).items()}
    e = ragged(8)
    with torch.no_grad():
        logp = policy_distribution(policy, theta, e.observations, per_task=False).log_prob(e.actions)
    e = Episodes(e.observations, e.actions, e.rewards, e.masks, logp)
    adv = torch.randn(e.rewards.shape, dtype=torch.float64) * e.masks
    s = surrogate_loss(policy, theta, e, adv)
    r = reinforce_loss(policy, theta, e, adv)
    assert float(s.detach()) == pytest.approx(-float(masked_mean(adv, e.masks)), rel=1e-12)
    for x, y in zip(
        torch.autograd.grad(s, list(theta.values())),
        torch.autograd.grad(r, list(theta.values())),
        strict=True,
    ):
        torch.testing.assert_close(x, y)
    # the KL vanishes at the sampling params, with zero gradient
    kl = kl_divergence(policy, theta, detach_params(theta), e)
    assert float(kl.detach()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in torch.autograd.grad(kl, list(theta.values())))


def test_losses_per_task_equal_mean_of_per_task_losses() -> None:
    policy = gaussian_policy()
    base = detach_params(params_of(policy))
    g = torch.Generator().manual_seed(9)
    stacked = {k: v + 0.1 * torch.randn((2, *v.shape), generator=g, dtype=v.dtype) for k, v in base.items()}
    e = ragged(9)
    adv = torch.randn(e.rewards.shape, generator=g, dtype=torch.float64) * e.masks
    tasks = e.unstack()
    one = [{k: v[n] for k, v in stacked.items()} for n in range(2)]
    for fn in (reinforce_loss, surrogate_loss):
        batched = fn(policy, stacked, e, adv, per_task=True)
        looped = sum(fn(policy, one[n], tasks[n], adv[n]) for n in range(2)) / 2
        torch.testing.assert_close(batched, looped)
    kl_b = kl_divergence(
        policy, stacked, {k: v.expand(2, *v.shape) for k, v in base.items()}, e, per_task=True
    )
    kl_l = sum(kl_divergence(policy, one[n], base, tasks[n]) for n in range(2)) / 2
    torch.testing.assert_close(kl_b, kl_l)
    assert float(kl_b) > 0
    ent_b = entropy(policy, stacked, e, per_task=True)
    ent_l = sum(entropy(policy, one[n], tasks[n]) for n in range(2)) / 2
    torch.testing.assert_close(ent_b, ent_l)


def test_policy_gradient_matches_finite_differences_of_expected_return() -> None:
    """One-step bandit: a ~ N(mu, sigma^2), mu = w * 1 + b, r = -(a - c)^2.

    J(theta) = E[r] = -((mu - c)^2 + sigma^2) in closed form. The REINFORCE estimate
    -grad reinforce_loss (advantage = r - mean r) must match central differences of J up
    to its own Monte-Carlo error, which is computed from the per-sample scores.
    """
    policy = GaussianMLPPolicy(1, 1, hidden_sizes=(), init_std=0.8).double()
    with torch.no_grad():
        policy.mu[0].weight.fill_(0.3)
        policy.mu[0].bias.fill_(0.2)
    theta = detach_params(params_of(policy))
    c = 1.1

    def expected_return(p: dict[str, torch.Tensor]) -> float:
        mu = float(p["mu.0.weight"].sum() + p["mu.0.bias"].sum())
        return -((mu - c) ** 2 + math.exp(2 * float(p["log_std"].sum())))

    M = 200_000
    g = torch.Generator().manual_seed(0)
    obs = torch.ones(1, M, 1, dtype=torch.float64)
    with torch.no_grad():
        actions = sample_actions(policy_distribution(policy, theta, obs, per_task=False), g)
    rewards = -((actions[..., 0] - c) ** 2)
    masks = torch.ones(1, M, dtype=torch.float64)
    e = Episodes(obs, actions, rewards, masks, torch.zeros(1, M, dtype=torch.float64))
    adv = rewards - rewards.mean()
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    est = torch.autograd.grad(-reinforce_loss(policy, leaves, e, adv), list(leaves.values()))

    # Monte-Carlo standard errors from per-sample score * advantage
    mu, sigma = 0.5, 0.8
    z = (actions[0, :, 0] - mu) / sigma
    per_sample = {
        "log_std": (z**2 - 1) * adv[0],
        "mu.0.weight": z / sigma * adv[0],
        "mu.0.bias": z / sigma * adv[0],
    }
    h = 1e-6
    for name, grad in zip(leaves, est, strict=True):
        plus = {k: v.clone() for k, v in theta.items()}
        minus = {k: v.clone() for k, v in theta.items()}
        plus[name] += h
        minus[name] -= h
        fd = (expected_return(plus) - expected_return(minus)) / (2 * h)
        stderr = float(per_sample[name].std()) / math.sqrt(M)
        assert abs(float(grad.sum()) - fd) < 4 * stderr, (name, float(grad.sum()), fd, stderr)
        assert abs(fd) > 20 * stderr  # the check is informative: the gradient is far from 0
