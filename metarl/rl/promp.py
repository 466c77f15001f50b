"""ProMP: Proximal Meta-Policy Search (Rothfuss et al. 2019, arXiv 1810.06784, alg. 1).

The same sampling, inner loop and objective parts as MAML-TRPO, another outer update:

- inner loop: the LVC loss ``-mean pi_theta(a|s) / pi_theta_o(a|s) A`` (eq. 10; ``inner.estimator:
  lvc``), whose Hessian keeps the curvature of the pre-update sampling distribution;
- outer objective (eq. 11), minimised by ``steps`` Adam steps on one sampled batch:

      mean_i -mean_{D'_i} min(r A', clip(r, 1 - eps, 1 + eps) A') + eta * KL(pi_theta_o || pi_theta)

  with ``r = pi_theta'_i(theta)(a|s) / pi_theta'_o,i(a|s)`` (pi_theta'_o,i the adapted policy that
  sampled D'_i), theta'_i differentiated through the adaptation (second order), and the KL
  penalty on the pre-update policy over the first pre-update batch's states (theta_o the params
  at the start of the step). With ``adaptive_kl`` the coefficient eta is halved when that KL
  ends below ``target_kl / 1.5`` and doubled above ``1.5 target_kl`` (the paper's code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from metarl.maml import Params, params_of
from metarl.rl.adapt import InnerBatch, InnerLoop
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.episodes import Episodes
from metarl.rl.losses import kl_of, masked_mean, old_distribution
from metarl.rl.objective import MetaBatch, PostLoss, meta_batch, meta_objective


def clipped_ratio_loss(clip_eps: float) -> PostLoss:
    """PPO's clipped surrogate ``-mean min(r A, clip(r, 1 - eps, 1 + eps) A)`` (Schulman et al. 2017,
    arXiv 1707.06347, eq. 7) with r against the episodes' stored (sampling) log-probs."""

    def loss(dist: Distribution, logp: torch.Tensor, valid: InnerBatch) -> torch.Tensor:
        masks = valid.episodes.masks
        ratio = torch.exp(torch.where(masks > 0, logp - valid.episodes.log_probs, torch.zeros_like(logp)))
        clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        return -masked_mean(torch.minimum(ratio * valid.advantages, clipped * valid.advantages), masks)

    return loss


class ProMP:
    """ProMP's meta-update on a policy; values in ``metarl/configs/*promp*.yaml`` cite their source.

    Args:
        policy, inner, inner_batches, advantages, task_chunk, penalty: as :class:`~metarl.rl.maml_trpo.MAMLTRPO`.
        lr: Adam's step size on theta (1e-3 in the paper's runs).
        steps: Adam steps per sampled batch (5).
        clip_eps: the clipping range eps (0.3).
        kl_coeff: the initial coefficient eta of the pre-update KL penalty (5e-4).
        target_kl, adaptive_kl: eta's adaptation target and switch (0.01; off in the paper's runs).
    """

    #: where the training loop logs this algorithm's metrics (``trpo/kl``, ...)
    namespace = "promp"

    def __init__(
        self,
        policy: nn.Module,
        *,
        inner: InnerLoop | None = None,
        inner_batches: int = 1,
        advantages: AdvantageEstimator | None = None,
        lr: float = 1e-3,
        steps: int = 5,
        clip_eps: float = 0.3,
        kl_coeff: float = 5e-4,
        target_kl: float = 0.01,
        adaptive_kl: bool = False,
        task_chunk: int = 4,
        penalty: PostLoss | None = None,
    ) -> None:
        if inner_batches < 1 or steps < 1 or not 0 < clip_eps < 1 or kl_coeff < 0 or target_kl <= 0:
            raise ValueError(f"ProMP: need inner_batches >= 1 ({inner_batches}), steps >= 1 ({steps}), "
                             f"0 < clip_eps < 1 ({clip_eps}), kl_coeff >= 0 ({kl_coeff}), target_kl > 0 ({target_kl})")
        self.policy = policy
        self.inner = inner or InnerLoop(estimator="lvc")
        self.inner_batches = int(inner_batches)
        self.advantages = advantages or AdvantageEstimator()
        self.steps, self.clip_eps, self.task_chunk = int(steps), float(clip_eps), int(task_chunk)
        self.kl_coeff, self.target_kl, self.adaptive_kl = float(kl_coeff), float(target_kl), bool(adaptive_kl)
        self.penalty = penalty
        self.optimizer = torch.optim.Adam(params_of(policy).values(), lr=lr)

    def _loss(self, params: Params, batch: MetaBatch, old: Any, pre_old: Distribution) -> tuple[torch.Tensor, ...]:
        """(objective, clipped post-update loss, outer KL, pre-update KL) at ``params``."""
        value = meta_objective(self.policy, params, batch, self.inner, old=old, chunk=self.task_chunk,
                               post_loss=clipped_ratio_loss(self.clip_eps), penalty=self.penalty)
        pre = batch.train[0].episodes
        inner_kl = kl_of(self.policy, params, pre, pre_old)
        return value.loss + self.kl_coeff * inner_kl, value.loss, value.kl, inner_kl

    def step(self, train: Sequence[Episodes], valid: Episodes) -> dict[str, float]:
        """``steps`` Adam steps on the ProMP objective for one sampled meta-batch (as
        :meth:`MAMLTRPO.step <metarl.rl.maml_trpo.MAMLTRPO.step>`); returns metrics."""
        if len(train) != self.inner_batches:
            raise ValueError(f"ProMP.step: got {len(train)} pre-update batches for inner_batches={self.inner_batches}")
        batch = meta_batch(train, valid, self.advantages)
        live = params_of(self.policy)
        with torch.no_grad():  # pi_old: the policies that sampled, at theta_o
            first = meta_objective(self.policy, live, batch, self.inner, chunk=self.task_chunk)
            pre_old = old_distribution(self.policy, live, batch.train[0].episodes)
        losses = []
        for _ in range(self.steps):
            objective, *_ = self._loss(live, batch, first.old, pre_old)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            losses.append(float(objective.detach()))
        with torch.no_grad():
            objective, post_loss, outer_kl, inner_kl = self._loss(live, batch, first.old, pre_old)
        metrics = {"loss_before": losses[0], "loss_after": float(objective), "surrogate_after": float(post_loss),
                   "kl": float(outer_kl), "inner_kl": float(inner_kl), "kl_coeff": self.kl_coeff,
                   "entropy": first.entropy, "logp_gap": first.logp_gap}
        if self.adaptive_kl:
            self.kl_coeff = adapt_kl_coeff(self.kl_coeff, float(inner_kl), self.target_kl)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "kl_coeff": self.kl_coeff}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coeff = float(state["kl_coeff"])


def adapt_kl_coeff(coeff: float, kl: float, target: float) -> float:
    """Halve ``coeff`` when ``kl < target / 1.5``, double it when ``kl > 1.5 target`` (ProMP's rule)."""
    if kl < target / 1.5:
        return coeff / 2.0
    if kl > target * 1.5:
        return coeff * 2.0
    return coeff
