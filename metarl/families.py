"""The benchmark families, registered once: each knows how to build its learner, evaluate a run,
rebuild a run's module, transform raw inputs and adapt. The ``benchmark`` key of a config names
its family; nothing else in metarl compares that key with a string.

A family is loaded when first used (``"module:attribute"``, as Gymnasium's entry points), so a
sinusoid run never imports Gymnasium and an RL run never imports the image datasets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metarl.config import CommonConfig
from metarl.maml import Params


@dataclass(frozen=True)
class Family:
    """What a benchmark family provides (each a plain function of the run's config).

    Attributes:
        build_learner: ``cfg -> learner`` for :func:`metarl.training.train` (``train_step``,
            ``validate``, ``state_dict``/``load_state_dict``, ``best_key``/``best_mode``, ``close``).
        evaluate: ``(cfg, learner_state, *, n_tasks, steps, seed, shots, baselines,
            pretrain_iterations) -> {"metric", "by_step", "baselines", "per_task", ...}`` for ``metarl evaluate``
            (``per_task``: the run's ``[K+1, N]`` curve as nested lists).
        module: ``cfg -> nn.Module`` that a checkpoint's ``learner["model"]`` loads into.
        transform: ``(cfg, raw) -> tensor``: the run's input preprocessing.
        adapt: ``(run, *data, steps) -> Params``: the run's test-time inner loop (``run.adapt``).
    """

    build_learner: Callable[[Any], Any]
    evaluate: Callable[..., dict[str, Any]]
    module: Callable[[Any], nn.Module]
    transform: Callable[[Any, Any], torch.Tensor]
    adapt: Callable[..., Params]


#: ``benchmark`` -> where its :class:`Family` lives.
FAMILIES: dict[str, str] = {
    "sinusoid": "metarl.fewshot.build:SINUSOID",
    "classification": "metarl.fewshot.build:CLASSIFICATION",
    "rl": "metarl.rl.family:RL",
    "custom": "metarl.fewshot.custom:CUSTOM",
}


def family_of(cfg: CommonConfig) -> Family:
    """The family of ``cfg.benchmark`` (validated by the config loader against the same names)."""
    module, attribute = FAMILIES[cfg.benchmark].split(":")
    return getattr(importlib.import_module(module), attribute)


def as_float_tensor(cfg: Any, raw: Any) -> torch.Tensor:
    """The identity transform of vector inputs (sinusoid inputs, RL observations)."""
    return torch.as_tensor(raw, dtype=torch.float32)
