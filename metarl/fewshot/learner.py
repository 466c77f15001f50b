"""Supervised MAML (regression and classification): meta-training and adaptation curves.

One code path for training and evaluation: both call :func:`metarl.maml.adapt_path` (batched
over tasks by ``vmap``) with the run's :func:`inner_plan`. Finn et al. 2017 (arXiv 1703.03400),
Algorithm 2; the MAML++ switches (Antoniou et al. 2019, arXiv 1810.09502 sec. 4) and ANIL (Raghu
et al. 2020, arXiv 1909.09157) are arguments of the same learner, all off by default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarl.checkpoint import rng_state, set_rng_state
from metarl.fewshot.models import accuracy, cross_entropy_loss, step_tables, step_view
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import (
    LearningRate,
    Params,
    StepRates,
    StepView,
    adapt_path,
    detach_params,
    functional_forward,
    meta_sgd_lr,
)
from metarl.progress import progress


class TaskDistribution(Protocol):
    def sample(self, n_tasks: int, generator: torch.Generator) -> TaskBatch: ...


def make_loss(module: nn.Module, kind: str) -> Callable[[Params, Any], torch.Tensor]:
    """``loss(params, (x, y))`` for one task: mean squared error (``"mse"``) or cross-entropy
    (``"ce"``, the one :func:`~metarl.fewshot.models.cross_entropy_loss`)."""
    if kind == "mse":

        def mse(params: Params, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = data
            return F.mse_loss(functional_forward(module, params, x), y)

        return mse
    return cross_entropy_loss(module)


def make_metric(module: nn.Module, kind: str) -> Callable[[Params, Any], torch.Tensor]:
    """The reported metric for one task: MSE (regression) or accuracy (classification, the one
    :func:`~metarl.fewshot.models.accuracy` of the logits)."""
    if kind == "mse":
        return make_loss(module, "mse")

    def task_accuracy(params: Params, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = data
        return accuracy(functional_forward(module, params, x), y)

    return task_accuracy


class InnerPlan(NamedTuple):
    """What the inner loop of a module moves and shows: ``adapted`` names (None: all) and the
    per-step view (None: none), the ``adapted`` / ``at_step`` of :func:`metarl.maml.adapt_path`."""

    adapted: list[str] | None
    at_step: StepView | None


def head_names(module: nn.Module) -> list[str]:
    """The parameters of the last ``nn.Linear`` of ``module``: the head that ANIL adapts."""
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"ANIL needs a linear head; {type(module).__name__} has no nn.Linear")
    name, head = linears[-1]
    return [f"{name}.{p}" if name else p for p, _ in head.named_parameters(recurse=False)]


def inner_plan(module: nn.Module, anil: bool = False) -> InnerPlan:
    """The inner loop of ``module``: ANIL adapts the head only (Raghu et al. 2020, arXiv 1909.09157,
    sec. 4); per-step batch-norm tables (MAML++ BNWB) are shown row k at step k and never adapted,
    as in the MAML++ code (``enable_inner_loop_optimizable_bn_params: false``); otherwise all adapt."""
    tables = step_tables(module)
    view = step_view(tables) if tables else None
    if anil:
        return InnerPlan(head_names(module), view)
    if tables:
        return InnerPlan([n for n, _ in module.named_parameters() if n not in tables], view)
    return InnerPlan(None, None)


def inner_lr(default: float, learned: Mapping[str, torch.Tensor] | None, per_step: bool) -> LearningRate | StepRates:
    """The run's inner rate: ``default``; the learned per-parameter tensors (Meta-SGD); or, ``per_step``,
    the learned ``[S]`` rate of each parameter tensor turned into one dict per step (MAML++ LSLR).
    ``learned`` keys may spell ``.`` as ``-`` (a ``ParameterDict``'s names)."""
    if learned is None:
        return default
    rates = {k.replace("-", "."): v for k, v in learned.items()}
    if not per_step:
        return rates
    steps = len(next(iter(rates.values())))
    return [{k: v[i] for k, v in rates.items()} for i in range(steps)]


def msl_weights(steps: int, iteration: int | None, msl_iterations: int) -> list[float]:
    """Per-step weights of the query losses after steps 1..``steps`` (MAML++ MSL, Antoniou et al. 2019,
    arXiv 1810.09502 sec. 4; the schedule of its code's ``get_per_step_loss_importance_vector`` with the
    epoch counted in iterations, t = iteration / msl_iterations).

    Uniform ``1/N`` at t = 0; each non-final weight falls as ``(1 - t) / N`` down to ``0.03 / N`` and the
    last rises as ``(1 + (N - 1) t) / N`` up to ``1 - (N - 1) 0.03 / N``, so they sum to 1. From
    ``msl_iterations`` on, with 0, or with ``iteration=None`` (annealing over): the last step only (MAML).
    """
    if steps <= 1 or msl_iterations <= 0 or iteration is None or iteration >= msl_iterations:
        return [0.0] * (steps - 1) + [1.0] if steps > 0 else []
    t, floor = iteration / msl_iterations, 0.03 / steps
    last = min((1 + (steps - 1) * t) / steps, 1 - (steps - 1) * floor)
    return [max((1 - t) / steps, floor)] * (steps - 1) + [last]


def cosine_lr(lr: float, min_lr: float, iteration: int, total: int) -> float:
    """The half-cosine step size after ``iteration`` of ``total`` steps (MAML++ CA, Antoniou et al. 2019,
    arXiv 1810.09502 sec. 4): ``min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2``, the closed form of
    ``torch.optim.lr_scheduler.CosineAnnealingLR``; a function of the iteration, so a resumed run needs no
    scheduler state."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * min(iteration, total) / total)) / 2


def adaptation_curve(
    module: nn.Module,
    params: Mapping[str, torch.Tensor],
    batch: TaskBatch,
    *,
    loss: str,
    lr: LearningRate | StepRates,
    steps: int,
    chunk: int | None = None,
    anil: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """Query metric of each task after 0..``steps`` inner steps on its support set: ``[steps+1, N]``.

    Adaptation is :func:`adapt_path` with the module's :func:`inner_plan` (``anil``: the head
    only), batched over tasks (``vmap`` over ``chunk`` tasks at a time); nothing
    is differentiated through the result. ``chunk=None`` picks 1 for images on the CPU
    (conv nets under ``vmap`` measured 3x slower there: 20-way Omniglot, 20 tasks, 5 steps,
    18.6 s in one chunk against 5.9 s one by one) and 100 otherwise. ``desc`` names a progress bar
    over the tasks on stderr (``metarl evaluate``); ``None`` shows none (validation during training).
    """
    if chunk is None:
        chunk = 1 if batch.x_support.dim() >= 5 and batch.x_support.device.type == "cpu" else 100
    if chunk < 1:
        raise ValueError(f"adaptation_curve: chunk={chunk} must be >= 1")
    loss_fn, metric_fn = make_loss(module, loss), make_metric(module, loss)
    theta = detach_params(params)
    lr_ = [_detach_lr(r) for r in lr] if isinstance(lr, list | tuple) else _detach_lr(lr)
    plan = inner_plan(module, anil)

    def one(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        path = adapt_path(loss_fn, theta, (xs, ys), lr=lr_, steps=steps, first_order=True, adapted=plan.adapted,
                          at_step=plan.at_step)
        return torch.stack([metric_fn(p, (xq, yq)) for p in path])

    results = []
    with torch.no_grad(), progress(total=batch.num_tasks, desc=desc or "", unit="task", disable=desc is None) as bar:
        for s in range(0, batch.num_tasks, chunk):
            t = slice(s, s + chunk)
            results.append(
                torch.func.vmap(one)(batch.x_support[t], batch.y_support[t], batch.x_query[t], batch.y_query[t])
            )
            bar.update(len(results[-1]))
    return torch.cat(results).T


def _detach_lr(lr: LearningRate) -> LearningRate:
    return detach_params(lr) if isinstance(lr, Mapping) else lr


class SupervisedMAML:
    """Meta-trains ``module`` with MAML (or plain joint training, the paper's baseline) and Adam.

    Args:
        module: a plain ``nn.Module`` (MLP for sinusoids, conv net for images).
        tasks: training task distribution; ``val_batch`` a fixed batch of held-out tasks.
        loss: ``"mse"`` or ``"ce"``; lower MSE / higher accuracy is better.
        inner_lr, inner_steps, first_order, learn_lr: the inner loop (``learn_lr``: Meta-SGD).
        adapts: ``False`` trains without the inner loop: ordinary regression on all points of
            every task, the pretrained baseline of Finn et al. sec. 5.1.
        anil: the inner loop adapts the head only (ANIL, :func:`inner_plan`).
        lslr, msl_iterations, da_iterations, cosine_iterations, min_lr: the MAML++ switches
            (Antoniou et al. 2019, arXiv 1810.09502 sec. 4): learned per-tensor per-step inner
            rates; the multi-step loss annealed over that many iterations (:func:`msl_weights`);
            first order for the first ``da_iterations``; the Adam step size annealed to
            ``min_lr`` over ``cosine_iterations`` (:func:`cosine_lr`; 0: constant). Per-step
            batch norm is the module's own (``bn_steps`` of the classifiers). All off: MAML.
        rates_lr_scale: the learned inner rates' (Meta-SGD, LSLR) Adam step size relative to the
            weights' (1: one step size for all, as MAML++'s code).
    """

    def __init__(
        self,
        module: nn.Module,
        tasks: TaskDistribution,
        val_batch: TaskBatch,
        *,
        loss: str,
        meta_batch_size: int,
        inner_lr: float,
        inner_steps: int,
        first_order: bool,
        learn_lr: bool,
        outer_lr: float,
        grad_clip: float,
        seed: int,
        device: str = "cpu",
        adapts: bool = True,
        task_chunk: int = 0,
        anil: bool = False,
        lslr: bool = False,
        msl_iterations: int = 0,
        da_iterations: int = 0,
        cosine_iterations: int = 0,
        min_lr: float = 1e-5,
        checkpoint: bool = False,
        rates_lr_scale: float = 1.0,
    ) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.tasks, self.val_batch = tasks, val_batch.to(self.device)
        self.loss_kind, self.adapts = loss, adapts
        self.meta_batch_size, self.inner_steps, self.first_order = meta_batch_size, inner_steps, first_order
        self.grad_clip = grad_clip
        self.task_chunk = int(task_chunk)
        self.checkpoint = checkpoint  # recompute inner steps in the backward pass (metarl.recompute)
        if learn_lr and lslr:
            raise ValueError("learn_lr (Meta-SGD) and lslr (MAML++) both learn the inner lr; choose one")
        self.anil, self.lslr = anil, lslr
        self.plan = inner_plan(self.module, anil)
        self.msl_iterations, self.da_iterations = msl_iterations, da_iterations
        self.outer_lr, self.cosine_iterations, self.min_lr = float(outer_lr), cosine_iterations, min_lr
        adapted = {k: v for k, v in module.named_parameters() if self.plan.adapted is None or k in self.plan.adapted}
        learned: Mapping[str, torch.Tensor] | None = None
        if learn_lr:
            learned = meta_sgd_lr(adapted, inner_lr)
        elif lslr:
            learned = {k: nn.Parameter(torch.full((max(inner_steps, 1),), float(inner_lr), dtype=v.dtype))
                       for k, v in adapted.items()}
        self.lr_params = (
            nn.ParameterDict({k.replace(".", "-"): v for k, v in learned.items()}).to(self.device)
            if learned is not None
            else None
        )
        self.inner_lr = float(inner_lr)
        # the learned rates may take a smaller Adam step than the weights (``rates_lr_scale``): Adam moves
        # every tensor by about its step size, which is a large fraction of a small inner rate
        groups = [{"params": list(module.parameters()), "scale": 1.0}]
        if self.lr_params is not None:
            groups.append({"params": list(self.lr_params.parameters()), "lr": outer_lr * rates_lr_scale,
                           "scale": float(rates_lr_scale)})
        self.optimizer = torch.optim.Adam(groups, lr=outer_lr)
        self.loss_fn = make_loss(self.module, loss)
        self.generator = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.best_key = "val/mse_post" if loss == "mse" else "val/acc_post"
        self.best_mode = "min" if loss == "mse" else "max"

    # -- the inner learning rate: a float, the learned per-parameter dict, or per-step dicts (LSLR)
    @property
    def lr(self) -> LearningRate | StepRates:
        return inner_lr(self.inner_lr, self.lr_params, self.lslr)

    def params(self) -> Params:
        return dict(self.module.named_parameters())

    def first_order_at(self, iteration: int | None) -> bool:
        """First order at ``iteration`` (1-based): ``first_order``, or within the first ``da_iterations``
        (MAML++ DA); ``None``: annealing over."""
        return self.first_order or (iteration is not None and iteration <= self.da_iterations)

    def meta_loss(self, batch: TaskBatch, iteration: int | None = None, backward: bool = False) -> torch.Tensor:
        """Mean query loss after adaptation (MAML) or on all points (pretrain), differentiable.

        With the MAML++ switches, the loss of ``iteration`` (1-based; ``None``: annealing over): the
        :func:`msl_weights`-weighted sum of the query losses after each inner step, first order
        while derivative-order annealing lasts.

        ``backward=True`` back-propagates each chunk of tasks as soon as its loss is computed and
        returns the loss detached: the same meta-gradient (a sum over tasks) accumulated in ``.grad``,
        with only one chunk's graph in memory at a time (the memory option, ``inner.checkpoint``)."""
        theta = self.params()
        if not self.adapts or self.inner_steps == 0:
            x = torch.cat([batch.x_support, batch.x_query], 1)
            y = torch.cat([batch.y_support, batch.y_query], 1)
            return torch.func.vmap(self.loss_fn, in_dims=(None, 0))(theta, (x, y)).mean()
        n = batch.num_tasks
        chunk = self.task_chunk or n
        lr, first_order = self.lr, self.first_order_at(iteration)
        weights = msl_weights(self.inner_steps, iteration, self.msl_iterations)

        def task_loss(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
            path = adapt_path(self.loss_fn, theta, (xs, ys), lr=lr, steps=self.inner_steps, first_order=first_order,
                              adapted=self.plan.adapted, at_step=self.plan.at_step, checkpoint=self.checkpoint)
            return sum(w * self.loss_fn(path[k + 1], (xq, yq)) for k, w in enumerate(weights) if w)

        total = 0.0
        for s in range(0, n, chunk):  # chunks of tasks: on CPU small vmaps of conv nets are faster
            t = slice(s, s + chunk)
            losses = torch.func.vmap(task_loss, randomness="different")(
                batch.x_support[t], batch.y_support[t], batch.x_query[t], batch.y_query[t])
            if backward:
                (losses.sum() / n).backward()
                losses = losses.detach()
            total = total + losses.sum()
        return total / n

    def train_step(self, iteration: int, log: bool) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = self.tasks.sample(self.meta_batch_size, self.generator).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        # the memory option also keeps one chunk of tasks' graph at a time (meta_loss's backward)
        chunked = self.checkpoint and self.adapts and self.inner_steps > 0
        loss = self.meta_loss(batch, iteration, backward=chunked)
        if self.cosine_iterations > 0:
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("scale", 1.0) * cosine_lr(self.outer_lr, self.min_lr, iteration - 1,
                                                                   self.cosine_iterations)
        if not chunked:
            loss.backward()
        metrics: dict[str, float] = {}
        if self.grad_clip > 0:
            # every trainable tensor, the learned inner rates too: one exploded inner loop must not
            # fill Adam's second moment and stall the run for thousands of iterations
            trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(trainable, self.grad_clip)
            metrics["train/grad_norm"] = float(norm)
        self.optimizer.step()
        if log:
            metrics["train/loss_post"] = float(loss.detach())
            metrics["time/step_s"] = time.perf_counter() - t0
            if self.cosine_iterations > 0:
                metrics["train/outer_lr"] = self.optimizer.param_groups[0]["lr"]
            if self.lr_params is not None:
                metrics["train/inner_lr_mean"] = float(
                    torch.cat([v.detach().flatten() for v in self.lr_params.values()]).mean()
                )
        return metrics

    def validate(self) -> dict[str, float]:
        """Pre- and post-adaptation metric on the fixed held-out tasks (training's inner steps)."""
        steps = max(self.inner_steps, 1)
        curve = adaptation_curve(
            self.module, self.params(), self.val_batch, loss=self.loss_kind, lr=self.lr, steps=steps, anil=self.anil
        )
        name = "mse" if self.loss_kind == "mse" else "acc"
        return {f"val/{name}_pre": float(curve[0].mean()), f"val/{name}_post": float(curve[-1].mean())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "lr_params": self.lr_params.state_dict() if self.lr_params is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.generator, self.np_rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        if self.lr_params is not None and state.get("lr_params") is not None:
            self.lr_params.load_state_dict(state["lr_params"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.generator, self.np_rng)

    def close(self) -> None:
        pass
