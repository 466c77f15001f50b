"""``action_box_penalty``: adapted Gaussian means outside the env's action box, in standard deviations,
added to the meta-objective; zero inside the box, so the paper's update is unchanged there."""

from __future__ import annotations

import types

import gymnasium as gym
import pytest
import torch
from torch.distributions import Independent, Normal

from metarl.config import ConfigError, config_from_dict
from metarl.maml import params_of
from metarl.rl.build import action_box_penalty
from metarl.rl.learner import RLLearner
from metarl.rl.losses import action_box_excess, box_saturation, old_distribution
from metarl.rl.objective import ActionBoxPenalty, meta_batch, meta_objective
from tests.test_maml_trpo import adapted, problem
from tests.test_promp import make_problem
from tests.test_rl_average import TINY_NAV

torch.set_num_threads(1)


def gaussian(loc, scale) -> Independent:
    loc, scale = torch.as_tensor(loc, dtype=torch.float64), torch.as_tensor(scale, dtype=torch.float64)
    return Independent(Normal(loc, scale.expand_as(loc), validate_args=False), 1, validate_args=False)


def test_excess_is_zero_inside_the_box_and_the_squared_std_distance_outside() -> None:
    low, high = torch.tensor([-0.1, 0.0]), torch.tensor([0.1, 2.0])  # centres 0 and 1, half-widths 0.1 and 1
    masks = torch.ones(1, 3)
    # one state inside; one at (0.3, -0.5): 0.2 / 0.1 and 0.5 / 0.5 outside; one at (-0.15, 2.0): 0.05 / 0.1
    loc = [[[0.05, 1.5], [0.3, -0.5], [-0.15, 2.0]]]
    value = action_box_excess(gaussian(loc, [0.1, 0.5]), masks, low, high)
    assert float(value) == pytest.approx(((2.0**2 + 1.0**2) + 0.5**2) / 3)
    # a masked step does not count, whatever its mean
    masks = torch.tensor([[1.0, 0.0, 1.0]])
    assert float(action_box_excess(gaussian(loc, [0.1, 0.5]), masks, low, high)) == pytest.approx(0.5**2 / 2)
    inside = [[[0.0, 1.0], [0.099, 0.01], [-0.1, 1.99]]]
    assert float(action_box_excess(gaussian(inside, [0.1, 0.5]), torch.ones(1, 3), low, high)) == 0.0


def test_excess_gradient_matches_finite_differences() -> None:
    low, high = torch.full((2,), -0.1, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64)
    loc = torch.tensor([[[0.4, -0.02], [-0.3, 0.25]]], dtype=torch.float64, requires_grad=True)  # away from the kinks
    scale = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)
    masks = torch.ones(1, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m, s: action_box_excess(gaussian(m, s), masks, low, high), (loc, scale))


def test_meta_objective_adds_the_penalty_of_the_adapted_policies_computed_independently() -> None:
    algo, policy, train, valid = problem(seed=3, inner_steps=1, per_step_batches=False)
    low, high = torch.full((2,), -0.1, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64)
    penalty = ActionBoxPenalty(low, high, coef=2.5)
    batch = meta_batch(train, valid, algo.advantages)
    theta = params_of(policy)
    plain = meta_objective(policy, theta, batch, algo.inner, chunk=1)
    with_penalty = meta_objective(policy, theta, batch, algo.inner, chunk=1, penalty=penalty)
    # by hand: each task's adapted mean at each live state, outside [-0.1, 0.1] per coordinate, over its std
    post = adapted(algo, train)
    per_task = []
    for i in range(valid.masks.shape[0]):
        params = {k: v[i] for k, v in post.items()}
        loc = torch.func.functional_call(policy.mu, {k[3:]: v for k, v in params.items() if k.startswith("mu.")},
                                         (valid.observations[i],))
        std = params["log_std"].exp()
        excess = ((loc.abs() - 0.1).clamp(min=0) / std).square().sum(-1)
        live = valid.masks[i] > 0
        per_task.append(excess[live].mean())
    expected = 2.5 * torch.stack(per_task).mean()
    assert float(expected) > 0.1  # the synthetic policy's means do leave the box
    assert with_penalty.penalty == pytest.approx(float(expected), rel=1e-9)
    assert float((with_penalty.loss - plain.loss).detach()) == pytest.approx(float(expected), rel=1e-9)
    assert float(with_penalty.kl.detach()) == float(plain.kl.detach())


def test_config_builds_the_penalty_on_the_env_box_and_refuses_unbounded_actions() -> None:
    cfg = config_from_dict({**TINY_NAV, "action_box_penalty": 0.5})
    penalty = action_box_penalty(cfg)
    assert penalty.coef == 0.5 and penalty.low.tolist() == pytest.approx([-0.1, -0.1])
    assert penalty.high.tolist() == pytest.approx([0.1, 0.1])
    assert action_box_penalty(config_from_dict(TINY_NAV)) is None
    unbounded = types.SimpleNamespace(action_space=gym.spaces.Box(-float("inf"), float("inf"), (2,)))
    with pytest.raises(ConfigError, match="action_box_penalty: 0.5 needs bounded Box actions"):
        action_box_penalty(cfg, unbounded)
    with pytest.raises(ConfigError, match="action_box_penalty"):
        config_from_dict({**TINY_NAV, "action_box_penalty": -1})


def mean_action_at_start(penalty: float, iterations: int) -> torch.Tensor:
    """The mean action at the start position after ``iterations`` meta-steps of a navigation policy
    whose mean starts far outside the +-0.1 box (as a saturated run's does)."""
    cfg = config_from_dict({**TINY_NAV, "seed": 3, "num_iterations": max(iterations, 1), "meta_batch_size": 4,
                            "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 5},
                            "policy": {"hidden": [16], "activation": "tanh", "init_std": 0.3},
                            "action_box_penalty": penalty})
    learner = RLLearner(cfg)
    with torch.no_grad():
        learner.module.mu[-1].bias.fill_(0.6)
    for it in range(1, iterations + 1):
        learner.train_step(it, True)
    learner.close()
    with torch.no_grad():
        return learner.module(torch.zeros(2)).base_dist.loc


def test_penalty_brings_a_saturated_mean_back_into_the_box_and_the_paper_update_does_not() -> None:
    start = mean_action_at_start(1.0, 0)
    assert start.min() > 0.4  # several stds outside the box
    with_penalty, without = mean_action_at_start(1.0, 8), mean_action_at_start(0.0, 8)
    assert with_penalty.max() < 0.2  # measured: (0.09, 0.13)
    assert without.min() > 0.35  # measured: (0.49, 0.61)


def test_promp_objective_adds_the_same_penalty() -> None:
    low, high = torch.full((2,), -0.1, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64)
    penalty = ActionBoxPenalty(low, high, coef=0.7)
    plain, policy, train, valid = make_problem(seed=2)
    with_penalty, *_ = make_problem(seed=2, penalty=penalty)
    batch = meta_batch(train, valid, plain.advantages)
    theta = params_of(policy)
    first = meta_objective(policy, theta, batch, plain.inner, chunk=plain.task_chunk)
    pre = old_distribution(policy, theta, batch.train[0].episodes)
    base = plain._loss(theta, batch, first.old, pre)[0]
    added = with_penalty._loss(theta, batch, first.old, pre)[0]
    expected = meta_objective(policy, theta, batch, plain.inner, chunk=plain.task_chunk, penalty=penalty).penalty
    assert expected > 0.01
    assert float((added - base).detach()) == pytest.approx(expected, rel=1e-9)


def test_box_saturation_is_the_share_of_mean_coordinates_outside_the_box() -> None:
    _, policy, train, _ = problem(seed=3, inner_steps=1, per_step_batches=False)
    episodes = train[0]
    with torch.no_grad():  # a box around the middle half of the means, so that about half leave it
        locs = policy(episodes.observations[episodes.masks > 0]).base_dist.loc.float()
    low, high = locs.quantile(0.25, dim=0), locs.quantile(0.75, dim=0)
    got = float(box_saturation(policy, params_of(policy), episodes, low, high))
    # independently: the module's own forward on each live state, counted per task then averaged
    shares = []
    with torch.no_grad():
        for n in range(episodes.masks.shape[0]):
            outside, live = 0.0, 0
            for t in range(episodes.masks.shape[1]):
                for b in range(episodes.masks.shape[2]):
                    if episodes.masks[n, t, b] > 0:
                        loc = policy(episodes.observations[n, t, b]).base_dist.loc
                        outside += float(((loc < low) | (loc > high)).double().mean())
                        live += 1
            shares.append(outside / live)
    assert 0.05 < got < 0.95
    assert got == pytest.approx(sum(shares) / len(shares), rel=1e-6)


def test_learner_logs_the_share_of_means_outside_the_box() -> None:
    cfg = config_from_dict({**TINY_NAV, "seed": 3, "num_iterations": 1, "meta_batch_size": 2,
                            "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 2},
                            "policy": {"hidden": [16], "activation": "tanh", "init_std": 0.3}})
    learner = RLLearner(cfg)
    try:
        with torch.no_grad():
            learner.module.mu[-1].weight.zero_()
            learner.module.mu[-1].bias.fill_(0.6)  # every mean at (0.6, 0.6): outside the +-0.1 box
        assert learner.train_step(1, True)["train/mean_outside_box"] == 1.0
        with torch.no_grad():
            learner.module.mu[-1].weight.zero_()
            learner.module.mu[-1].bias.fill_(0.0)  # and now every mean inside
        assert learner.train_step(2, True)["train/mean_outside_box"] == 0.0
    finally:
        learner.close()
