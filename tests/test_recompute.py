"""Gradient checkpointing of the inner loop: the same adapted params and meta-gradients as the stored graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarl.fewshot.models import Conv4, cross_entropy_loss
from metarl.maml import adapt, adapt_batched, functional_forward, meta_sgd_lr, params_of
from metarl.recompute import recomputed

torch.set_num_threads(1)
TASKS = 3


def mlp_case() -> tuple[nn.Module, object, tuple, tuple]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)).double()

    def loss(params, data):
        x, y = data
        return ((functional_forward(net, params, x) - y) ** 2).mean()

    x = torch.randn(TASKS, 10, 1, dtype=torch.float64)
    xq = torch.randn(TASKS, 12, 1, dtype=torch.float64)
    return net, loss, (x, torch.sin(2 * x)), (xq, torch.sin(2 * xq))


def conv_case() -> tuple[nn.Module, object, tuple, tuple]:
    torch.manual_seed(0)
    net = Conv4(1, 4, filters=6).double()
    xs = torch.rand(TASKS, 4, 1, 28, 28, dtype=torch.float64)
    xq = torch.rand(TASKS, 8, 1, 28, 28, dtype=torch.float64)
    ys, yq = torch.arange(4).repeat(TASKS, 1), torch.arange(4).repeat(TASKS, 2)
    return net, cross_entropy_loss(net), (xs, ys), (xq, yq)


def meta_gradient(case, *, checkpoint: bool, batched: bool, meta_sgd: bool, first_order: bool = False,
                  adapted=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean query loss after 3 inner steps and its gradient w.r.t. theta (and the Meta-SGD rates)."""
    net, loss, support, query = case
    theta = params_of(net)
    lr = meta_sgd_lr(theta, 0.1) if meta_sgd else 0.1
    kw = dict(lr=lr, steps=3, first_order=first_order, checkpoint=checkpoint)
    if batched:
        assert adapted is None
        fast = adapt_batched(loss, theta, support, **kw)
        total = torch.func.vmap(loss)(fast, query).mean()
    else:
        total = sum(loss(adapt(loss, theta, (support[0][i], support[1][i]), adapted=adapted, **kw),
                         (query[0][i], query[1][i])) for i in range(TASKS)) / TASKS
    wrt = list(theta.values()) + (list(lr.values()) if meta_sgd else [])
    return total.detach(), list(torch.autograd.grad(total, wrt))


@pytest.mark.parametrize("make", [mlp_case, conv_case], ids=["mlp", "conv"])
@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
@pytest.mark.parametrize("meta_sgd", [False, True], ids=["lr", "meta_sgd"])
def test_checkpointed_second_order_meta_gradient_equals_stored(make, batched, meta_sgd):
    case = make()
    loss0, g0 = meta_gradient(case, checkpoint=False, batched=batched, meta_sgd=meta_sgd)
    loss1, g1 = meta_gradient(case, checkpoint=True, batched=batched, meta_sgd=meta_sgd)
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=1e-12)
    assert any(g.abs().max() > 1e-6 for g in g0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_checkpointed_first_order_and_adapted_subset_equal_stored():
    """FOMAML, and ANIL's subset: the parameters that do not adapt still get their meta-gradient."""
    case = mlp_case()
    for kw in ({"first_order": True}, {"adapted": ["4.weight", "4.bias"]}):
        _, g0 = meta_gradient(case, checkpoint=False, batched=False, meta_sgd=False, **kw)
        _, g1 = meta_gradient(case, checkpoint=True, batched=False, meta_sgd=False, **kw)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_recomputed_is_the_function_and_its_vjp():
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(p, scale):
        return {"a": torch.sin(p["w"]) * scale, "b": p["w"] * p["c"]}

    out = recomputed(fn, {"w": w, "c": c}, 2.0)
    ref = fn({"w": w, "c": c}, 2.0)
    for k in ("a", "b"):
        torch.testing.assert_close(out[k], ref[k])
    g = torch.autograd.grad(out["a"].sum() + (out["b"] ** 2).sum(), [w, c])
    g_ref = torch.autograd.grad(ref["a"].sum() + (ref["b"] ** 2).sum(), [w, c])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_memory_option_train_step_gives_the_stored_meta_gradient():
    """``inner.checkpoint`` in the learner: recomputed inner steps and one backward per chunk of tasks
    leave the same gradients in ``.grad`` as one backward over the whole stored graph."""
    from metarl.fewshot.learner import SupervisedMAML
    from metarl.fewshot.tasks import TaskBatch

    class Fixed:
        """Always the same 4 conv tasks (float64), whatever the generator."""

        def __init__(self) -> None:
            g = torch.Generator().manual_seed(3)
            self.batch = TaskBatch(torch.rand(4, 4, 1, 28, 28, generator=g, dtype=torch.float64),
                                   torch.arange(4).repeat(4, 1),
                                   torch.rand(4, 8, 1, 28, 28, generator=g, dtype=torch.float64),
                                   torch.arange(4).repeat(4, 2))

        def sample(self, n_tasks, generator):
            return self.batch

    grads = {}
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = Conv4(1, 4, filters=6).double()
        tasks = Fixed()
        learner = SupervisedMAML(net, tasks, tasks.batch, loss="ce", meta_batch_size=4, inner_lr=0.1,
                                 inner_steps=3, first_order=False, learn_lr=False, outer_lr=0.0, grad_clip=0.0,
                                 seed=0, task_chunk=2, checkpoint=checkpoint)
        learner.train_step(1, log=False)
        grads[checkpoint] = [p.grad.clone() for p in net.parameters()]
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
