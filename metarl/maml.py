"""The MAML core: adaptation as a pure function over parameter dictionaries.

Finn et al. 2017 (arXiv 1703.03400), eq. (1): theta' = theta - alpha * grad L(theta).
The outer (meta) gradient flows through ``adapt`` by ordinary autograd; with
``first_order=False`` (the default) that includes the Hessian term of eq. (1)'s
derivative, with ``first_order=True`` the inner gradients are treated as constants
(FOMAML, sec. 5.2 of the paper).

``adapt`` uses ``torch.func.grad`` for the inner gradient, so it composes with
``torch.func.vmap``: :func:`adapt_batched` adapts a whole meta-batch of tasks in one
call, which is the fast path for models without data-dependent control flow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Params = dict[str, torch.Tensor]
LearningRate = float | Mapping[str, torch.Tensor]
LossFn = Callable[[Params, Any], torch.Tensor]


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
    """theta - lr * g, with ``lr`` a float or a per-parameter dict of tensors (Meta-SGD)."""
    if isinstance(lr, Mapping):
        return {k: p - lr[k] * grads[k] for k, p in params.items()}
    return {k: p - lr * grads[k] for k, p in params.items()}


def adapt(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    data: Any,
    *,
    lr: LearningRate,
    steps: int,
    first_order: bool = False,
) -> Params:
    """Take ``steps`` gradient steps on ``loss_fn(params, data)`` and return the adapted params.

    Args:
        loss_fn: ``(params, data) -> scalar``, typically a ``functional_call`` of a module.
        params: the initialisation theta (not modified).
        data: whatever ``loss_fn`` consumes (a support set, a batch of episodes, ...).
        lr: inner learning rate alpha: a float, or a dict of per-parameter tensors
            (Meta-SGD), which then receive meta-gradients too.
        steps: number of inner gradient steps (0 returns ``params`` unchanged).
        first_order: drop the second-order terms (the inner gradients are detached).

    Returns:
        The adapted parameters theta'. With ``first_order=False`` they stay differentiable
        with respect to ``params`` (and a learnable ``lr``) through every inner step.
    """
    if steps < 0:
        raise ValueError(f"adapt: steps={steps} must be >= 0")
    grad_fn = torch.func.grad(loss_fn)
    fast = dict(params)
    for _ in range(steps):
        grads = grad_fn(fast, data)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = sgd_step(fast, grads, lr)
    return fast


def adapt_batched(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    data: Any,
    *,
    lr: LearningRate,
    steps: int,
    first_order: bool = False,
) -> Params:
    """:func:`adapt` for a batch of tasks at once via ``torch.func.vmap``.

    ``data`` is any pytree of tensors with the task index as leading dimension; the
    returned params carry that leading dimension too (``[N, *param.shape]``). The same
    ``params`` (and ``lr``) are shared by all tasks. Equal to stacking per-task ``adapt``.
    """

    def one(task_data: Any) -> Params:
        return adapt(loss_fn, params, task_data, lr=lr, steps=steps, first_order=first_order)

    return torch.func.vmap(one, randomness="different")(data)
