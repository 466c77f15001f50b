"""ANIL (Raghu et al. 2020, arXiv 1909.09157): the inner loop adapts the head only, the body is meta-learned.

The meta-gradient is checked against a closed-form inner step of the linear head (regression) and
against a plain-autograd loop (classification), in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarl.config import config_from_dict, load_config
from metarl.fewshot.build import build_sinusoid
from metarl.fewshot.learner import SupervisedMAML, adaptation_curve, head_names, inner_plan
from metarl.fewshot.models import Conv4, FCNet
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import adapt_path
from metarl.nets import mlp

torch.set_num_threads(1)


def regression_batch(n: int = 3, seed: int = 0) -> TaskBatch:
    b = SinusoidTasks(shots=5, query=6).sample(n, torch.Generator().manual_seed(seed))
    return TaskBatch(*(t.double() for t in (b.x_support, b.y_support, b.x_query, b.y_query)))


def classification_batch(n: int = 2, ways: int = 3, shots: int = 2, features: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * ways * shots, features, generator=g, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(shots).repeat(2).expand(n, -1)
    return TaskBatch(x[:, : ways * shots], y[:, : ways * shots], x[:, ways * shots :], y[:, ways * shots :])


def anil_learner(module: nn.Module, *, loss: str = "mse", steps: int = 1, lr: float = 0.05, **kw) -> SupervisedMAML:
    val = regression_batch(2, seed=9) if loss == "mse" else classification_batch(seed=9)
    return SupervisedMAML(
        module.double(), SinusoidTasks(shots=5, query=6), val, loss=loss, meta_batch_size=3, inner_lr=lr,
        inner_steps=steps, first_order=False, learn_lr=False, outer_lr=1e-3, grad_clip=0.0, seed=0, anil=True, **kw,
    )


def test_the_head_is_the_last_linear_layer():
    assert head_names(mlp([1, 40, 40, 1], "relu")) == ["4.weight", "4.bias"]
    assert head_names(FCNet(5, 3, hidden=(8,))) == ["head.weight", "head.bias"]
    assert head_names(Conv4(1, 5, filters=4)) == ["head.weight", "head.bias"]
    assert inner_plan(Conv4(1, 5, filters=4), anil=True).adapted == ["head.weight", "head.bias"]
    assert inner_plan(Conv4(1, 5, filters=4)) == (None, None)  # MAML: everything adapts
    with pytest.raises(ValueError, match="linear head"):
        head_names(nn.Sequential(nn.ReLU()))


def test_anil_meta_gradient_matches_the_closed_form_head_step():
    """Regression, one step: features h = body(x); the head's MSE gradient is dW = 2/K r^T h, db = 2/K sum r
    with r = h W^T + b - y; the adapted head is (W - a dW, b - a db); the meta-gradient of the query loss
    reaches the body through h in both the support and the query."""
    torch.manual_seed(0)
    module = mlp([1, 12, 12, 1], "tanh")
    lrn = anil_learner(module, steps=1, lr=0.07)
    theta, batch = lrn.params(), regression_batch()
    ours = lrn.meta_loss(batch)

    body = nn.Sequential(*list(module)[:-1])
    body_params = {k: v for k, v in theta.items() if not k.startswith("4.")}
    w, b = theta["4.weight"], theta["4.bias"]
    total = 0.0
    for i in range(batch.num_tasks):
        h = torch.func.functional_call(body, body_params, (batch.x_support[i],))
        r = h @ w.T + b - batch.y_support[i]
        k = h.shape[0]
        w1, b1 = w - 0.07 * (2 / k) * r.T @ h, b - 0.07 * (2 / k) * r.sum(0)
        hq = torch.func.functional_call(body, body_params, (batch.x_query[i],))
        total = total + ((hq @ w1.T + b1 - batch.y_query[i]) ** 2).mean()
    ref = total / batch.num_tasks
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    g_ours = torch.autograd.grad(ours, list(theta.values()))
    g_ref = torch.autograd.grad(ref, list(theta.values()))
    for name, a, c in zip(theta, g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)
        assert torch.any(a != 0), f"{name} gets a meta-gradient"


def test_anil_inner_loop_moves_only_the_head():
    torch.manual_seed(1)
    module = FCNet(5, 3, hidden=(8, 6)).double()
    plan = inner_plan(module, anil=True)
    theta = dict(module.named_parameters())
    batch = classification_batch()

    def loss(p, data):
        return F.cross_entropy(torch.func.functional_call(module, p, (data[0],)), data[1])

    path = adapt_path(loss, theta, (batch.x_support[0], batch.y_support[0]), lr=0.5, steps=3,
                      adapted=plan.adapted)
    for k, p in enumerate(path[1:], 1):
        for name, v in p.items():
            if name.startswith("head."):
                assert not torch.equal(v, theta[name]), (k, name)
            else:
                assert v is theta[name], (k, name)  # passed through untouched


def test_anil_classification_meta_gradient_matches_a_plain_loop():
    torch.manual_seed(2)
    module = FCNet(5, 3, hidden=(8, 6))
    lrn = anil_learner(module, loss="ce", steps=2, lr=0.4)
    theta, batch = lrn.params(), classification_batch(seed=3)
    ours = lrn.meta_loss(batch)
    total = 0.0
    for i in range(batch.num_tasks):
        p = dict(theta)
        for _ in range(2):
            inner = F.cross_entropy(torch.func.functional_call(module, p, (batch.x_support[i],)), batch.y_support[i])
            gw, gb = torch.autograd.grad(inner, [p["head.weight"], p["head.bias"]], create_graph=True)
            p = {**p, "head.weight": p["head.weight"] - 0.4 * gw, "head.bias": p["head.bias"] - 0.4 * gb}
        total = total + F.cross_entropy(torch.func.functional_call(module, p, (batch.x_query[i],)), batch.y_query[i])
    ref = total / batch.num_tasks
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    for a, c in zip(torch.autograd.grad(ours, list(theta.values())), torch.autograd.grad(ref, list(theta.values())),
                    strict=True):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


def test_evaluation_adapts_the_head_only_too():
    """Validation / `metarl evaluate` (adaptation_curve with anil) equal a loop that steps the head alone."""
    torch.manual_seed(3)
    module = mlp([1, 12, 1], "relu").double()
    batch = regression_batch(3, seed=4)
    theta = {k: v.detach() for k, v in module.named_parameters()}
    curve = adaptation_curve(module, theta, batch, loss="mse", lr=0.05, steps=3, anil=True)
    full = adaptation_curve(module, theta, batch, loss="mse", lr=0.05, steps=3)
    assert not torch.allclose(curve[1:], full[1:])
    for i in range(batch.num_tasks):
        p = dict(theta)
        ref = []
        for k in range(4):
            ref.append(F.mse_loss(torch.func.functional_call(module, p, (batch.x_query[i],)), batch.y_query[i]))
            if k < 3:
                w = {n: p[n].clone().requires_grad_(True) for n in ("2.weight", "2.bias")}
                inner = F.mse_loss(torch.func.functional_call(module, {**p, **w}, (batch.x_support[i],)),
                                   batch.y_support[i])
                g = torch.autograd.grad(inner, list(w.values()))
                p = {**p, **{n: (w[n] - 0.05 * gi).detach() for n, gi in zip(w, g, strict=True)}}
        torch.testing.assert_close(curve[:, i], torch.stack(ref), rtol=1e-10, atol=1e-12)


def test_shipped_anil_configs():
    assert load_config("sinusoid_anil").anil and load_config("omniglot_5w1s_anil").anil
    assert not load_config("sinusoid").anil


def test_anil_sinusoid_run_improves_post_adaptation_mse():
    cfg = config_from_dict({
        "benchmark": "sinusoid", "seed": 1, "num_iterations": 300, "meta_batch_size": 10,
        "inner": {"lr": 0.05, "steps": 2}, "eval": {"tasks": 50}, "anil": True, "optim": {"lr": 0.003},
    })
    lrn = build_sinusoid(cfg)
    before = lrn.validate()["val/mse_post"]
    for it in range(1, cfg.num_iterations + 1):
        lrn.train_step(it, log=False)
    after = lrn.validate()
    assert after["val/mse_post"] < 0.6 * before, (before, after)
    assert after["val/mse_post"] < after["val/mse_pre"]
