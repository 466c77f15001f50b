"""The MAML core: adaptation as a pure function over parameter dictionaries.

Finn et al. 2017 (arXiv 1703.03400), eq. (1): theta' = theta - alpha * grad L(theta).
The outer (meta) gradient flows through ``adapt`` by ordinary autograd; with
``first_order=False`` (the default) that includes the Hessian term of eq. (1)'s
derivative, with ``first_order=True`` the inner gradients are treated as constants
(FOMAML, sec. 5.2 of the paper).

``adapt`` uses ``torch.func.grad`` for the inner gradient, so it composes with
``torch.func.vmap``: :func:`adapt_batched` adapts a whole meta-batch of tasks in one
call, which is the fast path for models without data-dependent control flow.

The variants are arguments of the same loop (:func:`adapt_path`, of which ``adapt`` is the
last point): a per-step list of rates (MAML++'s LSLR, Antoniou et al. 2019, arXiv 1810.09502
sec. 4), a subset of parameters that adapts while the rest passes through (ANIL, Raghu et al.
2020, arXiv 1909.09157), and a per-step view of the parameters (MAML++'s per-step batch-norm
weights).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from metarl.recompute import recomputed

Params = dict[str, torch.Tensor]
LearningRate = float | Mapping[str, torch.Tensor]
LossFn = Callable[[Params, Any], torch.Tensor]
#: A rate for every step: step k uses entry ``min(k, len - 1)`` (MAML++'s per-step rates; the last
#: one carries on past the steps it was learned for).
StepRates = Sequence[LearningRate]
#: ``(params, k) -> the params the model sees at inner step k`` (e.g. row k of per-step tables).
StepView = Callable[[Params, int], Params]


def params_of(module: nn.Module) -> Params:
    """The module's trainable parameters as a name -> tensor dict (live, not copies)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def detach_params(params: Mapping[str, torch.Tensor]) -> Params:
    """A copy of ``params`` cut from the autograd graph (e.g. for sampling or logging)."""
    return {k: v.detach() for k, v in params.items()}


def functional_forward(module: nn.Module, params: Mapping[str, torch.Tensor], *args: Any) -> Any:
    """Run ``module`` with ``params`` in place of its parameters; the module is not mutated.

    Parameters missing from ``params`` (e.g. frozen ones) and buffers come from the module.
    """
    return torch.func.functional_call(module, dict(params), args, strict=False)


def meta_sgd_lr(params: Mapping[str, torch.Tensor], init: float) -> dict[str, nn.Parameter]:
    """Per-parameter learnable inner learning rates for Meta-SGD (Li et al. 2017, arXiv 1707.09835).

    Each entry has its parameter's shape and starts at ``init``; the outer optimiser learns it.
    """
    return {k: nn.Parameter(torch.full_like(v.detach(), float(init))) for k, v in params.items()}


def sgd_step(
    params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: LearningRate
) -> Params:
    """theta - lr * g, with ``lr`` a float or a per-parameter dict of tensors (Meta-SGD).

    Only the entries of ``grads`` move; the other params pass through unchanged (ANIL's body).
    """
    if isinstance(lr, Mapping):
        return {k: p - lr[k] * grads[k] if k in grads else p for k, p in params.items()}
    return {k: p - lr * grads[k] if k in grads else p for k, p in params.items()}


def lr_at(lr: LearningRate | StepRates, step: int) -> LearningRate:
    """The rate of inner step ``step``: ``lr`` itself, or entry ``min(step, len - 1)`` of a per-step list."""
    if isinstance(lr, Sequence):
        if not lr:
            raise ValueError("adapt: an empty list of per-step rates")
        return lr[min(step, len(lr) - 1)]
    return lr


def adapt_path(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    data: Any,
    *,
    lr: LearningRate | StepRates,
    steps: int,
    first_order: bool = False,
    adapted: Collection[str] | None = None,
    at_step: StepView | None = None,
    checkpoint: bool = False,
) -> list[Params]:
    """The inner loop's whole path ``[theta_0, ..., theta_steps]``, each as the model sees it at its step.

    ``theta_{k+1} = theta_k - lr_k * grad L(at_step(theta_k, k))`` (Finn et al. 2017, eq. (1)),
    for the names in ``adapted`` only (default: all); the others stay as given and still carry
    meta-gradients through the loss. Entry k of the result is ``at_step(theta_k, k)``, so the
    query loss after k steps is ``loss_fn(path[k], query)`` (MAML++'s multi-step loss sums
    these) and the last entry is what :func:`adapt` returns. Arguments as :func:`adapt`.

    ``checkpoint``: keep only each step's input params and recompute the step (its forward and
    inner backward) when the meta-gradient's backward pass reaches it (:mod:`metarl.recompute`):
    the same values and meta-gradients, a fraction of the memory, about one more inner pass.
    """
    if steps < 0:
        raise ValueError(f"adapt: steps={steps} must be >= 0")
    names = list(params) if adapted is None else [k for k in params if k in set(adapted)]
    if adapted is not None and len(names) != len(set(adapted)):
        raise ValueError(f"adapt: adapted names {sorted(set(adapted) - set(params))} are not parameters")
    view: StepView = at_step if at_step is not None else (lambda p, _k: p)

    def step_loss(moving: Params, fixed: Params, task_data: Any, k: int) -> torch.Tensor:
        return loss_fn(view({**fixed, **moving}, k), task_data)

    grad_fn = torch.func.grad(step_loss)
    moves = set(names)

    def step(fast: Params, lr_k: LearningRate, task_data: Any, k: int) -> Params:
        """One inner step (the unit that ``checkpoint`` recomputes)."""
        grads = grad_fn({n: fast[n] for n in names}, {n: v for n, v in fast.items() if n not in moves}, task_data, k)
        if first_order:
            grads = {n: g.detach() for n, g in grads.items()}
        return sgd_step(fast, grads, lr_k)

    fast = dict(params)
    path = [view(fast, 0)]
    for k in range(steps):
        args = (fast, lr_at(lr, k), data, k)
        fast = recomputed(step, *args) if checkpoint else step(*args)
        path.append(view(fast, k + 1))
    return path


def adapt(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    data: Any,
    *,
    lr: LearningRate | StepRates,
    steps: int,
    first_order: bool = False,
    adapted: Collection[str] | None = None,
    at_step: StepView | None = None,
    checkpoint: bool = False,
) -> Params:
    """Take ``steps`` gradient steps on ``loss_fn(params, data)`` and return the adapted params.

    Args:
        loss_fn: ``(params, data) -> scalar``, typically a ``functional_call`` of a module.
        params: the initialisation theta (not modified).
        data: whatever ``loss_fn`` consumes (a support set, a batch of episodes, ...).
        lr: inner learning rate alpha: a float, or a dict of per-parameter tensors
            (Meta-SGD), which then receive meta-gradients too; or a list of those, one per
            step (MAML++'s per-layer per-step rates, :data:`StepRates`).
        steps: number of inner gradient steps (0 returns ``params`` unchanged).
        first_order: drop the second-order terms (the inner gradients are detached).
        adapted: names of the params the inner loop moves (default all; ANIL: the head's).
        at_step: the params the loss sees at step k (default as they are); the result is
            ``at_step(theta_steps, steps)``.
        checkpoint: recompute each inner step in the backward pass instead of storing its
            activations (gradient checkpointing, :mod:`metarl.recompute`): same result, less memory.

    Returns:
        The adapted parameters theta'. With ``first_order=False`` they stay differentiable
        with respect to ``params`` (and a learnable ``lr``) through every inner step.
    """
    return adapt_path(loss_fn, params, data, lr=lr, steps=steps, first_order=first_order, adapted=adapted,
                      at_step=at_step, checkpoint=checkpoint)[-1]


def adapt_batched(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    data: Any,
    *,
    lr: LearningRate,
    steps: int,
    first_order: bool = False,
    checkpoint: bool = False,
) -> Params:
    """:func:`adapt` for a batch of tasks at once via ``torch.func.vmap``.

    ``data`` is any pytree of tensors with the task index as leading dimension; the
    returned params carry that leading dimension too (``[N, *param.shape]``). The same
    ``params`` (and ``lr``) are shared by all tasks. Equal to stacking per-task ``adapt``.
    """

    def one(task_data: Any) -> Params:
        return adapt(loss_fn, params, task_data, lr=lr, steps=steps, first_order=first_order,
                     checkpoint=checkpoint)

    return torch.func.vmap(one, randomness="different")(data)
