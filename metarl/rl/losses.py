"""Policy-gradient losses on :class:`~metarl.rl.episodes.Episodes`, as functions of a parameter dict.

Every function runs the policy through :func:`~metarl.rl.policies.policy_distribution`, so
it is differentiable in ``params`` (to any order, as MAML needs) and can be called inside
``torch.func.vmap``/``grad``. Two ways to handle several tasks:

- ``per_task=False``: ``params`` are shared and ``episodes`` are one task ``[T, B, ...]``
  (or stacked ``[N, T, B, ...]`` evaluated with the same parameters);
- ``per_task=True``: ``params`` are stacked over tasks (``[N, *shape]``, e.g. from
  ``adapt_batched``) and ``episodes`` stacked ``[N, T, B, ...]``; task i uses params i.

Reduction: a mean over the live steps (``masks > 0``) of each task's ``[T, B]`` slice,
then a plain mean over tasks (and any other leading dims), i.e. every task weighs the
same, as in the sum over tasks of Finn et al. 2017 (arXiv 1703.03400), alg. 3, divided by N.
Padded steps after an episode ended never contribute, whatever values they hold: they are
replaced by zeros before the policy sees them, so NaN/inf padding cannot leak into values
or gradients (a ``where`` after the fact would still give 0 * inf = NaN gradients).
Advantages are treated as constants (detached).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal
from torch.distributions import kl_divergence as _kl

from metarl.maml import detach_params
from metarl.rl.episodes import Episodes
from metarl.rl.policies import policy_distribution


def masked_mean(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over live steps per ``[T, B]`` slice, then over leading dims; a scalar.

    Shapes: ``x, masks [..., T, B]``. Masked entries are selected away (not multiplied),
    so non-finite padding does not leak into the value or its gradient. A slice with no
    live step contributes 0.
    """
    live = masks > 0
    total = torch.where(live, x, torch.zeros_like(x)).sum(dim=(-2, -1))
    count = masks.sum(dim=(-2, -1)).clamp(min=1.0)
    return (total / count).mean()


def _padded_to_zero(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Replace ``x [..., T, B, *event]`` by 0 at masked steps, so that padding (NaN, inf, an
    out-of-range discrete action) cannot reach the policy or the autograd graph."""
    alive = (masks > 0).reshape(*masks.shape, *([1] * (x.dim() - masks.dim())))
    return torch.where(alive, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _observations(episodes: Episodes) -> torch.Tensor:
    return _padded_to_zero(episodes.observations, episodes.masks)


def _log_prob(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, per_task: bool
) -> tuple[Distribution, torch.Tensor]:
    dist = policy_distribution(policy, params, _observations(episodes), per_task=per_task)
    return dist, dist.log_prob(_padded_to_zero(episodes.actions, episodes.masks))


def policy_log_prob(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, *, per_task: bool = False
) -> tuple[Distribution, torch.Tensor]:
    """The policy's distribution on ``episodes``' (zero-padded) observations and the log-probs
    ``[..., T, B]`` of their (zero-padded) actions: one forward pass, for callers that need both."""
    return _log_prob(policy, params, episodes, per_task)


def action_log_probs(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, *, per_task: bool = False
) -> torch.Tensor:
    """``log pi_params(a_t | s_t)`` of the episodes' actions, ``[..., T, B]``; 0 at masked steps."""
    _, logp = _log_prob(policy, params, episodes, per_task)
    return torch.where(episodes.masks > 0, logp, torch.zeros_like(logp))


def log_prob_gap(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, *, per_task: bool = False
) -> float:
    """The largest ``|log pi_params(a|s) - episodes.log_probs|`` over live steps: ~0 when
    ``params`` sampled ``episodes`` (float rounding), large when the stored log-probs are
    another policy's (then ratios against them are not importance weights of ``params``)."""
    with torch.no_grad():
        logp = action_log_probs(policy, params, episodes, per_task=per_task)
        return float(torch.where(episodes.masks > 0, (logp - episodes.log_probs).abs(), 0.0).max())


def reinforce_loss(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    episodes: Episodes,
    advantages: torch.Tensor,
    *,
    per_task: bool = False,
) -> torch.Tensor:
    """The vanilla policy-gradient (REINFORCE, Williams 1992) loss ``-mean log pi(a|s) * A``.

    Its gradient is the likelihood-ratio estimate of ``-grad J`` (Sutton et al. 2000);
    MAML's inner loss for RL (Finn et al. 2017, eq. 4 with a baseline). Shapes:
    ``advantages [..., T, B]`` like ``episodes.rewards``; returns a scalar.
    """
    _, logp = _log_prob(policy, params, episodes, per_task)
    return -masked_mean(logp * advantages.detach(), episodes.masks)


def surrogate_loss(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    episodes: Episodes,
    advantages: torch.Tensor,
    *,
    per_task: bool = False,
) -> torch.Tensor:
    """The TRPO surrogate loss ``-mean(ratio * A)`` (Schulman et al. 2015, arXiv 1502.05477, eq. 14).

    ``ratio = exp(log pi_params(a|s) - episodes.log_probs)``: the importance weight of the
    candidate policy against the policy that sampled the episodes, whose log-probabilities
    the sampler stored. At the sampling parameters the ratio is 1 and the gradient equals
    :func:`reinforce_loss`'s. Shapes as there; returns a scalar.
    """
    _, logp = _log_prob(policy, params, episodes, per_task)
    return ratio_loss(logp, episodes, advantages)


def ratio_loss(logp: torch.Tensor, episodes: Episodes, advantages: torch.Tensor) -> torch.Tensor:
    """:func:`surrogate_loss` from already computed log-probs ``[..., T, B]`` of the episodes' actions."""
    log_ratio = torch.where(episodes.masks > 0, logp - episodes.log_probs, torch.zeros_like(logp))
    return -masked_mean(torch.exp(log_ratio) * advantages.detach(), episodes.masks)


def mean_kl(old_dist: Distribution, dist: Distribution, masks: torch.Tensor) -> torch.Tensor:
    """Mean analytic ``KL(old_dist || dist)`` over the live states (``masks [..., T, B]``); a scalar."""
    return masked_mean(_kl(old_dist, dist), masks)


def kl_divergence(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    old_params: Mapping[str, torch.Tensor],
    episodes: Episodes,
    *,
    per_task: bool = False,
) -> torch.Tensor:
    """Mean ``KL(pi_old(.|s) || pi_params(.|s))`` over the live states of ``episodes``.

    ``old_params`` are the parameters that sampled the episodes (in MAML-TRPO the
    post-update parameters theta'_i at the current theta, for the valid episodes); they
    are detached here, so the result is differentiable in ``params`` only, vanishes with
    zero gradient at ``params == old_params`` and has the Fisher matrix as its Hessian
    there (Schulman et al. 2015, appendix C). The KL is analytic
    (``torch.distributions.kl_divergence``), not a sample estimate. ``per_task`` applies
    to both parameter dicts. Returns a scalar.
    """
    old = old_distribution(policy, old_params, episodes, per_task=per_task)
    return kl_of(policy, params, episodes, old, per_task=per_task)


def kl_of(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    episodes: Episodes,
    old_dist: Distribution,
    *,
    per_task: bool = False,
) -> torch.Tensor:
    """Mean ``KL(old_dist || pi_params)`` over the live states of ``episodes``, with ``old_dist``
    computed once (:func:`old_distribution`): :func:`kl_divergence` without recomputing pi_old."""
    dist = policy_distribution(policy, params, _observations(episodes), per_task=per_task)
    return mean_kl(old_dist, dist, episodes.masks)


def old_distribution(
    policy: nn.Module, old_params: Mapping[str, torch.Tensor], episodes: Episodes, *, per_task: bool = False
) -> Distribution:
    """pi_old on ``episodes``' observations, detached: the fixed side of the KL."""
    with torch.no_grad():
        return policy_distribution(policy, detach_params(old_params), _observations(episodes), per_task=per_task)


def entropy(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, *, per_task: bool = False
) -> torch.Tensor:
    """Mean entropy of pi_params(.|s) over the live states of ``episodes`` (a diagnostic)."""
    dist = policy_distribution(policy, params, _observations(episodes), per_task=per_task)
    return masked_mean(dist.entropy(), episodes.masks)


def action_box_excess(dist: Distribution, masks: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Mean over live states of ``sum_d (max(0, |mu_d - c_d| - h_d) / sigma_d)^2``: how far a Gaussian
    policy's mean lies outside the action box ``[low, high]`` (centre ``c``, half-width ``h``), in
    units of its own standard deviation; 0 while the mean is inside. A scalar, differentiable in
    the distribution's tensors.

    Why in standard deviations: an env that clips its actions gives every sample beyond the box the
    same step, so once the mean is a few sigma outside, nearly all samples are clipped alike and the
    advantages carry no direction (RESULTS.md, "a seed that saturates"); the ratio is what decides
    that, whatever the action scale.
    """
    if not (isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)):
        raise TypeError(f"action_box_excess needs a Gaussian policy (Independent(Normal)), got {type(dist)}")
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    low, high = low.to(loc), high.to(loc)
    centre, half = (high + low) / 2, (high - low) / 2
    outside = ((loc - centre).abs() - half).clamp(min=0.0) / scale
    return masked_mean(outside.square().sum(-1), masks)


def box_saturation(
    policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """Share of the mean action's coordinates outside the action box ``[low, high]``, over the live
    states of ``episodes`` (a diagnostic, ``train/mean_outside_box``): a Gaussian policy whose means
    leave a box the env clips to gets the same step from most samples, and its gradient fades
    (:func:`action_box_excess`)."""
    dist = policy_distribution(policy, params, _observations(episodes), per_task=False)
    if not (isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)):
        raise TypeError(f"box_saturation needs a Gaussian policy (Independent(Normal)), got {type(dist)}")
    loc = dist.base_dist.loc[..., :low.numel()]  # the env's coordinates (a latent policy has more)
    outside = (loc < low.to(loc)) | (loc > high.to(loc))
    return masked_mean(outside.to(loc.dtype).mean(-1), episodes.masks)
