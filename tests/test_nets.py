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


def test_tanh_derivatives_under_torch_func_match_torch_tanh():
    """vmap, grad (to third order), jvp and forward-over-reverse agree with torch.tanh."""
    x = torch.linspace(-4, 4, 33, dtype=torch.float64).reshape(3, 11)
    ours, ref = Tanh(), torch.tanh
    d3 = [torch.func.vmap(torch.func.vmap(torch.func.grad(torch.func.grad(torch.func.grad(g)))))(x)
          for g in (lambda z: ours(z), ref)]
    torch.testing.assert_close(d3[0], d3[1])
    t = torch.randn_like(x)
    jv = [torch.func.jvp(g, (x,), (t,))[1] for g in (lambda z: ours(z), ref)]
    torch.testing.assert_close(jv[0], jv[1])
    hv = [torch.func.jvp(torch.func.grad(lambda z, g=g: g(z).pow(2).sum()), (x,), (t,))[1]
          for g in (lambda z: ours(z), ref)]
    torch.testing.assert_close(hv[0], hv[1])


def test_log_prob_from_noise_equals_distribution_log_prob():
    torch.manual_seed(0)
    pol = GaussianMLPPolicy(3, 2, (8,), "tanh", init_std=0.4)
    dist = pol(torch.randn(5, 7, 3))
    eps = torch.randn(5, 7, 2)
    a = actions_from_noise(dist, eps)
    torch.testing.assert_close(log_prob_from_noise(dist, a, eps), dist.log_prob(a), rtol=1e-5, atol=1e-5)


def test_tanh_mlp_equals_the_plain_tanh_network_to_second_order():
    """The folded-sigmoid forward computes the same function as Linear/torch.tanh layers: values,
    gradients and Hessian-vector products in the parameters, also under vmap over stacked params."""
    from metarl.maml import functional_forward
    from metarl.nets import TanhMLP, mlp

    torch.manual_seed(0)
    net = mlp([3, 5, 4, 2], "tanh").double()
    assert isinstance(net, TanhMLP)
    plain = torch.nn.Sequential(*[m if isinstance(m, torch.nn.Linear) else torch.nn.Tanh() for m in net])
    x = torch.randn(7, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    vec = {k: torch.randn_like(v) for k, v in params.items()}

    def hvp(module):
        def loss(p):
            return functional_forward(module, p, x).pow(3).sum()

        value, grads = torch.func.grad_and_value(loss)(params)
        return value, grads, torch.func.jvp(torch.func.grad(loss), (params,), (vec,))[1]

    ours, ref = hvp(net), hvp(plain)
    torch.testing.assert_close(ours, ref)
    stacked = {k: torch.stack([v, v + 0.1]) for k, v in params.items()}
    out = torch.func.vmap(lambda p: functional_forward(net, p, x))(stacked)
    ref_out = torch.func.vmap(lambda p: functional_forward(plain, p, x))(stacked)
    torch.testing.assert_close(out, ref_out)
