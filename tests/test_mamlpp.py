"""MAML++ (Antoniou et al. 2019, arXiv 1810.09502 sec. 4): each switch against a hand-written inner loop.

The references below never call :mod:`metarl.maml`: they step with ``torch.autograd.grad`` and
``torch.func.functional_call`` directly, in float64, so the learner's one inner loop (``adapt_path``
with per-step rates, per-step batch-norm views, the multi-step loss and derivative-order annealing) is
checked against an independent computation.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarl.config import config_from_dict, load_config
from metarl.fewshot.build import build_sinusoid
from metarl.fewshot.learner import SupervisedMAML, adaptation_curve, cosine_lr, msl_weights
from metarl.fewshot.models import BatchNorm, FCNet, step_tables
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.fewshot.tasks import TaskBatch
from metarl.nets import mlp

torch.set_num_threads(1)


# ---------------------------------------------------------------------------- helpers
def regression_batch(n: int = 3, seed: int = 0) -> TaskBatch:
    b = SinusoidTasks(shots=5, query=6).sample(n, torch.Generator().manual_seed(seed))
    return TaskBatch(*(t.double() for t in (b.x_support, b.y_support, b.x_query, b.y_query)))


def classification_batch(n: int = 2, ways: int = 3, shots: int = 2, features: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * ways * shots, features, generator=g, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(shots).repeat(2).expand(n, -1)
    return TaskBatch(x[:, : ways * shots], y[:, : ways * shots], x[:, ways * shots :], y[:, ways * shots :])


def learner(module: nn.Module, *, loss: str = "mse", steps: int = 2, lr: float = 0.05, first_order: bool = False,
            double: bool = True, **kw) -> SupervisedMAML:
    val = regression_batch(2, seed=9) if loss == "mse" else classification_batch(seed=9)
    if not double:  # float32, to train on sampled tasks
        val = TaskBatch(*(t.float() for t in (val.x_support, val.y_support, val.x_query, val.y_query)))
    return SupervisedMAML(
        module.double() if double else module, SinusoidTasks(shots=5, query=6), val, loss=loss, meta_batch_size=3,
        inner_lr=lr, inner_steps=steps, first_order=first_order, learn_lr=False, outer_lr=1e-3, grad_clip=0.0, seed=0,
        **kw,
    )


def sinusoid_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return mlp([1, 16, 16, 1], "relu")


def hand_path(module, theta, xs, ys, *, loss, rate, steps, first_order, adapted=None, view=None):
    """[theta_0, ..., theta_steps] (each as the model sees it) by plain autograd: no metarl.maml."""
    view = view or (lambda p, k: p)
    names = list(theta) if adapted is None else adapted
    p, path = dict(theta), [view(dict(theta), 0)]
    for k in range(steps):
        out = torch.func.functional_call(module, view(p, k), (xs,))
        inner = F.mse_loss(out, ys) if loss == "mse" else F.cross_entropy(out, ys)
        grads = torch.autograd.grad(inner, [p[n] for n in names], create_graph=not first_order)
        p = {**p, **{n: p[n] - rate(k, n) * g for n, g in zip(names, grads, strict=True)}}
        path.append(view(p, k + 1))
    return path


def hand_meta_loss(module, theta, batch, *, loss="mse", weights, **kw):
    """Mean over tasks of sum_k weights[k] * query loss after k+1 steps."""
    total = 0.0
    for i in range(batch.num_tasks):
        path = hand_path(module, theta, batch.x_support[i], batch.y_support[i], loss=loss, **kw)
        for k, w in enumerate(weights):
            out = torch.func.functional_call(module, path[k + 1], (batch.x_query[i],))
            q = F.mse_loss(out, batch.y_query[i]) if loss == "mse" else F.cross_entropy(out, batch.y_query[i])
            total = total + w * q
    return total / batch.num_tasks


def grads_of(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def assert_all_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- all off = MAML
@pytest.mark.parametrize("first_order", [False, True])
def test_all_switches_off_is_maml(first_order):
    lrn = learner(sinusoid_mlp(), steps=2, first_order=first_order)
    theta = lrn.params()
    batch = regression_batch()
    ours = lrn.meta_loss(batch, iteration=7)
    ref = hand_meta_loss(lrn.module, theta, batch, weights=[0.0, 1.0], rate=lambda k, n: 0.05, steps=2,
                         first_order=first_order)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    assert_all_close(grads_of(ours, list(theta.values())), grads_of(ref, list(theta.values())))
    # and the same as before this change: iteration=None, and the plain MAML loss of every iteration
    torch.testing.assert_close(lrn.meta_loss(batch), ours, rtol=0, atol=0)


# ---------------------------------------------------------------------------- MSL
def test_msl_weights_follow_the_mamlpp_schedule():
    # t = 0: uniform; t = 0.4 with N = 3: non-final (1 - t) / N = 0.2, last (1 + 2 t) / N = 0.6
    assert msl_weights(3, 0, 100) == pytest.approx([1 / 3] * 3)
    assert msl_weights(3, 40, 100) == pytest.approx([0.2, 0.2, 0.6])
    # near the end the non-final weights sit at their floor 0.03 / N and the last at 1 - (N-1) 0.03 / N
    assert msl_weights(3, 99, 100) == pytest.approx([0.01, 0.01, 0.98])
    # off, over, or annealing finished: the last step only (MAML)
    for w in (msl_weights(3, 5, 0), msl_weights(3, 100, 100), msl_weights(3, None, 100)):
        assert w == [0.0, 0.0, 1.0]
    assert msl_weights(1, 0, 100) == [1.0]

    # the MAML++ code's per-epoch vector (get_per_step_loss_importance_vector), epoch = iteration // 500
    def code_vector(n: int, epoch: int, msl_epochs: int) -> np.ndarray:
        w = np.ones(n) / n
        decay, floor = 1.0 / n / msl_epochs, 0.03 / n
        for i in range(n - 1):
            w[i] = np.maximum(w[i] - epoch * decay, floor)
        w[-1] = np.minimum(w[-1] + epoch * (n - 1) * decay, 1.0 - (n - 1) * floor)
        return w

    for epoch in range(10):
        ours = msl_weights(5, epoch * 500, 10 * 500)
        np.testing.assert_allclose(ours, code_vector(5, epoch, 10), rtol=1e-12)
        assert sum(ours) == pytest.approx(1.0)


def test_multi_step_loss_is_the_weighted_sum_of_per_step_query_losses():
    lrn = learner(sinusoid_mlp(1), steps=3, msl_iterations=100)
    theta, batch = lrn.params(), regression_batch(seed=3)
    ours = lrn.meta_loss(batch, iteration=40)
    ref = hand_meta_loss(lrn.module, theta, batch, weights=[0.2, 0.2, 0.6], rate=lambda k, n: 0.05, steps=3,
                         first_order=False)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    assert_all_close(grads_of(ours, list(theta.values())), grads_of(ref, list(theta.values())))
    # after msl_iterations: the last step only
    last = hand_meta_loss(lrn.module, theta, batch, weights=[0, 0, 1], rate=lambda k, n: 0.05, steps=3,
                          first_order=False)
    torch.testing.assert_close(lrn.meta_loss(batch, iteration=100), last, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- LSLR
def test_learned_per_layer_per_step_rates_step_and_receive_gradients():
    lrn = learner(sinusoid_mlp(2), steps=2, lslr=True)
    names = list(lrn.params())
    assert {k.replace("-", "."): tuple(v.shape) for k, v in lrn.lr_params.items()} == {n: (2,) for n in names}
    with torch.no_grad():  # a different rate for every tensor and step
        for i, v in enumerate(lrn.lr_params.values()):
            v.copy_(torch.tensor([0.01 + 0.01 * i, 0.08 - 0.005 * i], dtype=v.dtype))
    rates = {k.replace("-", "."): v for k, v in lrn.lr_params.items()}
    theta, batch = lrn.params(), regression_batch(seed=4)
    ours = lrn.meta_loss(batch, iteration=1)
    ref = hand_meta_loss(lrn.module, theta, batch, weights=[0.0, 1.0], rate=lambda k, n: rates[n][k], steps=2,
                         first_order=False)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    leaves = list(theta.values()) + list(rates.values())
    g_ours, g_ref = grads_of(ours, leaves), grads_of(ref, leaves)
    assert_all_close(g_ours, g_ref)
    lr_grads = dict(zip(rates, g_ours[len(theta):], strict=True))
    assert all(torch.all(g != 0) for g in lr_grads.values()), "every rate of every step gets a meta-gradient"
    # one rate against a central finite difference
    name, eps = names[2], 1e-6
    with torch.no_grad():
        rates[name][1] += eps
        plus = lrn.meta_loss(batch, iteration=1)
        rates[name][1] -= 2 * eps
        minus = lrn.meta_loss(batch, iteration=1)
        rates[name][1] += eps
    assert float(lr_grads[name][1]) == pytest.approx(float(plus - minus) / (2 * eps), rel=1e-5)


def test_learned_rates_are_the_rates_of_evaluation():
    """Validation and `metarl evaluate` adapt with the same per-step rates as training; past the trained steps
    the last step's rate carries on."""
    lrn = learner(sinusoid_mlp(3), steps=2, lslr=True)
    with torch.no_grad():
        for v in lrn.lr_params.values():
            v.copy_(torch.tensor([0.02, 0.07], dtype=v.dtype))
    batch = regression_batch(4, seed=5)
    curve = adaptation_curve(lrn.module, lrn.params(), batch, loss="mse", lr=lrn.lr, steps=4)
    theta = {k: v.detach().requires_grad_(True) for k, v in lrn.params().items()}
    for i in range(batch.num_tasks):
        path = hand_path(lrn.module, theta, batch.x_support[i], batch.y_support[i], loss="mse",
                         rate=lambda k, n: [0.02, 0.07][min(k, 1)], steps=4, first_order=True)
        ref = [F.mse_loss(torch.func.functional_call(lrn.module, p, (batch.x_query[i],)), batch.y_query[i])
               for p in path]
        torch.testing.assert_close(curve[:, i], torch.stack(ref).detach(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- DA
def test_derivative_order_annealing_is_first_order_then_second_order():
    lrn = learner(sinusoid_mlp(4), steps=2, da_iterations=3)
    theta, batch = lrn.params(), regression_batch(seed=6)
    leaves = list(theta.values())

    def ref(first_order: bool) -> list[torch.Tensor]:
        return grads_of(hand_meta_loss(lrn.module, theta, batch, weights=[0, 1], rate=lambda k, n: 0.05, steps=2,
                                       first_order=first_order), leaves)

    fo, so = ref(True), ref(False)
    for it in (1, 3):
        assert_all_close(grads_of(lrn.meta_loss(batch, iteration=it), leaves), fo)
    for it in (4, None):
        assert_all_close(grads_of(lrn.meta_loss(batch, iteration=it), leaves), so)
    assert any(not torch.allclose(a, b) for a, b in zip(fo, so, strict=True))


# ---------------------------------------------------------------------------- per-step batch norm
def per_step_net(seed: int = 0, bn_steps: int = 2) -> FCNet:
    torch.manual_seed(seed)
    return FCNet(5, 3, hidden=(8, 6), bn_steps=bn_steps)


def test_per_step_batch_norm_tables_are_selected_by_step_and_not_adapted():
    net = per_step_net().double()
    tables = step_tables(net)
    assert tables == ["body.1.weight", "body.1.bias", "body.4.weight", "body.4.bias"]
    assert all(dict(net.named_parameters())[n].shape[0] == 3 for n in tables)  # rows for steps 0, 1, 2
    with torch.no_grad():
        for n in tables:
            dict(net.named_parameters())[n].normal_()
    lrn = learner(net, loss="ce", steps=2, lr=0.3)
    theta, batch = lrn.params(), classification_batch(seed=1)

    def view(p, k):
        return {**p, **{n: p[n][min(k, 2)] for n in tables if p[n].dim() == 2}}

    adapted = [n for n in theta if n not in tables]
    ours = lrn.meta_loss(batch, iteration=1)
    ref = hand_meta_loss(lrn.module, theta, batch, loss="ce", weights=[0, 1], rate=lambda k, n: 0.3, steps=2,
                         first_order=False, adapted=adapted, view=view)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    g = grads_of(ours, list(theta.values()))
    assert_all_close(g, grads_of(ref, list(theta.values())))
    for name, gi in zip(theta, g, strict=True):
        if name in tables:  # every row is used (support at steps 0, 1; the query after step 2)
            assert all(torch.any(row != 0) for row in gi), name
    # outside the inner loop a forward pass uses row 0
    x = batch.x_query[0]
    by_hand = torch.func.functional_call(net, view(dict(net.named_parameters()), 0), (x,))
    torch.testing.assert_close(net(x), by_hand, rtol=0, atol=0)


def test_per_step_batch_norm_with_equal_rows_is_shared_batch_norm():
    """Rows all equal to a shared scale/shift: the same meta-loss as one shared batch norm (held out of the
    inner loop too), and the rows' meta-gradients sum to the shared one's."""
    steps = 2
    per_step, shared = per_step_net(5, steps).double(), per_step_net(5, 0).double()
    with torch.no_grad():
        for (n, p), (_, q) in zip(per_step.named_parameters(), shared.named_parameters(), strict=True):
            if p.dim() == 2 and n in step_tables(per_step):
                q.normal_()
                p.copy_(q.expand_as(p))
            else:
                q.copy_(p)
    tables = step_tables(per_step)
    lrn = learner(per_step, loss="ce", steps=steps, lr=0.3)
    theta, batch = lrn.params(), classification_batch(seed=2)
    ours = lrn.meta_loss(batch)
    theta_shared = dict(shared.named_parameters())
    ref = hand_meta_loss(shared, theta_shared, batch, loss="ce", weights=[0, 1], rate=lambda k, n: 0.3,
                         steps=steps, first_order=False, adapted=[n for n in theta_shared if n not in tables])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    g, g_ref = grads_of(ours, list(theta.values())), grads_of(ref, list(theta_shared.values()))
    for name, a, b in zip(theta, g, g_ref, strict=True):
        torch.testing.assert_close(a.sum(0) if name in tables else a, b, rtol=1e-9, atol=1e-12)


def test_batch_norm_without_steps_is_unchanged():
    bn = BatchNorm(4)
    assert bn.weight.shape == (4,) and step_tables(nn.Sequential(bn)) == []


# ---------------------------------------------------------------------------- cosine annealing
def test_cosine_lr_is_torch_cosine_annealing():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-5)
    for it in range(13):
        expected = opt.param_groups[0]["lr"] if it <= 10 else 1e-5
        assert cosine_lr(1e-3, 1e-5, it, 10) == pytest.approx(expected, rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


def test_learner_anneals_the_outer_step_and_resumes_on_the_same_curve():
    def make() -> SupervisedMAML:
        return learner(sinusoid_mlp(6), steps=1, cosine_iterations=8, min_lr=1e-5, double=False)

    a = make()
    lrs = []
    for it in range(1, 9):
        a.train_step(it, log=False)
        lrs.append(a.optimizer.param_groups[0]["lr"])
        if it == 4:
            state = copy.deepcopy(a.state_dict())
    assert lrs == pytest.approx([cosine_lr(1e-3, 1e-5, it - 1, 8) for it in range(1, 9)])
    b = make()
    b.load_state_dict(state)
    for it in range(5, 9):
        b.train_step(it, log=False)
    assert b.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_learned_rates_take_the_scaled_adam_step_through_the_cosine_schedule():
    """Adam's first step moves every entry by its step size (to within eps): the weights by the outer
    step, the learned rates by ``rates_lr_scale`` times it, on the cosine schedule too."""
    for cosine in (0, 8):
        lrn = learner(sinusoid_mlp(2), steps=2, lslr=True, rates_lr_scale=0.1, cosine_iterations=cosine,
                      min_lr=1e-5, double=False)
        w0 = {k: v.detach().clone() for k, v in lrn.module.named_parameters()}
        r0 = {k: v.detach().clone() for k, v in lrn.lr_params.items()}
        lrn.train_step(1, log=False)
        step = cosine_lr(1e-3, 1e-5, 0, cosine) if cosine else 1e-3
        moved_w = torch.cat([(v.detach() - w0[k]).abs().flatten() for k, v in lrn.module.named_parameters()])
        moved_r = torch.cat([(v.detach() - r0[k]).abs().flatten() for k, v in lrn.lr_params.items()])
        assert moved_w.max().item() == pytest.approx(step, rel=1e-3)
        assert moved_r[moved_r > 0].min().item() == pytest.approx(0.1 * step, rel=1e-2)
        assert moved_r.max().item() == pytest.approx(0.1 * step, rel=1e-3)
        assert [g["lr"] for g in lrn.optimizer.param_groups] == pytest.approx([step, 0.1 * step])


def test_gradient_clipping_covers_the_learned_rates():
    """``grad_clip`` bounds the norm of the whole meta-gradient, the learned rates' part included."""
    lrn = learner(sinusoid_mlp(3), steps=2, lslr=True, double=False)
    lrn.grad_clip = 1e-3
    metrics = lrn.train_step(1, log=True)
    grads = [p.grad for group in lrn.optimizer.param_groups for p in group["params"]]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert metrics["train/grad_norm"] > 1e-2  # it did clip
    assert total.item() == pytest.approx(1e-3, rel=1e-4)
    rates = torch.stack([torch.linalg.vector_norm(v.grad) for v in lrn.lr_params.values()])
    assert torch.linalg.vector_norm(rates).item() < 1e-3


# ---------------------------------------------------------------------------- configs and a learning run
def test_shipped_presets_turn_the_switches_on():
    sin = load_config("sinusoid_mamlpp")
    assert sin.mamlpp.lslr and sin.mamlpp.msl_iterations > 0 and sin.mamlpp.da_iterations > 0 and sin.optim.cosine
    omni = load_config("omniglot_5w1s_mamlpp")
    m = omni.mamlpp
    assert m.lslr and m.msl_iterations > 0 and m.da_iterations > 0 and m.bn_per_step and omni.optim.cosine
    assert (omni.inner.steps, omni.inner.lr, omni.meta_batch_size) == (5, 0.1, 8)
    with pytest.raises(ValueError, match="bn_per_step"):
        build_sinusoid(config_from_dict({"benchmark": "sinusoid", "mamlpp": {"bn_per_step": True}}))


def test_mamlpp_sinusoid_run_improves_post_adaptation_mse():
    cfg = config_from_dict({
        "benchmark": "sinusoid", "seed": 3, "num_iterations": 300, "meta_batch_size": 10,
        "inner": {"lr": 0.01, "steps": 3}, "eval": {"tasks": 50},
        "mamlpp": {"msl_iterations": 150, "lslr": True, "da_iterations": 100},
        "optim": {"lr": 0.003, "cosine": True},
    })
    lrn = build_sinusoid(cfg)
    before = lrn.validate()["val/mse_post"]
    for it in range(1, cfg.num_iterations + 1):
        lrn.train_step(it, log=False)
    after = lrn.validate()
    assert after["val/mse_post"] < 0.6 * before, (before, after)
    assert after["val/mse_post"] < after["val/mse_pre"]
    assert math.isfinite(after["val/mse_post"])


def test_a_trained_run_adapts_with_its_learned_rates_everywhere(tmp_path):
    """`metarl train`, `metarl evaluate` and `metarl.load(run).adapt` share the run's per-step rates."""
    import metarl
    from metarl.evaluate import evaluate
    from metarl.training import train

    cfg = config_from_dict({
        "benchmark": "sinusoid", "name": "pp", "seed": 0, "num_iterations": 20, "meta_batch_size": 4,
        "log_every": 10, "checkpoint_every": 20, "inner": {"steps": 2, "test_steps": 3},
        "eval": {"every": 20, "tasks": 10}, "mamlpp": {"lslr": True, "msl_iterations": 10},
        "optim": {"lr": 0.01, "cosine": True},
    })
    run_dir = train(cfg, logdir=tmp_path / "run", quiet=True)
    res = evaluate(run_dir, n_tasks=5, steps=3, seed=1, pretrain_iterations=0)
    run = metarl.load(run_dir)
    assert {tuple(v.shape) for v in run.lr.values()} == {(2,)}  # learned [steps] rates, not Meta-SGD tensors
    assert len({float(v[0]) for v in run.lr.values()} | {float(v[1]) for v in run.lr.values()}) > 1
    b = SinusoidTasks().sample(3, torch.Generator().manual_seed(4))
    curve = adaptation_curve(run.module, run.params, b, loss="mse", lr=[{k: v[i] for k, v in run.lr.items()}
                                                                        for i in range(2)], steps=3)
    for i in range(3):
        fast = run.adapt(b.x_support[i], b.y_support[i], steps=3)
        err = F.mse_loss(run.predict(fast, b.x_query[i]), b.y_query[i])
        torch.testing.assert_close(err, curve[3, i], rtol=1e-5, atol=1e-6)
    assert [s["step"] for s in res["by_step"]] == [0, 1, 2, 3]
