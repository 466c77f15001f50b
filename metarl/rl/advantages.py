"""Discounted returns, generalised advantage estimation (GAE) and advantage normalisation.

All functions work on time-major tensors ``[..., T, B]`` (any leading dims, e.g. the task
dim N of stacked :class:`~metarl.rl.episodes.Episodes`) with a mask ``[..., T, B]`` that is
1.0 while an episode is alive and 0.0 after it ended. Masks must be prefixes (once an
episode has ended it stays ended), as the sampler produces them. Rewards and values at
masked steps are ignored; results are 0 there.

Bootstrapping: the value after the last live step is taken to be 0, both at termination
and at the horizon T (time-limit truncation is treated as termination), as in Finn et al.
2017's rllab setup and Duan et al. 2016 (arXiv 1604.06778).

Instead of a reverse Python loop over t, the backward recursions
``x_t = y_t + c * x_{t+1}`` are evaluated as one product with the upper-triangular
matrix ``D[t, k] = c^(k - t)`` (k >= t): ``x = D @ y``. Because masks are prefixes and
``y`` is 0 after an episode ends, this equals the masked recursion exactly.
"""

from __future__ import annotations

import torch


def discount_matrix(
    horizon: int, discount: float, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``D [T, T]`` with ``D[t, k] = discount^(k - t)`` for ``k >= t`` and 0 below the diagonal."""
    t = torch.arange(horizon, device=device, dtype=torch.float64)
    exponent = t[None, :] - t[:, None]
    powers = torch.pow(
        torch.tensor(float(discount), dtype=torch.float64, device=device), exponent.clamp(min=0)
    )
    return torch.where(exponent >= 0, powers, torch.zeros_like(powers)).to(dtype)


def live(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``x`` where ``masks > 0``, else 0: selects rather than multiplies, so NaN/inf padding is dropped."""
    return torch.where(masks > 0, x, torch.zeros_like(x))


def _check(name: str, x: torch.Tensor, masks: torch.Tensor) -> None:
    if x.shape != masks.shape or x.dim() < 2:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected [..., T, B] equal to masks' {tuple(masks.shape)}"
        )


def discounted_returns(rewards: torch.Tensor, masks: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go ``R_t = sum_{k >= t} gamma^(k - t) r_k`` over each episode's live steps.

    Shapes: ``rewards, masks [..., T, B]`` -> ``[..., T, B]`` (0 at masked steps).
    """
    _check("rewards", rewards, masks)
    D = discount_matrix(rewards.shape[-2], gamma, dtype=rewards.dtype, device=rewards.device)
    return live(D @ live(rewards, masks), masks)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, masks: torch.Tensor, gamma: float, gae_lambda: float
) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016, arXiv 1506.02438, eq. 16).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (eq. 9) with ``V_{t+1} = 0`` after the
    episode's last live step, and ``A_t = sum_{l >= 0} (gamma * lambda)^l delta_{t+l}``
    over the live steps. ``gae_lambda = 1`` gives ``R_t - V_t`` (discounted return minus
    baseline, eq. 18); ``gae_lambda = 0`` gives the one-step TD error ``delta_t`` (eq. 17).

    Shapes: ``rewards, values, masks [..., T, B]`` -> ``[..., T, B]`` (0 at masked steps).
    """
    _check("rewards", rewards, masks)
    _check("values", values, masks)
    v = live(values, masks)
    next_v = torch.cat([v[..., 1:, :], torch.zeros_like(v[..., :1, :])], dim=-2)
    deltas = live(rewards + gamma * next_v - v, masks)
    D = discount_matrix(rewards.shape[-2], gamma * gae_lambda, dtype=rewards.dtype, device=rewards.device)
    return live(D @ deltas, masks)


def normalize_advantages(advantages: torch.Tensor, masks: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(A - mean) / (std + eps)`` over the live steps of each ``[T, B]`` slice; 0 where masked.

    Mean and (population, 1/n) standard deviation are weighted by ``masks`` and taken over
    the last two dims, so stacked tasks ``[N, T, B]`` are normalised each on its own (as
    the per-task losses use them). Shapes: ``[..., T, B]`` -> ``[..., T, B]``.
    """
    _check("advantages", advantages, masks)
    count = masks.sum(dim=(-2, -1), keepdim=True).clamp(min=1.0)
    adv = live(advantages, masks)
    mean = adv.sum(dim=(-2, -1), keepdim=True) / count
    var = live((adv - mean) ** 2, masks).sum(dim=(-2, -1), keepdim=True) / count
    return live((adv - mean) / (var.sqrt() + eps), masks)
