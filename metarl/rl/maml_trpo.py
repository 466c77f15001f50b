"""MAML-TRPO (Finn et al. 2017, arXiv 1703.03400, alg. 3): the paper's meta-RL update.

Per meta-iteration, for N tasks: adapt theta on the pre-update episodes D_i
(:func:`~metarl.rl.adapt.adapt_policy`), evaluate the post-update surrogate and KL on the
valid episodes D'_i through that adaptation (:func:`~metarl.rl.objective.meta_objective`),
and take one TRPO step (Schulman et al. 2015) on theta: conjugate gradient on Fisher-vector
products (a strategy of :mod:`metarl.rl.fisher`), a KL-scaled step and a backtracking line
search that re-runs the adaptation for every candidate. The policy is written once, when the
line search accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from metarl.maml import Params, params_of
from metarl.rl.adapt import InnerLoop
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.episodes import Episodes
from metarl.rl.fisher import FisherInput, MetaFisher, MetaProblem, exact_fisher
from metarl.rl.losses import kl_of, old_distribution, reinforce_loss
from metarl.rl.objective import MetaBatch, PostLoss, meta_batch, meta_objective
from metarl.trpo import TrustRegion, trust_region_update


class MAMLTRPO:
    """MAML with a policy-gradient inner loop and a TRPO outer step, batched over tasks.

    Args:
        policy: a policy module (``forward(obs) -> distribution``); its trainable parameters
            (and learned inner rates ``inner_lr.*``, Meta-SGD) are theta.
        inner: the inner loop (alpha, loss, order); one gradient step per pre-update batch.
        inner_batches: pre-update batches per iteration (the inner steps, each on episodes
            resampled by the params after the previous one); 0 trains without adaptation
            (the paper's pretrained and oracle baselines).
        advantages: the advantage estimator of both the inner and the outer loss.
        trust_region: delta, conjugate gradient and line search (0.01 in the paper).
        fisher: the Fisher-vector-product strategy (:func:`metarl.rl.fisher.make_fisher`).
        task_chunk: tasks per adaptation call in the objective (0: all); only speed differs.
        penalty: a term added to the post-update loss (:class:`~metarl.rl.objective.ActionBoxPenalty`);
            ``None``: the paper's objective.
    """

    #: where the training loop logs this algorithm's metrics (``trpo/kl``, ...)
    namespace = "trpo"

    def __init__(
        self,
        policy: nn.Module,
        *,
        inner: InnerLoop | None = None,
        inner_batches: int = 1,
        advantages: AdvantageEstimator | None = None,
        trust_region: TrustRegion | None = None,
        fisher: MetaFisher = exact_fisher,
        task_chunk: int = 4,
        penalty: PostLoss | None = None,
    ) -> None:
        if inner_batches < 0 or task_chunk < 0:
            raise ValueError(f"MAMLTRPO: inner_batches={inner_batches} and task_chunk={task_chunk} must be >= 0")
        self.policy = policy
        self.inner = inner or InnerLoop()
        self.inner_batches = int(inner_batches)
        self.advantages = advantages or AdvantageEstimator()
        self.trust_region = trust_region or TrustRegion()
        self.fisher = fisher
        self.task_chunk = int(task_chunk)
        self.penalty = penalty

    def step(self, train: Sequence[Episodes], valid: Episodes) -> dict[str, float]:
        """One meta-update from ``inner_batches`` pre-update batches and the post-update episodes
        sampled by the params :func:`~metarl.rl.adapt.adapt_on_episodes` returns for them (with their ``log_probs``).

        Metrics: those of :func:`metarl.trpo.trust_region_update`, ``inner_loss`` (REINFORCE loss
        of theta on the first pre-update batch), ``adapt_kl`` (where it adapts: how far the adaptation
        moves the policy, :meth:`_adapt_kl`), ``entropy`` (post-update policies on the valid
        states) and ``logp_gap`` (~0 when ``valid`` was sampled by those params; large
        when it was not: then the surrogate and the KL disagree about which policy is old);
        with a ``penalty``, also ``penalty`` (its value at theta_0, included in ``surrogate_*``).
        """
        if len(train) != self.inner_batches:
            raise ValueError(f"MAMLTRPO.step: got {len(train)} pre-update batches for inner_batches="
                             f"{self.inner_batches}")
        batch = meta_batch(train, valid, self.advantages)
        live = params_of(self.policy)
        theta = {k: v.detach().requires_grad_(True) for k, v in live.items()}
        # the gradient pass at theta_0: pi_old is the post-update policies there (old=None)
        value = meta_objective(self.policy, theta, batch, self.inner, chunk=self.task_chunk, penalty=self.penalty)
        problem = MetaProblem(self.policy, batch, self.inner, self.task_chunk)
        inner_loss = self._inner_loss(batch, theta)
        # before the step: theta shares its storage with the module, which an accepted step overwrites
        adapt_kl = self._adapt_kl(batch, theta, value.post_params) if batch.train else None

        def line_objective(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
            candidate = meta_objective(self.policy, params, batch, self.inner, old=value.old, chunk=self.task_chunk,
                                       penalty=self.penalty)
            return candidate.loss, candidate.kl

        new, metrics = trust_region_update(
            value.loss, theta, lambda: self.fisher(problem, theta, FisherInput(value.kl, value.post_params)),
            line_objective, **asdict(self.trust_region),
        )
        if metrics["accepted"]:
            with torch.no_grad():
                for name, p in live.items():
                    p.copy_(new[name])
        metrics.update(inner_loss=inner_loss, entropy=value.entropy, logp_gap=value.logp_gap)
        if adapt_kl is not None:
            metrics["adapt_kl"] = adapt_kl
        if self.penalty is not None:  # its value at theta_0 (surrogate_* include it)
            metrics["penalty"] = value.penalty
        return metrics

    def _adapt_kl(self, batch: MetaBatch, theta: Params, post: Params) -> float:
        """Mean ``KL(pi_theta || pi_theta'_i)`` over the tasks (each a mean over its first pre-update batch's
        live states): how far the adaptation moves the policy. Near 0, little of the meta-gradient passes
        through the adaptation, and MAML trains much as the pretrained baseline does."""
        episodes = batch.train[0].episodes
        n = batch.n_tasks
        with torch.no_grad():
            shared = {k: theta[k].detach().unsqueeze(0).expand(n, *theta[k].shape) for k in post}
            before = old_distribution(self.policy, shared, episodes, per_task=True)
            return float(kl_of(self.policy, post, episodes, before, per_task=True))

    def _inner_loss(self, batch: MetaBatch, theta: Params) -> float:
        first = batch.train[0] if batch.train else batch.valid
        with torch.no_grad():
            return float(reinforce_loss(self.policy, theta, first.episodes, first.advantages))

    def state_dict(self) -> dict[str, Any]:
        """The random stream of a subsampled Fisher (the rest lives in the policy)."""
        generator = getattr(self.fisher, "generator", None)
        return {"fisher_rng": generator.get_state() if generator is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        generator = getattr(self.fisher, "generator", None)
        if generator is not None and state.get("fisher_rng") is not None:
            generator.set_state(state["fisher_rng"])
