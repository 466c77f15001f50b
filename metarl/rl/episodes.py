"""A typed, immutable batch of episodes: what the sampler returns and the losses consume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass, fields

import torch


@dataclass(frozen=True)
class Episodes:
    """Episodes of one task (or, stacked, of several), time-major.

    Shapes, with T the horizon, B the episodes per task and an optional leading task
    dimension N when stacked by :meth:`stack`:

    - ``observations``: ``[T, B, *obs_shape]``, the observation each action was taken in
    - ``actions``: ``[T, B, *act_shape]``
    - ``rewards``: ``[T, B]``
    - ``masks``: ``[T, B]``, 1.0 while the episode is alive at step t, 0.0 after it ended
      (steps after termination hold padding and must be ignored)
    - ``log_probs``: ``[T, B]``, log pi(a_t | s_t) under the policy that sampled them
      (the importance-sampling denominator of the TRPO surrogate)

    Everything is a tensor on one device; ``rewards``, ``masks`` and ``log_probs`` are
    float32 (or float64 when converted with :meth:`to`).

    Optional, where the env reports ``info["success"]`` (Meta-World): ``success [..., B]`` (bool,
    read back with :meth:`successes`), whether each episode succeeded at some step (as Meta-World's
    evaluation counts it, ending an episode at its first success). It is an init-only argument, not a
    dataclass field: the losses and the inner loop see the five tensors above (``fields(Episodes)``)
    and nothing else; ``None`` where the env reports no success (the built-in envs).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    masks: torch.Tensor
    log_probs: torch.Tensor
    success: InitVar[torch.Tensor | None] = None

    def __post_init__(self, success: torch.Tensor | None) -> None:
        lead = self.rewards.shape
        if success is not None and tuple(success.shape) != (*lead[:-2], lead[-1]):
            raise ValueError(f"Episodes.success has shape {tuple(success.shape)}; expected "
                             f"{(*lead[:-2], lead[-1])} (one flag per episode)")
        object.__setattr__(self, "_success", success)
        for f in fields(self):
            t = getattr(self, f.name)
            if t.shape[: len(lead)] != lead:
                raise ValueError(
                    f"Episodes.{f.name} has shape {tuple(t.shape)}; its leading dims must "
                    f"equal rewards' {tuple(lead)}"
                )

    def successes(self) -> torch.Tensor | None:
        """Per-episode success flags ``[..., B]`` (bool; the ``success`` given), or ``None`` where the env
        reports none."""
        return self._success

    def success_rate(self) -> float | None:
        """The fraction of episodes that succeeded, or ``None`` without success flags."""
        return None if self._success is None else float(self._success.float().mean())

    @property
    def horizon(self) -> int:
        """T, the number of time steps stored (the longest episode)."""
        return int(self.rewards.shape[-2])

    @property
    def num_episodes(self) -> int:
        """B, the episodes per task."""
        return int(self.rewards.shape[-1])

    def lengths(self) -> torch.Tensor:
        """Number of live steps of each episode, ``[..., B]``."""
        return self.masks.sum(dim=-2)

    def returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[..., B]``."""
        return (self.rewards * self.masks).sum(dim=-2)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Episodes:
        """A copy on ``device``; ``dtype`` converts the floating-point fields."""

        def conv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        success = None if self._success is None else self._success.to(device=device)
        return Episodes(**{f.name: conv(getattr(self, f.name)) for f in fields(self)}, success=success)

    @staticmethod
    def stack(episodes: Sequence[Episodes]) -> Episodes:
        """Stack per-task episodes into one batch with a leading task dim ``[N, T, B, ...]``."""
        if not episodes:
            raise ValueError("Episodes.stack needs at least one Episodes")
        flags = [e.successes() for e in episodes]
        return Episodes(
            **{f.name: torch.stack([getattr(e, f.name) for e in episodes]) for f in fields(Episodes)},
            success=None if any(f is None for f in flags) else torch.stack(flags),
        )

    def unstack(self) -> list[Episodes]:
        """The inverse of :meth:`stack`: one Episodes per task (views, no copies)."""
        n = self.rewards.shape[0]
        return [Episodes(**{f.name: getattr(self, f.name)[i] for f in fields(self)},
                         success=None if self._success is None else self._success[i]) for i in range(n)]
