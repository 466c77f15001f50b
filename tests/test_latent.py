"""``policy.latent_dim``: a per-episode latent z drawn with the first action (MAESN-style exploration). The env
wrapper feeds z back into the observations, the log-prob of an episode's first step includes log q(z), and the
inner step moves the latent's mean as a REINFORCE step on z with the first step's advantage would."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metarl.envs.vector import LatentFeedback, make_vec

from metarl.cli import main as cli_main
from metarl.config import ConfigError
from metarl.maml import detach_params, params_of
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.build import make_env, policy_module, sampler_for
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import adaptation_returns
from metarl.rl.losses import kl_divergence, log_prob_gap, reinforce_loss
from metarl.rl.policies import LatentGaussianPolicy, policy_distribution
from metarl.rl.watch import PolicyFn, act
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)
NAV = "metarl/Navigation2D-v0"


def test_wrapper_keeps_the_first_actions_latent_and_strips_it() -> None:
    """z is 0 with first = 1 after a reset; the first step's last d action columns become z for the rest of
    the episode, later ones are ignored; the env gets the first act_dim columns only (the plain env's path)."""
    tasks = [{"goal": np.array([0.3, -0.2])}, {"goal": np.array([-0.4, 0.1])}]
    vec, plain = make_vec(NAV, 2, latent_dim=3), make_vec(NAV, 2)
    assert isinstance(vec, LatentFeedback) and vec.observation_shape == (2 + 3 + 1,)
    obs, obs_plain = vec.reset(tasks, [0, 1]), plain.reset(tasks, [0, 1])
    assert torch.equal(obs[:, :2], obs_plain) and torch.equal(obs[:, 2:], torch.tensor([[0, 0, 0, 1.0]] * 2))
    z = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    moves = [torch.tensor([[0.05, 0.02], [-0.03, 0.01]]), torch.tensor([[0.01, -0.04], [0.02, 0.02]])]
    for t, move in enumerate(moves):
        other = z if t == 0 else torch.full((2, 3), 9.0)  # later latent columns are ignored
        obs, rew, done = vec.step(torch.cat([move, other], 1))
        obs_p, rew_p, done_p = plain.step(move)
        assert torch.equal(obs[:, :2], obs_p) and torch.equal(rew, rew_p) and torch.equal(done, done_p)
        assert torch.equal(obs[:, 2:5], z) and bool((obs[:, 5] == 0).all())
    with pytest.raises(ValueError, match="latent_dim=3 actions must have shape"):
        vec.step(torch.zeros(2, 2))
    assert torch.equal(vec.reset(tasks, [0, 1])[:, 2:], torch.tensor([[0, 0, 0, 1.0]] * 2))
    vec.close()
    plain.close()


def _policy(scale: float = 2.0, std_scale: float = 1.5) -> LatentGaussianPolicy:
    torch.manual_seed(0)
    policy = LatentGaussianPolicy(3, 2, 2, (8,), "tanh", 0.5, scale=scale, std_scale=std_scale)
    with torch.no_grad():
        policy.latent_mu.copy_(torch.tensor([0.1, -0.2]))
        policy.latent_log_std.copy_(torch.tensor([0.05, -0.1]))
    return policy


def _obs(s: torch.Tensor, z: torch.Tensor, first: float) -> torch.Tensor:
    return torch.cat([s, z, torch.full((*s.shape[:-1], 1), first)], -1)


def _q(policy: LatentGaussianPolicy, mu: torch.Tensor, log_std: torch.Tensor) -> torch.distributions.Normal:
    return torch.distributions.Normal(policy.scale * mu, (policy.std_scale * log_std).exp())


def test_log_prob_adds_the_latents_at_the_first_step_only() -> None:
    """First step: log N(a; mu(s, 0), sigma) + log N(z; scale * latent_mu, exp(std_scale * latent_log_std)). Later
    steps: the action's log-prob given z, plus a term that does not depend on the parameters."""
    policy = _policy()
    s, z, a = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 2)
    loc = policy.mu(torch.cat([s, torch.zeros(5, 2)], -1))
    act = torch.distributions.Normal(loc, policy.log_std.exp()).log_prob(a).sum(-1)
    q = _q(policy, policy.latent_mu, policy.latent_log_std).log_prob(z).sum(-1)
    torch.testing.assert_close(policy(_obs(s, torch.zeros(5, 2), 1.0)).log_prob(torch.cat([a, z], -1)), act + q)

    later = policy(_obs(s, z, 0.0)).log_prob(torch.cat([a, torch.zeros(5, 2)], -1))
    loc_z = policy.mu(torch.cat([s, z], -1))
    act_z = torch.distributions.Normal(loc_z, policy.log_std.exp()).log_prob(a).sum(-1)
    torch.testing.assert_close(later, act_z + torch.distributions.Normal(z, 1.0).log_prob(torch.zeros(5, 2)).sum(-1))
    g = torch.autograd.grad(later.sum(), [policy.latent_mu, policy.latent_log_std])
    assert all(bool((x == 0).all()) for x in g)


def test_stacked_forward_equals_per_task_modules() -> None:
    policy = _policy()
    theta = detach_params(params_of(policy))
    stacked = {k: torch.stack([v, v + 0.1 * torch.randn_like(v)]) for k, v in theta.items()}
    obs = torch.cat([_obs(torch.randn(2, 4, 3), torch.randn(2, 4, 2), 1.0)[:, :2],
                     _obs(torch.randn(2, 4, 3), torch.randn(2, 4, 2), 0.0)[:, 2:]], 1)
    dist = policy_distribution(policy, stacked, obs, per_task=True)
    for i in range(2):
        ref = torch.func.functional_call(policy, {k: v[i] for k, v in stacked.items()}, (obs[i],))
        torch.testing.assert_close(dist.base_dist.loc[i], ref.base_dist.loc)
        torch.testing.assert_close(dist.base_dist.scale[i], ref.base_dist.scale)


def test_kl_includes_the_latents_at_the_first_step() -> None:
    """Between two latent distributions only, the mean KL over T steps is the latents' KL over T (one step of T)."""
    policy = _policy()
    theta = detach_params(params_of(policy))
    moved = dict(theta, latent_mu=theta["latent_mu"] + 0.05)
    T, B = 5, 3
    s, z = torch.randn(T, B, 3), torch.randn(B, 2)
    obs = torch.stack([_obs(s[t], torch.zeros(B, 2) if t == 0 else z, 1.0 if t == 0 else 0.0) for t in range(T)])
    ep = Episodes(obs, torch.zeros(T, B, 4), torch.zeros(T, B), torch.ones(T, B), torch.zeros(T, B))
    kl = kl_divergence(policy, moved, theta, ep)
    mu0, mu1 = policy.scale * theta["latent_mu"], policy.scale * moved["latent_mu"]
    sd = (policy.std_scale * theta["latent_log_std"]).exp()
    torch.testing.assert_close(kl, (((mu1 - mu0) / sd) ** 2 / 2).sum() / T)


def test_inner_step_moves_the_latent_mean_by_a_reinforce_step_on_z() -> None:
    """With scale sqrt(T * k) and every step live, the inner step on latent_mu moves mu_z by
    k * alpha * mean_b (z_b - mu_z) / sigma_z^2 * A_b0: REINFORCE on z with the first step's advantage; with
    std_scale sqrt(T) the step on log sigma_z is that REINFORCE step at alpha."""
    T, B, alpha, k = 4, 6, 0.1, 9.0
    policy = _policy(scale=math.sqrt(T * k), std_scale=math.sqrt(T))
    theta = {n: v.detach().clone().requires_grad_(True) for n, v in params_of(policy).items()}
    mu_z = policy.scale * theta["latent_mu"].detach()
    sd_z = (policy.std_scale * theta["latent_log_std"].detach()).exp()
    z = mu_z + sd_z * torch.randn(B, 2)
    s = torch.randn(T, B, 3)
    obs = torch.stack([_obs(s[t], torch.zeros(B, 2) if t == 0 else z, 1.0 if t == 0 else 0.0) for t in range(T)])
    actions = torch.cat([torch.randn(T, B, 2), z.expand(T, B, 2)], -1)
    ep = Episodes(obs, actions, torch.zeros(T, B), torch.ones(T, B), torch.zeros(T, B))
    adv = torch.randn(T, B)
    (g,) = torch.autograd.grad(reinforce_loss(policy, theta, ep, adv), [theta["latent_mu"]])
    step = policy.scale * (-alpha * g)  # mu_z = scale * latent_mu
    expected = k * alpha * (((z - mu_z) / sd_z**2) * adv[0].unsqueeze(-1)).mean(0)
    torch.testing.assert_close(step, expected)
    # the log-std's step at std_scale sqrt(T): one REINFORCE step on z at alpha, d log q / d log sigma = xi^2 - 1
    (g,) = torch.autograd.grad(reinforce_loss(policy, theta, ep, adv), [theta["latent_log_std"]])
    step = policy.std_scale * (-alpha * g)
    xi = (z - mu_z) / sd_z
    torch.testing.assert_close(step, alpha * ((xi**2 - 1) * adv[0].unsqueeze(-1)).mean(0))


def test_sampled_episodes_hold_the_latent_and_adapt() -> None:
    """Training's sampler on Navigation2D: each episode's z is its first action's latent, drawn around
    scale * latent_mu; log-probs match the policy's; evaluation adapts mu_z (per task) and samples with it."""
    cfg = tiny_cfg(NAV, "nav", policy={"hidden": [8], "activation": "tanh", "latent_dim": 2})
    env = make_env(cfg)
    policy = policy_module(cfg, env)
    assert isinstance(policy, LatentGaussianPolicy)
    assert policy.scale == policy.std_scale == math.sqrt(env.spec.max_episode_steps)  # latent_step 1
    tasks = env.unwrapped.sample_tasks(2, np.random.default_rng(0))
    env.close()
    sampler = sampler_for(cfg, 3)
    params_out: list = []
    episodes_out: list = []
    try:
        adaptation_returns(cfg, policy, tasks, steps=1, sampler=sampler, seed=3, params_out=params_out,
                           episodes_out=episodes_out)
    finally:
        sampler.close()
    before, after = episodes_out
    z = before.actions[:, 0, :, 2:]  # [N, B, d]: the first action's latent
    assert bool((before.observations[:, 1:, :, 2:4] == z.unsqueeze(1)).all())
    assert bool((before.observations[:, 0, :, 4] == 1).all()) and bool((before.observations[:, 1:, :, 4] == 0).all())
    assert z.std() > 0.3  # N(0, I) at the start
    theta = detach_params(params_of(policy))
    assert log_prob_gap(policy, theta, before) < 1e-4
    adapted = params_out[1]
    assert not torch.equal(adapted["latent_mu"][0], theta["latent_mu"])
    assert log_prob_gap(policy, adapted, after, per_task=True) < 1e-4


def test_why_the_first_steps_advantage_is_the_latents() -> None:
    """The linear baseline is a least-squares fit on features that include z after the first step (the
    observation holds it), and least-squares residuals are orthogonal to every feature: the later steps'
    advantages carry nothing linear in z. The latent's information is in the first step's advantage, whose
    baseline sees z = 0 (here: return = 5 z_0 + noise); a step on mu_z with every step's advantages is that
    term alone, diluted by the horizon."""
    T, B = 30, 40
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(B, 2, generator=gen)
    s = torch.randn(T, B, 3, generator=gen)
    obs = torch.stack([_obs(s[t], torch.zeros(B, 2) if t == 0 else z, 1.0 if t == 0 else 0.0) for t in range(T)])
    rewards = (5 * z[:, 0] / T).expand(T, B) + 0.1 * torch.randn(T, B, generator=gen)
    ep = Episodes(obs, torch.zeros(T, B, 4), rewards, torch.ones(T, B), torch.zeros(T, B))
    adv = AdvantageEstimator(gamma=1.0, gae_lambda=1.0, normalize=False)(ep)
    later = (z * adv[1:].sum(0).unsqueeze(-1)).mean(0)
    first = (z * adv[0].unsqueeze(-1)).mean(0)
    assert later.abs().max() < 1e-3 * first.abs().max()
    assert first[0] > 3 and abs(float(first[1])) < 1.5


def test_policy_fn_draws_z_once_per_episode() -> None:
    policy = _policy()
    fn = PolicyFn(policy, detach_params(params_of(policy)), deterministic=True)
    a0 = fn(np.zeros(3, np.float32))
    assert a0.shape == (2,)
    np.testing.assert_allclose(fn._z, (policy.scale * policy.latent_mu).detach().numpy(), rtol=1e-6)
    a1 = fn(np.zeros(3, np.float32))
    ref = policy.mu(torch.cat([torch.zeros(3), policy.scale * policy.latent_mu.detach()]))
    np.testing.assert_allclose(a1, ref.detach().numpy(), rtol=1e-5)
    fn.reset()
    np.testing.assert_allclose(fn(np.zeros(3, np.float32)), a0)
    with pytest.raises(ValueError, match="per-episode latent"):
        act(policy, detach_params(params_of(policy)), np.zeros(3, np.float32))


def test_settings_it_cannot_work_with_are_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="policy.latent_dim: 2 and action_box_penalty"):
        policy_module(tiny_cfg("metarl/HalfCheetahVel-v0", "c", action_box_penalty=0.1,
                               policy={"hidden": [8], "activation": "tanh", "latent_dim": 2}))
    with pytest.raises(ConfigError, match="sampler.backend: local"):
        policy_module(tiny_cfg(NAV, "nav", sampler={"num_workers": 1, "backend": "ray"},
                               policy={"hidden": [8], "activation": "tanh", "latent_dim": 2}))
    assert cli_main(["train", "navigation2d", "--set", "policy.latent_dim=-1", "--logdir", str(tmp_path / "x")]) != 0
    assert "latent_dim" in capsys.readouterr().err


def test_training_runs_checkpoints_and_evaluates(tmp_path) -> None:
    run = tmp_path / "run"
    args = ["train", "navigation2d", "--set", "policy.latent_dim=2", "--set", "num_iterations=2", "--set",
            "meta_batch_size=2", "--set", "env.episodes_per_task=2", "--set", "eval.every=1", "--set",
            "eval.tasks=2", "--set", "sampler.num_workers=1", "--logdir", str(run)]
    assert cli_main(args) == 0
    assert cli_main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "e.json")]) == 0
    assert (tmp_path / "e.json").exists()
    gif = tmp_path / "a.gif"
    assert cli_main(["record", str(run), "--task", "goal=0.3,-0.2", "--steps", "1", "--out", str(gif)]) == 0
    assert gif.stat().st_size > 0
