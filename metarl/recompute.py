"""Gradient checkpointing that composes with ``torch.func``: recompute a function in the backward pass.

Chen et al. 2016 (arXiv 1604.06174): keep only a segment's inputs in the forward pass and run the
segment again, with its graph, when the backward pass reaches it; memory falls from all segments'
activations to one segment's, for about one more forward pass. For MAML's second-order
meta-gradient (Finn et al. 2017, arXiv 1703.03400, eq. (1) differentiated through every step) a
segment is one inner step ``theta_{j+1} = theta_j - alpha grad L(theta_j)``: its graph (the
forward activations and the inner backward pass kept for the Hessian-vector product) is the
largest thing a meta-iteration stores.

Why not ``torch.utils.checkpoint``: with ``use_reentrant=False`` it relies on saved-tensor hooks,
which ``torch.func.grad`` (the inner gradient of :func:`metarl.maml.adapt`) refuses ("don't yet
support saved tensor hooks", torch 2.13); the reentrant variant is not a function transform and
does not run under ``vmap``. :func:`recomputed` is an ``autograd.Function`` whose backward is a
``torch.func.vjp`` of the recomputed segment, with ``generate_vmap_rule`` so that it runs inside
``torch.func.vmap`` (:func:`metarl.maml.adapt_batched`); the gradients are the stored graph's (to
rounding; ``tests/test_recompute.py`` checks float64 meta-gradients of an MLP and a conv net).

Restriction: gradients reach only the tensors passed in (the parameters, a learnable lr, the
data); a tensor that ``fn`` captures from its closure is treated as a constant in the backward
pass, so everything that needs a meta-gradient must be an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

Params = dict[str, torch.Tensor]  # as metarl.maml.Params (which imports this module)


class _Keys:
    """Where the forward pass leaves the output dict's keys (the output order of the Function)."""

    names: tuple[str, ...] = ()


class _Recomputed(torch.autograd.Function):
    """``fn(*args) -> dict of tensors`` run without a graph; its vjp is recomputed in the backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(fn: Callable[..., Params], spec: Any, keys: _Keys, *leaves: Any) -> tuple[torch.Tensor, ...]:
        out = fn(*tree_unflatten(list(leaves), spec))
        keys.names = tuple(out)
        inputs = {id(v) for v in leaves if isinstance(v, torch.Tensor)}
        # an input passed through (ANIL's frozen body) must leave as a view to be saved for backward
        return tuple(v.view_as(v) if id(v) in inputs else v for v in out.values())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn, spec, keys, *leaves = inputs
        ctx.fn, ctx.spec, ctx.keys = fn, spec, keys
        ctx.tensor = [isinstance(v, torch.Tensor) for v in leaves]
        ctx.constants = [None if t else v for t, v in zip(ctx.tensor, leaves)]
        ctx.save_for_backward(*(v for t, v in zip(ctx.tensor, leaves) if t))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        leaves = [next(saved) if t else c for t, c in zip(ctx.tensor, ctx.constants)]
        wanted = [i for i, needs in enumerate(ctx.needs_input_grad[3:]) if needs]

        def segment(*diff: torch.Tensor) -> tuple[torch.Tensor, ...]:
            full = list(leaves)
            for i, v in zip(wanted, diff):
                full[i] = v
            out = ctx.fn(*tree_unflatten(full, ctx.spec))
            return tuple(out[k] for k in ctx.keys.names)

        _, vjp_fn = torch.func.vjp(segment, *(leaves[i] for i in wanted))
        out: list[torch.Tensor | None] = [None] * len(leaves)
        for i, g in zip(wanted, vjp_fn(grads)):
            out[i] = g
        return (None, None, None, *out)


def recomputed(fn: Callable[..., Params], *args: Any) -> Params:
    """``fn(*args)``, a dict of tensors, without storing its activations: the backward pass runs it again.

    ``args`` is any pytree of tensors and constants (a ``Params`` dict, a float or per-parameter lr,
    the data); ``fn`` must be deterministic (it runs twice). Differentiable with respect to every
    tensor in ``args`` (once: the recomputed segment is not itself checkpointed for higher orders),
    and usable under ``torch.func.vmap``.
    """
    leaves, spec = tree_flatten(args)
    keys = _Keys()
    values = _Recomputed.apply(fn, spec, keys, *leaves)
    return dict(zip(keys.names, values))
