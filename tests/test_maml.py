"""The MAML core against hand-written steps, closed forms and finite differences."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metarl.maml import adapt, adapt_batched, functional_forward, meta_sgd_lr, params_of

torch.set_num_threads(1)


def tiny_mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype)


def mse_loss(module: nn.Module):
    def loss(params, data):
        x, y = data
        return ((functional_forward(module, params, x) - y) ** 2).mean()

    return loss


def test_one_step_equals_hand_written_sgd():
    net = tiny_mlp()
    x, y = torch.randn(7, 2), torch.randn(7, 1)
    loss = mse_loss(net)
    fast = adapt(loss, params_of(net), (x, y), lr=0.3, steps=1)
    net_ref = copy.deepcopy(net)
    out = ((net_ref(x) - y) ** 2).mean()
    out.backward()
    for (name, p), (_, p_ref) in zip(fast.items(), net_ref.named_parameters()):
        torch.testing.assert_close(p, p_ref.detach() - 0.3 * p_ref.grad, msg=name)


def quadratic_setup():
    torch.manual_seed(1)
    d = 4
    m = torch.randn(d, d, dtype=torch.float64)
    a = m @ m.T + d * torch.eye(d, dtype=torch.float64)  # SPD Hessian of the inner loss
    b = torch.randn(d, dtype=torch.float64)
    c = torch.randn(d, dtype=torch.float64)
    theta = torch.randn(d, dtype=torch.float64, requires_grad=True)

    def inner(params, data):
        t = params["w"]
        return 0.5 * t @ a @ t - b @ t

    def outer(params):
        return 0.5 * ((params["w"] - c) ** 2).sum()

    return a, b, c, theta, inner, outer


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_second_order_meta_gradient_matches_closed_form(alpha):
    a, b, c, theta, inner, outer = quadratic_setup()
    fast = adapt(inner, {"w": theta}, None, lr=alpha, steps=1)
    (g,) = torch.autograd.grad(outer(fast), [theta])
    theta_prime = theta.detach() - alpha * (a @ theta.detach() - b)
    expected = (torch.eye(4, dtype=torch.float64) - alpha * a) @ (theta_prime - c)
    torch.testing.assert_close(g, expected)
    # and the first-order one differs from it here (H is far from zero)
    fast_fo = adapt(inner, {"w": theta}, None, lr=alpha, steps=1, first_order=True)
    (g_fo,) = torch.autograd.grad(outer(fast_fo), [theta])
    assert (g_fo - expected).abs().max() > 1e-3


def test_first_order_gradient_is_gradient_at_adapted_point():
    a, b, c, theta, inner, outer = quadratic_setup()
    fast = adapt(inner, {"w": theta}, None, lr=0.05, steps=2, first_order=True)
    (g,) = torch.autograd.grad(outer(fast), [theta])
    torch.testing.assert_close(g, fast["w"].detach() - c)


def test_meta_gradient_matches_finite_differences_two_steps():
    net = tiny_mlp(torch.float64)
    torch.manual_seed(3)
    xs, ys = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    xq, yq = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    loss = mse_loss(net)
    names = list(params_of(net))
    flat0 = torch.cat([p.detach().flatten() for p in params_of(net).values()])
    shapes = [p.shape for p in params_of(net).values()]

    def meta_objective(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            n = shape.numel()
            params[name] = flat[i : i + n].view(shape)
            i += n
        fast = adapt(loss, params, (xs, ys), lr=0.2, steps=2)
        return loss(fast, (xq, yq))

    flat = flat0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(meta_objective(flat), [flat])
    eps = 1e-6
    fd = torch.zeros_like(flat0)
    for i in range(flat0.numel()):
        e = torch.zeros_like(flat0)
        e[i] = eps
        fd[i] = (meta_objective(flat0 + e) - meta_objective(flat0 - e)) / (2 * eps)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)


def test_module_unchanged_after_adapt():
    net = tiny_mlp()
    before = copy.deepcopy(net.state_dict())
    x, y = torch.randn(5, 2), torch.randn(5, 1)
    fast = adapt(mse_loss(net), params_of(net), (x, y), lr=0.5, steps=3)
    after = net.state_dict()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert any((fast[k] - before[k]).abs().max() > 0 for k in fast)


def test_meta_sgd_lr_receives_the_analytic_gradient():
    a, b, c, theta, inner, outer = quadratic_setup()
    lr = meta_sgd_lr({"w": theta}, 0.05)
    fast = adapt(inner, {"w": theta}, None, lr=lr, steps=1)
    (g_lr,) = torch.autograd.grad(outer(fast), [lr["w"]])
    g_in = a @ theta.detach() - b
    # d/d lr_i of 0.5||theta - lr*g_in - c||^2 = -(theta'_i - c_i) * g_in_i
    torch.testing.assert_close(g_lr, -(fast["w"].detach() - c) * g_in)


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_path_equals_loop_path(first_order):
    net = tiny_mlp()
    torch.manual_seed(5)
    n = 4
    xs, ys = torch.randn(n, 6, 2), torch.randn(n, 6, 1)
    xq, yq = torch.randn(n, 6, 2), torch.randn(n, 6, 1)
    loss = mse_loss(net)
    theta = params_of(net)
    fast_b = adapt_batched(loss, theta, (xs, ys), lr=0.1, steps=2, first_order=first_order)
    lb = torch.func.vmap(loss)(fast_b, (xq, yq)).mean()
    gb = torch.autograd.grad(lb, list(theta.values()))
    losses = []
    for i in range(n):
        fast = adapt(loss, theta, (xs[i], ys[i]), lr=0.1, steps=2, first_order=first_order)
        for k in fast:
            torch.testing.assert_close(fast_b[k][i], fast[k])
        losses.append(loss(fast, (xq[i], yq[i])))
    gl = torch.autograd.grad(torch.stack(losses).mean(), list(theta.values()))
    for x, y in zip(gb, gl):
        torch.testing.assert_close(x, y)


def test_adapt_rejects_negative_steps():
    net = tiny_mlp()
    with pytest.raises(ValueError, match="steps=-1"):
        adapt(mse_loss(net), params_of(net), (torch.zeros(1, 2), torch.zeros(1, 1)), lr=0.1, steps=-1)
