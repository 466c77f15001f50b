"""The linear feature baseline of Duan et al. 2016 (arXiv 1604.06778; rllab's LinearFeatureBaseline).

MAML-RL (Finn et al. 2017, sec. 5.3) fits it separately for every task on that task's own
episodes and uses it on the same episodes, both for the inner (pre-update) and the outer
(post-update) advantages. It is a least-squares fit of the discounted returns on

    phi(s_t, t) = [clip(o_t, -10, 10), clip(o_t, -10, 10)^2, t/100, (t/100)^2, (t/100)^3, 1]

(``o_t`` the flattened observation, ``t`` the 0-based step index within the episode,
squares elementwise), so ``F = 2 * obs_dim + 4`` features. The clip at +-10 and the
scaling of time by 100 follow rllab's ``LinearFeatureBaseline``.

The fit is ridge regression, ``w = (X^T X + c I)^-1 X^T R``, over the live steps only,
solved in float64 for all tasks at once by a Cholesky factorisation of the ``[N, F, F]``
symmetric positive definite matrices. Not LU: with more than one torch thread, torch 2.13's
batched LU solve (``torch.linalg.solve_ex``) fails outright for ``F >= 200``, which is the
Ant's ``F = 214``. A task whose factorisation fails or whose solution is not finite has its
``c`` raised tenfold, up to ``max_tries`` times (as rllab does); if it still fails, an error is
raised rather than returning garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarl.rl.advantages import discounted_returns, gae, live, normalize_advantages
from metarl.rl.episodes import Episodes


def baseline_features(observations: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Features ``phi`` of the module docstring (``masks`` only fixes where the time dim is).

    Shapes: ``observations [..., T, B, *obs_shape]``, ``masks [..., T, B]`` -> ``[..., T, B, F]``,
    ``F = 2 * prod(obs_shape) + 4``.
    """
    lead = masks.shape
    if masks.dim() < 2 or observations.shape[: len(lead)] != lead:
        raise ValueError(
            f"observations of shape {tuple(observations.shape)} do not start with masks' [..., T, B] "
            f"{tuple(lead)}"
        )
    horizon = lead[-2]
    obs = observations.reshape(*lead, -1).clamp(-10.0, 10.0)
    t = torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100.0
    t = t.reshape(horizon, 1, 1).expand(*lead, 1)
    return torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(
    features: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    *,
    reg_coeff: float = 1e-5,
    max_tries: int = 5,
) -> torch.Tensor:
    """Per-slice ridge regression of ``targets`` on ``features`` over live steps.

    Shapes: ``features [..., T, B, F]``, ``targets, masks [..., T, B]`` -> weights
    ``[..., F]`` (one weight vector per leading index, e.g. per task), float64.
    Solves ``(X^T X + c I) w = X^T y`` with X, y restricted to ``masks > 0``; ``c``
    starts at ``reg_coeff`` and is multiplied by 10 for the slices whose solution is not
    finite, at most ``max_tries`` solves in all.
    """
    if reg_coeff <= 0:
        raise ValueError(f"fit_linear_baseline: reg_coeff={reg_coeff} must be > 0")
    alive = masks > 0
    X = torch.where(alive[..., None], features.to(torch.float64), 0.0).flatten(-3, -2)  # [..., TB, F]
    y = torch.where(alive, targets.to(torch.float64), 0.0).flatten(-2)  # [..., TB]
    XtX = X.transpose(-1, -2) @ X  # [..., F, F]
    Xty = (X.transpose(-1, -2) @ y[..., None])[..., 0]  # [..., F]
    eye = torch.eye(XtX.shape[-1], dtype=XtX.dtype, device=XtX.device)
    reg = torch.full(XtX.shape[:-2], float(reg_coeff), dtype=XtX.dtype, device=XtX.device)
    weights = torch.full_like(Xty, float("nan"))
    todo = torch.ones(XtX.shape[:-2], dtype=torch.bool, device=XtX.device)
    for _ in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(XtX + reg[..., None, None] * eye)
        sol = torch.cholesky_solve(Xty[..., None], chol)[..., 0]
        ok = (info == 0) & torch.isfinite(sol).all(dim=-1)
        weights = torch.where((todo & ok)[..., None], sol, weights)
        todo = todo & ~ok
        if not bool(todo.any()):
            return weights
        reg = torch.where(todo, reg * 10.0, reg)
    raise FloatingPointError(
        f"fit_linear_baseline: no finite solution for {int(todo.sum())} slice(s) after {max_tries} tries "
        f"(regulariser up to {float(reg.max()):.1e}); are rewards or observations non-finite?"
    )


def linear_baseline_values(episodes: Episodes, gamma: float, *, reg_coeff: float = 1e-5) -> torch.Tensor:
    """Fit the baseline on ``episodes``' discounted returns and predict on the same episodes.

    ``episodes`` is one task ``[T, B, ...]`` or stacked tasks ``[N, T, B, ...]``; each task
    gets its own fit (no Python loop over tasks). Returns values ``[..., T, B]`` in the
    rewards' dtype, 0 at masked steps, detached (the baseline is not differentiated).
    """
    with torch.no_grad():
        masks = episodes.masks
        feats = baseline_features(episodes.observations, masks)
        returns = discounted_returns(episodes.rewards, masks, gamma)
        weights = fit_linear_baseline(feats, returns, masks, reg_coeff=reg_coeff)
        values = (feats.to(torch.float64) * weights[..., None, None, :]).sum(dim=-1)
        return live(values.to(episodes.rewards.dtype), masks)


@dataclass(frozen=True)
class AdvantageEstimator:
    """Advantages of a batch of episodes: linear baseline fitted on them, GAE, optional normalisation.

    Finn et al. 2017 sec. 5.3 (rllab's setup): Monte-Carlo returns minus a linear baseline
    (``gae_lambda = 1``), normalised per task. ``__call__(episodes [..., T, B, ...]) -> [..., T, B]``,
    detached, 0 at masked steps. The same estimator serves every meta-RL algorithm.
    """

    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize: bool = True
    baseline_reg: float = 1e-5

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"AdvantageEstimator: gamma={self.gamma} and gae_lambda={self.gae_lambda} "
                             "must be in [0, 1]")

    def __call__(self, episodes: Episodes) -> torch.Tensor:
        values = linear_baseline_values(episodes, self.gamma, reg_coeff=self.baseline_reg)
        adv = gae(episodes.rewards, values, episodes.masks, self.gamma, self.gae_lambda)
        if self.normalize:
            adv = normalize_advantages(adv, episodes.masks)
        return adv.detach()
