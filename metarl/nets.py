"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

#: ``nn.Tanh`` layers only mark where tanh goes: :class:`TanhMLP` and :func:`stacked_mlp` compute
#: it themselves from the ``nn.Linear`` layers (folded sigmoids), never calling them.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class TanhMLP(nn.Sequential):
    """``Linear, Tanh, Linear, ..., Linear`` whose forward runs one sigmoid per hidden layer.

    Since tanh(z) = 2 sigmoid(2z) - 1, the network equals a sigmoid network with folded weights:
    a hidden layer keeps s = sigmoid(2 (W x + b)), and the next layer reads tanh = 2 s - 1 as
    ``(2 W') s + (b' - W' 1)``. Folding costs a few operations on the [out, in] weights; each
    hidden activation then costs one elementwise pass (``sigmoid``, whose fused backward and
    double backward autograd knows) instead of four (scale, sigmoid, scale, shift), in the
    forward pass, the gradients and the Fisher-vector products alike. The module holds the
    usual ``nn.Linear`` parameters under the usual names (``0.weight``, ``2.bias``, ...), so
    checkpoints, ``torch.func.functional_call`` and vmap over stacked parameters are unchanged;
    the function computed is the same up to float rounding (tested against ``torch.tanh``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        linears = [m for m in self if isinstance(m, nn.Linear)]
        last = len(linears) - 1
        h = x
        for i, layer in enumerate(linears):
            weight, bias = layer.weight, layer.bias
            if i > 0:  # the input is 2 s - 1 with s the previous sigmoid's output
                bias = bias - weight.sum(-1)
                weight = weight * 2.0
            if i < last:  # tanh(z) = 2 sigmoid(2 z) - 1: keep s = sigmoid(2 z)
                h = torch.sigmoid(nn.functional.linear(h, weight * 2.0, bias * 2.0))
            else:
                h = nn.functional.linear(h, weight, bias)
        return h


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last).

    tanh networks are :class:`TanhMLP` (same parameters, a faster forward pass).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return TanhMLP(*layers) if activation == "tanh" else nn.Sequential(*layers)


def stacked_mlp(
    net: nn.Sequential, params: Mapping[str, torch.Tensor], prefix: str
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``net``'s forward for N parameter sets at once, prepared: ``f(x [N, ..., in]) -> [N, ..., out]``,
    where ``params[prefix + "<i>.weight"]`` is ``[N, out, in]`` for every ``nn.Linear`` at position i.

    Equal to ``torch.func.vmap`` of ``functional_call(net, ...)`` over the task dimension (tested,
    to second order), with one ``baddbmm`` per layer and none of vmap's or functional_call's
    per-call work, which dominates on the rollout loop's small batches (one policy call per
    time step); the layers are prepared (folded, transposed) once per parameter set, so a
    rollout pays that once. Handles a :class:`TanhMLP` (its folded sigmoid form) and a
    ``Sequential`` of ``nn.Linear`` and parameter-free elementwise modules. Returns ``None`` when
    ``params`` do not hold every layer's stacked weight and bias, or another layer has parameters
    of its own (the caller falls back to vmap).
    With N = 1, ``f`` also takes any ``x [n, ..., in]``, running that one set on each of the n
    blocks. Each block ``x[i]`` is its own matrix product, so its rows come out bit for bit the
    same whatever else is in the call (one flat product over all rows would not: MKL's rounding
    varies with the row count); a rollout split across Ray actors then equals the local one.
    """
    layers: list[tuple[torch.Tensor, torch.Tensor] | nn.Module] = []
    for i, module in enumerate(net):
        if isinstance(module, nn.Linear):
            w, b = params.get(f"{prefix}{i}.weight"), params.get(f"{prefix}{i}.bias")
            if w is None or b is None or w.dim() != 3 or b.dim() != 2:
                return None
            layers.append((w, b))
        elif any(True for _ in module.parameters()):  # e.g. a LayerNorm: its params would not be params'
            return None
        else:
            layers.append(module)
    steps: list[tuple[torch.Tensor, torch.Tensor, bool] | nn.Module] = []  # (bias, weight^T, sigmoid after)
    if isinstance(net, TanhMLP):
        linears = [layer for layer in layers if isinstance(layer, tuple)]
        last = len(linears) - 1
        for i, (w, b) in enumerate(linears):
            if i > 0:  # the input is 2 s - 1 with s the previous sigmoid's output (see TanhMLP)
                b = b - w.sum(-1)
                w = w * 2.0
            if i < last:  # keep s = sigmoid(2 z)
                b, w = b * 2.0, w * 2.0
            steps.append((b.unsqueeze(1), w.transpose(1, 2), i < last))
    else:
        steps = [(layer[1].unsqueeze(1), layer[0].transpose(1, 2), False) if isinstance(layer, tuple) else layer
                 for layer in layers]

    def forward(x: torch.Tensor) -> torch.Tensor:
        n, batch = x.shape[0], x.shape[1:-1]
        h = x.reshape(n, -1, x.shape[-1])
        for step in steps:
            if isinstance(step, tuple):
                b, wt, sigmoid = step
                if b.shape[0] != n:  # one parameter set for all n: a view per row block, no copy
                    b, wt = b.expand(n, -1, -1), wt.expand(n, -1, -1)
                h = torch.baddbmm(b, h, wt)
                if sigmoid:
                    h = torch.sigmoid(h)
            else:
                h = step(h)
        return h.reshape(n, *batch, h.shape[-1])

    return forward
