"""metarl: Model-Agnostic Meta-Learning (Finn et al. 2017, arXiv 1703.03400) for RL, regression and
few-shot classification, built on one functional core (:func:`metarl.maml.adapt`).

The names below load on first use (PEP 562), so that importing a light submodule, as each env worker
process does (``metarl.envs.physics``), does not import torch: a worker then starts in a fraction of
the time."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.api import Run, load, train
    from metarl.fewshot.learner import TaskDistribution
    from metarl.fewshot.tasks import TaskBatch
    from metarl.maml import Params, adapt, adapt_batched

_EXPORTS = {
    "Run": "metarl.api", "load": "metarl.api", "train": "metarl.api",
    "TaskDistribution": "metarl.fewshot.learner", "TaskBatch": "metarl.fewshot.tasks",
    "Params": "metarl.maml", "adapt": "metarl.maml", "adapt_batched": "metarl.maml",
}
__all__ = ["Params", "Run", "TaskBatch", "TaskDistribution", "adapt", "adapt_batched", "load", "train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metarl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
