"""Reptile (Nichol, Achiam and Schulman 2018, arXiv 1803.02999): first-order meta-learning by moving
the initialisation towards the weights that training on each task reaches.

Algorithm 2 of the paper (the batched version): for each of the n tasks of a meta-batch, take k
inner SGD steps from theta on minibatches of the task's data, reaching phi_i; then

    theta <- theta + eps * (1/n) sum_i (phi_i - theta),

with the outer step size eps annealed linearly over training (eps_0 = 1 -> 0 for the few-shot
runs of the paper, as in its code's ``--meta-step 1 --meta-step-final 0``). There is no
support/query split in training: a task's support and query points are one pool, shuffled into
minibatches (reshuffled when the k steps need more than one pass). No second-order terms and no
meta-gradient: nothing is differentiated through the inner loop.

The inner loop is :func:`metarl.maml.adapt` (one step per minibatch), batched over tasks by
``vmap``; evaluation is MAML's :func:`~metarl.fewshot.learner.adaptation_curve` (fine-tune on the
support set with SGD at ``inner.lr``, measure on the query set), so the two compare under one
protocol.

Departure from the paper: the inner optimiser is plain SGD (Algorithm 1 as written and the
analysis of its sec. 5), where the paper's few-shot runs used Adam with beta1 = 0 in the inner
loop; the step sizes in the shipped configs are SGD's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.checkpoint import rng_state, set_rng_state
from metarl.config import ConfigError
from metarl.fewshot.learner import TaskDistribution, adaptation_curve, make_loss
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import Params, adapt, detach_params


def outer_step_size(iteration: int, num_iterations: int, initial: float, final: float) -> float:
    """eps at 1-based ``iteration`` of ``num_iterations``: linear from ``initial`` (first) towards
    ``final`` (the paper's code: ``frac_done * final + (1 - frac_done) * initial``, ``frac_done =
    (iteration - 1) / num_iterations``)."""
    frac = (iteration - 1) / num_iterations
    return frac * final + (1.0 - frac) * initial


def reptile_update(theta: Mapping[str, torch.Tensor], phis: Mapping[str, torch.Tensor], eps: float) -> Params:
    """theta + eps * mean_i (phi_i - theta) (Nichol et al. 2018, Algorithm 2); ``phis`` hold a
    leading task dimension ``[n, *param.shape]``."""
    return {k: t + eps * (phis[k] - t).mean(0) for k, t in theta.items()}


def minibatch_indices(n_tasks: int, pool: int, batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Indices ``[n_tasks, steps, batch]`` into each task's ``pool`` points: consecutive slices of
    shuffled passes over the pool, a fresh shuffle for each pass (sampling without replacement
    within a pass, as the paper's code does). ``batch=0`` uses the whole pool at every step."""
    if batch <= 0 or batch >= pool:
        return torch.arange(pool).expand(n_tasks, steps, pool)
    passes = -(-steps * batch // pool)
    perms = torch.rand(n_tasks, passes, pool, generator=generator).argsort(-1)
    return perms.reshape(n_tasks, passes * pool)[:, : steps * batch].reshape(n_tasks, steps, batch)


def adapt_on_minibatches(
    loss_fn: Any, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, lr: float,
    task_chunk: int = 0,
) -> Params:
    """phi_i for each task: one :func:`~metarl.maml.adapt` step (first order) per minibatch.

    Shapes: ``x [n, k, b, *x_shape]``, ``y [n, k, b, *y_shape]`` (task, step, minibatch) ->
    params ``[n, *param.shape]``; tasks are vmapped ``task_chunk`` at a time (0: all at once).
    """
    theta = detach_params(params)

    def one(xt: torch.Tensor, yt: torch.Tensor) -> Params:
        p = theta
        for j in range(xt.shape[0]):
            p = adapt(loss_fn, p, (xt[j], yt[j]), lr=lr, steps=1, first_order=True)
        return p

    n = x.shape[0]
    chunk = task_chunk or n
    with torch.no_grad():
        parts = [torch.func.vmap(one, randomness="different")(x[s:s + chunk], y[s:s + chunk])
                 for s in range(0, n, chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in theta}


class SupervisedReptile:
    """Meta-trains ``module`` with Reptile; the interface of :class:`~metarl.fewshot.learner.SupervisedMAML`.

    Args:
        module, tasks, val_batch, loss, meta_batch_size, seed, device, task_chunk: as SupervisedMAML.
        inner_lr, inner_steps: SGD step size and number of steps k on each task (and, with
            ``inner_lr``, the fine-tuning of the evaluation).
        inner_batch: points per inner minibatch (0: all of a task's points at every step).
        outer_lr, outer_lr_final, num_iterations: eps, annealed linearly over ``num_iterations``.
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
        inner_batch: int,
        outer_lr: float,
        outer_lr_final: float,
        num_iterations: int,
        seed: int,
        device: str = "cpu",
        task_chunk: int = 0,
    ) -> None:
        if inner_steps < 1:
            raise ValueError(f"Reptile needs inner.steps >= 1 (got {inner_steps}): with 0 the update is zero")
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.tasks, self.val_batch = tasks, val_batch.to(self.device)
        self.loss_kind = loss
        self.meta_batch_size, self.inner_steps, self.inner_batch = meta_batch_size, inner_steps, inner_batch
        self.lr = float(inner_lr)
        self.outer_lr, self.outer_lr_final, self.num_iterations = outer_lr, outer_lr_final, num_iterations
        self.task_chunk = int(task_chunk)
        self.loss_fn = make_loss(self.module, loss)
        self.generator = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.best_key = "val/mse_post" if loss == "mse" else "val/acc_post"
        self.best_mode = "min" if loss == "mse" else "max"

    def params(self) -> Params:
        return dict(self.module.named_parameters())

    def inner_data(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's support and query points as one pool, cut into its k minibatches:
        ``x [n, k, b, *x_shape]``, ``y [n, k, b, *y_shape]``."""
        x = torch.cat([batch.x_support, batch.x_query], 1)
        y = torch.cat([batch.y_support, batch.y_query], 1)
        idx = minibatch_indices(batch.num_tasks, x.shape[1], self.inner_batch, self.inner_steps, self.generator)
        idx = idx.to(x.device)
        rows = torch.arange(batch.num_tasks, device=x.device)[:, None, None]
        return x[rows, idx], y[rows, idx]

    def train_step(self, iteration: int, log: bool) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = self.tasks.sample(self.meta_batch_size, self.generator).to(self.device)
        x, y = self.inner_data(batch)
        theta = self.params()
        phis = adapt_on_minibatches(self.loss_fn, theta, x, y, lr=self.lr, task_chunk=self.task_chunk)
        eps = outer_step_size(iteration, self.num_iterations, self.outer_lr, self.outer_lr_final)
        with torch.no_grad():
            old = {k: v.detach().clone() for k, v in theta.items()}
            new = reptile_update(old, phis, eps)
            for k, p in theta.items():
                p.copy_(new[k])
        metrics: dict[str, float] = {}
        if log:
            with torch.no_grad():  # the last minibatch's loss after adaptation, for the progress line
                last = torch.func.vmap(self.loss_fn)(phis, (x[:, -1], y[:, -1])).mean()
            metrics["train/loss_post"] = float(last)
            metrics["reptile/outer_lr"] = eps
            metrics["reptile/step_norm"] = float(torch.cat([(new[k] - old[k]).flatten() for k in new]).norm())
            metrics["time/step_s"] = time.perf_counter() - t0
        return metrics

    def validate(self) -> dict[str, float]:
        """Pre- and post-adaptation metric on the fixed held-out tasks: MAML's fine-tuning protocol
        (``inner.steps`` SGD steps at ``inner.lr`` on the support set, metric on the query set)."""
        curve = adaptation_curve(self.module, self.params(), self.val_batch, loss=self.loss_kind, lr=self.lr,
                                 steps=self.inner_steps)
        name = "mse" if self.loss_kind == "mse" else "acc"
        return {f"val/{name}_pre": float(curve[0].mean()), f"val/{name}_post": float(curve[-1].mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "lr_params": None, "rng": rng_state(self.generator, self.np_rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        set_rng_state(state["rng"], self.generator, self.np_rng)

    def close(self) -> None:
        pass


def build_reptile(cfg: Any, module: nn.Module, tasks: TaskDistribution, val_batch: TaskBatch,
                  loss: str) -> SupervisedReptile:
    """The Reptile learner of a sinusoid or classification config (``algorithm: reptile``)."""
    if cfg.inner.learn_lr:
        raise ConfigError("inner.learn_lr: Reptile has no meta-gradient to learn an inner lr with; set it false")
    r = cfg.reptile
    return SupervisedReptile(
        module, tasks, val_batch, loss=loss, meta_batch_size=cfg.meta_batch_size, inner_lr=cfg.inner.lr,
        inner_steps=cfg.inner.steps, inner_batch=r.inner_batch, outer_lr=r.outer_lr, outer_lr_final=r.outer_lr_final,
        num_iterations=cfg.num_iterations, seed=cfg.seed, device=cfg.device, task_chunk=getattr(cfg, "task_chunk", 0),
    )
