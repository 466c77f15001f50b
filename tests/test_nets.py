"""The folded-sigmoid tanh networks, their stacked fast path and the sampler's log-probability
shortcut equal the textbook computations."""

from __future__ import annotations

import pytest
import torch

from metarl.maml import functional_forward
from metarl.nets import stacked_mlp
from metarl.rl.policies import (
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    distribution_from_params,
    distribution_params,
    policy_distribution,
)
from metarl.rl.sampler import actions_from_noise, log_prob_from_noise


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


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("family", ["gaussian", "categorical"])
def test_stacked_forward_equals_vmap_of_the_module_to_second_order(activation: str, family: str) -> None:
    """policy_distribution's per-task fast path (one baddbmm per layer) against vmap of
    functional_call: distribution tensors, gradients and a double-backprop Hessian-vector product."""
    torch.manual_seed(0)
    n = 3
    if family == "gaussian":
        policy = GaussianMLPPolicy(3, 2, hidden_sizes=(5, 4), activation=activation).double()
    else:
        policy = CategoricalMLPPolicy(3, 4, hidden_sizes=(5, 4), activation=activation).double()
    params = {k: v.detach()[None].repeat(n, *[1] * v.dim()) + 0.3 * torch.randn(n, *v.shape, dtype=v.dtype)
              for k, v in policy.named_parameters()}
    obs = torch.randn(n, 6, 2, 3, dtype=torch.float64)

    def tensors(p, fast: bool):
        if fast:
            forward = policy.stacked(p)
            assert forward is not None
            dist = forward(obs)
        else:
            dist = torch.func.vmap(lambda q, o: distribution_params(functional_forward(policy, q, o))[1])(p, obs)
            dist = distribution_from_params(distribution_params(policy(obs[0]))[0], dist)
        kind, ts = distribution_params(dist)
        return ts

    results = []
    for fast in (True, False):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        ts = tensors(leaves, fast)
        scalar = sum((t.sin() * torch.linspace(0.5, 1.5, t.numel(), dtype=t.dtype).view_as(t)).sum() for t in ts)
        grads = torch.autograd.grad(scalar, list(leaves.values()), create_graph=True)
        v = [torch.ones_like(g) for g in grads]
        hv = torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v, strict=True)), list(leaves.values()),
                                 allow_unused=True, materialize_grads=True)
        results.append([t.detach() for t in ts] + [g.detach() for g in grads] + list(hv))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert any(float(h.abs().max()) > 0 for h in results[0][-len(params):])
    # through policy_distribution, and its fallback when a layer's stacked params are missing
    kind, ts = distribution_params(policy_distribution(policy, params, obs, per_task=True))
    torch.testing.assert_close(ts[0], results[0][0], rtol=0, atol=0)
    partial = {k: v for k, v in params.items() if not k.endswith("0.bias")}
    assert policy.stacked(partial) is None  # -> vmap, with the module's own bias
    (name,) = [k for k in params if k.endswith("0.bias")]
    filled = {**params, name: dict(policy.named_parameters())[name].detach()[None].repeat(n, 1)}
    kind, got = distribution_params(policy_distribution(policy, partial, obs, per_task=True))
    kind, want = distribution_params(policy.stacked(filled)(obs))
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["gaussian", "categorical"])
def test_shared_params_fast_path_equals_the_module_with_gradients(family: str) -> None:
    torch.manual_seed(1)
    if family == "gaussian":
        policy = GaussianMLPPolicy(3, 2, hidden_sizes=(5, 4)).double()
    else:
        policy = CategoricalMLPPolicy(3, 4, hidden_sizes=(5, 4)).double()
    obs = torch.randn(4, 2, 3, dtype=torch.float64)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy.named_parameters()}
    got = distribution_params(policy_distribution(policy, params, obs, per_task=False))[1]
    want = distribution_params(policy(obs))[1]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ga = torch.autograd.grad(sum(t.sin().sum() for t in got), list(params.values()), allow_unused=True,
                             materialize_grads=True)
    gb = torch.autograd.grad(sum(t.sin().sum() for t in want), list(policy.parameters()), allow_unused=True,
                             materialize_grads=True)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("per_task", [False, True])
def test_a_tasks_actions_do_not_depend_on_the_tasks_beside_it_bit_for_bit(per_task: bool) -> None:
    """The Ray sampler splits a call's tasks across actors and must return the local sampler's
    episodes exactly: task i's policy outputs must not change, even in the last bit, with the
    number of tasks in the call (float32, the sampler's dtype; shapes where one flat matrix
    product over all rows did round differently)."""
    for obs_dim, act_dim, b, n in [(27, 8, 1, 5), (17, 6, 4, 3), (27, 8, 1, 40), (2, 2, 20, 40)]:
        torch.manual_seed(obs_dim + b + n)
        policy = GaussianMLPPolicy(obs_dim, act_dim, (64, 64), "tanh")
        theta = {k: v.detach() for k, v in policy.named_parameters()}
        stacked = {k: v[None].repeat(n, *[1] * v.dim()) + 0.01 * torch.randn(n, *v.shape) for k, v in theta.items()}
        params = stacked if per_task else theta
        obs = 3 * torch.randn(n, b, obs_dim)
        with torch.no_grad():
            full = policy_distribution(policy, params, obs, per_task=per_task).base_dist.loc
            for cut in (1, n // 2, n - 1):
                for part in (slice(0, cut), slice(cut, n)):
                    sub = {k: v[part] for k, v in stacked.items()} if per_task else theta
                    got = policy_distribution(policy, sub, obs[part], per_task=per_task).base_dist.loc
                    assert torch.equal(got, full[part]), (obs_dim, act_dim, b, n, cut)


def test_stacked_mlp_declines_layers_with_parameters_of_their_own() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    params = {k: v.detach()[None] for k, v in net.named_parameters()}
    assert stacked_mlp(net, params, "") is None
    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    params = {k: v.detach()[None] for k, v in plain.named_parameters()}
    x = torch.randn(1, 5, 3)
    torch.testing.assert_close(stacked_mlp(plain, params, "")(x), plain(x))
