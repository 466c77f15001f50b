"""The paper's few-shot classifiers: shapes, batch statistics, and MAML over tasks with vmap.

The vmap path (``adapt_batched``) is checked against the per-task loop (``adapt``) and both
against a hand-written second-order MAML (plain tensor ops, a batch norm written out, and
``torch.autograd.grad(create_graph=True)``), in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarl.fewshot.models import BatchNorm, Conv4, FCNet, accuracy, build_classifier, cross_entropy_loss
from metarl.maml import adapt, adapt_batched, functional_forward, params_of

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "model,x_shape,features",
    [
        (Conv4(1, 5), (1, 28, 28), 64),  # Omniglot, strided: spatial mean of 64 x 2 x 2
        (Conv4(1, 20, downsample="maxpool"), (1, 28, 28), 64),  # 28 -> 1
        (Conv4(3, 5, filters=32, downsample="maxpool", image_size=84), (3, 84, 84), 800),  # 32 x 5 x 5
        (FCNet(784, 5), (1, 28, 28), 64),
    ],
)
def test_output_shapes(model: nn.Module, x_shape: tuple[int, ...], features: int) -> None:
    out = model(torch.randn(7, *x_shape))
    assert out.shape == (7, model.head.out_features)
    assert model.head.in_features == features
    assert list(model.buffers()) == []  # no running statistics


def test_build_classifier() -> None:
    conv = build_classifier("conv4", (3, 84, 84), 5, filters=32, downsample="maxpool")
    assert isinstance(conv, Conv4) and conv.head.in_features == 800
    fc = build_classifier("fc", (1, 28, 28), 5)
    assert isinstance(fc, FCNet)
    assert [m.out_features for m in fc.modules() if isinstance(m, nn.Linear)] == [256, 128, 64, 64, 5]
    with pytest.raises(ValueError, match="unknown classifier"):
        build_classifier("resnet", (1, 28, 28), 5)


def test_batch_norm_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    model = Conv4(1, 5)
    x = torch.randn(10, 1, 28, 28)
    y = x.clone()
    y[1:] = torch.randn(9, 1, 28, 28)
    # the same first example gives different logits with different batch mates
    assert not torch.allclose(model(x)[0], model(y)[0], atol=1e-4)
    # and eval mode changes nothing (no running statistics to switch to)
    model.eval()
    assert torch.allclose(model(x), model.train()(x))
    # the layer is the textbook formula over the batch and spatial dims
    bn = BatchNorm(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 3.0]))
    h = torch.randn(6, 4, 5, 5)
    mean = h.mean(dim=(0, 2, 3), keepdim=True)
    var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    ref = (h - mean) / torch.sqrt(var + 1e-5) * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
    assert torch.allclose(bn(h), ref, atol=1e-5)
    torch_bn = nn.BatchNorm2d(4, track_running_stats=False)
    torch_bn.load_state_dict(bn.state_dict())
    assert torch.allclose(bn(h), torch_bn(h), atol=1e-6)


def _tasks(n: int, x_shape: tuple[int, ...], ways: int, shots: int, query: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(n, ways * shots, *x_shape, generator=g, dtype=dtype)
    ys = torch.arange(ways).repeat_interleave(shots).repeat(n, 1)
    xq = torch.randn(n, ways * query, *x_shape, generator=g, dtype=dtype)
    yq = torch.randint(0, ways, (n, ways * query), generator=g)
    return xs, ys, xq, yq


def _maml_batched(model, loss, xs, ys, xq, yq, steps, first_order):
    params = params_of(model)
    fast = adapt_batched(loss, params, (xs, ys), lr=0.4, steps=steps, first_order=first_order)
    outer = torch.func.vmap(loss)(fast, (xq, yq)).mean()
    return outer, torch.autograd.grad(outer, list(params.values()))


def _maml_loop(model, loss, xs, ys, xq, yq, steps, first_order):
    params = params_of(model)
    losses = [loss(adapt(loss, params, (xs[i], ys[i]), lr=0.4, steps=steps, first_order=first_order),
                   (xq[i], yq[i])) for i in range(xs.shape[0])]
    outer = torch.stack(losses).mean()
    return outer, torch.autograd.grad(outer, list(params.values()))


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize(
    "make,x_shape",
    [
        (lambda: Conv4(1, 5, filters=8), (1, 28, 28)),
        (lambda: Conv4(3, 5, filters=8, downsample="maxpool", image_size=20), (3, 20, 20)),
        (lambda: FCNet(64, 5), (1, 8, 8)),
    ],
)
def test_vmap_adaptation_equals_the_per_task_loop(make, x_shape, first_order: bool) -> None:
    torch.manual_seed(0)
    model = make().double()
    loss = cross_entropy_loss(model)
    data = _tasks(4, x_shape, ways=5, shots=2, query=3, dtype=torch.float64)
    out_b, g_b = _maml_batched(model, loss, *data, steps=2, first_order=first_order)
    out_l, g_l = _maml_loop(model, loss, *data, steps=2, first_order=first_order)
    assert torch.allclose(out_b, out_l, rtol=1e-10, atol=1e-12)
    fb, fl = _flat(g_b), _flat(g_l)
    assert (fb - fl).norm() <= 1e-9 * fl.norm()
    # the adapted logits agree too
    params = params_of(model)
    fast = adapt_batched(loss, params, data[:2], lr=0.4, steps=2, first_order=first_order)
    logits = torch.func.vmap(lambda p, x: functional_forward(model, p, x))(fast, data[2])
    for i in range(4):
        one = adapt(loss, params, (data[0][i], data[1][i]), lr=0.4, steps=2, first_order=first_order)
        assert torch.allclose(logits[i], functional_forward(model, one, data[2][i]), atol=1e-10)


def test_vmap_float32_conv4_omniglot_shape() -> None:
    torch.manual_seed(0)
    model = Conv4(1, 5)
    loss = cross_entropy_loss(model)
    data = _tasks(3, (1, 28, 28), ways=5, shots=1, query=2, dtype=torch.float32)
    out_b, g_b = _maml_batched(model, loss, *data, steps=1, first_order=False)
    out_l, g_l = _maml_loop(model, loss, *data, steps=1, first_order=False)
    assert torch.allclose(out_b, out_l, atol=1e-5)
    fb, fl = _flat(g_b), _flat(g_l)
    assert (fb - fl).norm() <= 1e-4 * fl.norm()


def _manual_conv_net(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Conv4 (2 strided blocks) written with plain ops and a hand-written batch norm."""
    h = x
    for conv, bn in (("features.0", "features.1"), ("features.3", "features.4")):
        h = F.conv2d(h, p[f"{conv}.weight"], p[f"{conv}.bias"], stride=2, padding=1)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = ((h - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5) * p[f"{bn}.weight"].view(1, -1, 1, 1) + p[f"{bn}.bias"].view(
            1, -1, 1, 1)
        h = torch.relu(h)
    return h.mean(dim=(2, 3)) @ p["head.weight"].T + p["head.bias"]


def test_second_order_meta_gradient_matches_a_hand_written_maml() -> None:
    torch.manual_seed(0)
    model = Conv4(2, 3, filters=4, image_size=8, blocks=2).double()
    with torch.no_grad():  # non-trivial batch-norm scale/shift, so their gradients matter
        for name, t in model.named_parameters():
            if name in ("features.1.weight", "features.4.weight"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif name in ("features.1.bias", "features.4.bias"):
                t.copy_(torch.randn_like(t))
    xs, ys, xq, yq = _tasks(3, (2, 8, 8), ways=3, shots=2, query=2, dtype=torch.float64)
    _, g_b = _maml_batched(model, cross_entropy_loss(model), xs, ys, xq, yq, steps=1, first_order=False)

    names = [n for n, _ in model.named_parameters()]
    theta = [t.detach().clone().requires_grad_(True) for t in model.parameters()]
    total = 0.0
    for i in range(3):
        p = dict(zip(names, theta))
        inner = F.cross_entropy(_manual_conv_net(p, xs[i]), ys[i])
        grads = torch.autograd.grad(inner, theta, create_graph=True)
        fast = {n: t - 0.4 * g for n, t, g in zip(names, theta, grads)}
        total = total + F.cross_entropy(_manual_conv_net(fast, xq[i]), yq[i]) / 3
    g_ref = torch.autograd.grad(total, theta)
    for n, a, b in zip(names, g_b, g_ref):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12), n


def test_accuracy_and_loss() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    assert accuracy(logits, y).item() == pytest.approx(2 / 3)
    model = FCNet(4, 2)
    x = torch.randn(6, 4)
    yy = torch.tensor([0, 1, 0, 1, 0, 1])
    assert torch.allclose(cross_entropy_loss(model)(params_of(model), (x, yy)), F.cross_entropy(model(x), yy))


def test_adaptation_curve_is_the_same_in_any_chunking_and_equals_hand_written_sgd() -> None:
    """Evaluation curves: chunks of tasks under vmap or one task at a time (the CPU default for
    images) give the same accuracies, equal to plain SGD steps written out with autograd."""
    from metarl.fewshot.learner import adaptation_curve
    from metarl.fewshot.tasks import TaskBatch

    torch.manual_seed(0)
    model = Conv4(1, 3, filters=8)
    xs, ys, xq, yq = _tasks(4, (1, 28, 28), ways=3, shots=2, query=3, dtype=torch.float32)
    batch = TaskBatch(xs, ys, xq, yq)
    params = dict(model.named_parameters())
    curves = [adaptation_curve(model, params, batch, loss="ce", lr=0.4, steps=2, chunk=c) for c in (None, 1, 3, 100)]
    for c in curves[1:]:
        torch.testing.assert_close(c, curves[0])
    expected = torch.zeros(3, 4)
    for i in range(4):
        p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        for k in range(3):
            with torch.no_grad():
                expected[k, i] = (functional_forward(model, p, xq[i]).argmax(-1) == yq[i]).float().mean()
            if k < 2:
                loss = F.cross_entropy(functional_forward(model, p, xs[i]), ys[i])
                grads = torch.autograd.grad(loss, list(p.values()))
                p = {n: (v - 0.4 * g).detach().requires_grad_(True) for (n, v), g in zip(p.items(), grads, strict=True)}
    torch.testing.assert_close(curves[0], expected)
    assert float((curves[0][2] - curves[0][0]).abs().sum()) > 0  # adaptation changed some prediction
    with pytest.raises(ValueError, match="chunk=0"):
        adaptation_curve(model, params, batch, loss="ce", lr=0.4, steps=1, chunk=0)
