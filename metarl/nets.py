"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Tanh(nn.Module):
    """tanh(x) computed as 2 sigmoid(2x) - 1 (equal to within 2e-7 in float32).

    Why: torch 2.13's CPU ``tanh`` kernel measured 137 us on a [800, 64] float32 tensor on the
    project's AVX-512 machine, ``sigmoid`` 22 us; this form takes 46 us, and its first and
    second derivatives are cheaper too. tanh layers are on the rollout loop's hot path
    (one policy call per step) and in every Fisher-vector product of MAML-TRPO.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(2.0 * x) * 2.0 - 1.0


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": Tanh, "relu": nn.ReLU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
