"""The fast tanh and the sampler's log-probability shortcut equal the textbook computations."""

from __future__ import annotations

import torch

from metarl.nets import Tanh
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampler import actions_from_noise, log_prob_from_noise


def test_tanh_equals_torch_tanh_with_gradients():
    x = torch.linspace(-20, 20, 4001, dtype=torch.float64, requires_grad=True)
    y = Tanh()(x)
    torch.testing.assert_close(y, torch.tanh(x))
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    torch.testing.assert_close(g, 1 - torch.tanh(x) ** 2)
    (h,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(h, -2 * torch.tanh(x) * (1 - torch.tanh(x) ** 2))


def test_log_prob_from_noise_equals_distribution_log_prob():
    torch.manual_seed(0)
    pol = GaussianMLPPolicy(3, 2, (8,), "tanh", init_std=0.4)
    dist = pol(torch.randn(5, 7, 3))
    eps = torch.randn(5, 7, 2)
    a = actions_from_noise(dist, eps)
    torch.testing.assert_close(log_prob_from_noise(dist, a, eps), dist.log_prob(a), rtol=1e-5, atol=1e-5)
