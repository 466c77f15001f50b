"""Sinusoid regression tasks (Finn et al. 2017, arXiv 1703.03400, sec. 5.1).

A task is y = A sin(x - phi) with A ~ U[0.1, 5.0], phi ~ U[0, pi]; inputs x ~ U[-5, 5];
K support and Q query points per task, drawn independently.
"""

from __future__ import annotations

import torch

from metarl.fewshot.tasks import TaskBatch


class SinusoidTasks:
    """The sinusoid task distribution; ``sample`` draws a meta-batch with an explicit generator."""

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, torch.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        shots: int = 10,
        query: int = 10,
    ) -> None:
        for name, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not lo <= hi:
                raise ValueError(f"SinusoidTasks: {name}=({lo}, {hi}) needs low <= high")
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)
        self.shots, self.query = int(shots), int(query)

    def _uniform(self, shape: tuple[int, ...], lo_hi: tuple[float, float], g: torch.Generator) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    def sample(self, n_tasks: int, generator: torch.Generator, shots: int | None = None) -> TaskBatch:
        """``n_tasks`` tasks: x ``[N, K, 1]``, y ``[N, K, 1]`` for support (K) and query (Q)."""
        k = self.shots if shots is None else int(shots)
        amp = self._uniform((n_tasks, 1, 1), self.amplitude, generator)
        phase = self._uniform((n_tasks, 1, 1), self.phase, generator)
        x = self._uniform((n_tasks, k + self.query, 1), self.x_range, generator)
        y = amp * torch.sin(x - phase)
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
