"""The supervised task batch shared by regression and classification benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of N supervised tasks, each with a support and a query set.

    Shapes: ``x_support [N, S, *x_shape]``, ``y_support [N, S, *y_shape]``,
    ``x_query [N, Q, *x_shape]``, ``y_query [N, Q, *y_shape]``. For regression y is
    ``[..., 1]`` float; for classification y is ``[...]`` int64 class labels 0..ways-1.
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.x_support.shape[0])

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device) for t in (self.x_support, self.y_support, self.x_query, self.y_query)))

    def task(self, i: int) -> TaskBatch:
        """Task ``i`` alone, keeping a leading dim of 1."""
        return TaskBatch(*(t[i : i + 1] for t in (self.x_support, self.y_support, self.x_query, self.y_query)))
