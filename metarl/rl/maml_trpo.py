"""The MAML-TRPO meta-step for reinforcement learning (Finn et al. 2017, arXiv 1703.03400, alg. 3).

For a meta-batch of N tasks with pre-update ("train") episodes D_i sampled by pi_theta and
post-update ("valid") episodes D'_i sampled by pi_theta'_i:

- inner loop (eq. 1 with the REINFORCE loss of eq. 4, linear-baseline advantages):
  ``theta'_i(theta) = theta - alpha * grad_theta L_reinforce(theta; D_i)``, for all tasks
  at once (``torch.func.vmap`` over tasks, :func:`metarl.maml.adapt_batched`);
- outer objective: the TRPO surrogate ``L(theta) = mean_i -mean_{D'_i} ratio * A'`` with
  ``ratio = pi_theta'_i(theta)(a|s) / pi_old(a|s)``, pi_old the sampling policy (its
  ``log_probs`` stored in D'_i), under the constraint
  ``mean_i KL(pi_theta'_i(theta_0) || pi_theta'_i(theta)) <= max_kl`` on D'_i;
- both differentiate through the adaptation (second order unless ``first_order``),
  so the Fisher-vector products are Hessian-vector products of that KL with respect to
  theta by double backprop (:func:`metarl.trpo.fisher_vector_product`), followed by
  conjugate gradient, the KL-scaled step and a backtracking line search
  (:func:`metarl.trpo.trust_region_step`); every candidate re-runs the adaptation.

The module is written once per step, and only when the line search accepts.

Several inner steps. ``train_episodes`` is either one stacked :class:`Episodes` (all
``inner_steps`` gradient steps use that batch) or a sequence of stacked Episodes, one per
inner step: step k then uses batch k, which the training loop samples with the params
after k steps (``adapt(batches[:k])``), as in the MAML paper's multi-step RL evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from metarl.maml import LearningRate, Params, adapt, adapt_batched, detach_params, params_of, sgd_step
from metarl.rl.advantages import gae, normalize_advantages
from metarl.rl.baseline import linear_baseline_values
from metarl.rl.episodes import Episodes
from metarl.rl.losses import (
    kl_of,
    masked_mean,
    old_distribution,
    policy_log_prob,
    reinforce_loss,
    surrogate_and_kl_of,
    surrogate_loss,
)
from metarl.rl.policies import LR_PREFIX, detach_distribution, lr_key
from metarl.trpo import flatten, trust_region_step, unflatten

TrainEpisodes = Episodes | Sequence[Episodes]
#: One train batch as vmap consumes it: the Episodes fields (declaration order) and advantages.
_Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class _InnerData(NamedTuple):
    """Prepared inner-loop data: the batches and how many gradient steps each one gets."""

    batches: tuple[_Batch, ...]
    steps_per_batch: int


def _as_tuple(episodes: Episodes) -> tuple[torch.Tensor, ...]:
    return tuple(getattr(episodes, f.name) for f in fields(Episodes))


class MAMLTRPO:
    """MAML with a REINFORCE inner loop and a TRPO outer step, batched over tasks.

    Args:
        policy: a policy module (``forward(obs) -> distribution``); its trainable
            parameters are theta. Only :meth:`step` writes them.
        inner_lr: alpha, the inner step size (0.1 in Finn et al. 2017, sec. 5.3).
        inner_steps: gradient steps of the inner loop (>= 0).
        first_order: drop the second-order terms of the meta-gradient (FOMAML).
        max_kl: delta, the trust region on the mean post-update KL (0.01 in the paper).
        cg_iters, cg_damping: conjugate-gradient iterations and Fisher damping.
        ls_ratio, ls_max_steps: backtracking line search factor and number of tries.
        ls_rescale: after a candidate that breaks the KL bound, shrink to where the measured
            KL puts the bound (:func:`metarl.trpo.trust_region_step`); fewer objective
            evaluations with an approximate Fisher (``fisher_tasks``, ``fisher="post"``).
        gamma, gae_lambda: discount and GAE lambda (1.0 = returns minus linear baseline,
            as in the paper's rllab setup).
        normalize_advantages: normalise advantages per task over live steps.
        inner_estimator: the inner loss. ``"reinforce"`` (default, the paper's):
            ``-mean log pi(a|s) A``. ``"lvc"``: ``-mean pi(a|s) / pi_s(a|s) A`` with pi_s the
            sampling policy (the episodes' stored ``log_probs``), the low-variance curvature
            objective of ProMP (Rothfuss et al. 2019, arXiv 1810.06784). At the sampling
            parameters both have the same value gradient, so the inner step is the same;
            their Hessians differ by ``-mean grad log pi grad log pi^T A``, the curvature that
            the pre-update sampling distribution contributes and that the REINFORCE form
            drops, so the meta-gradient and the meta-Fisher through the adaptation differ.
            A batch used for several steps is importance-weighted at the later ones.
        baseline_reg: initial ridge coefficient of the linear baseline fit.
        fisher_tasks: compute the Fisher-vector products on this many randomly chosen tasks
            of the meta-batch (0, the default: all, the exact Fisher). A cheaper, approximate
            natural gradient (rllab's ``subsample_factor``); the line search still checks the
            KL bound on all tasks.
        fisher_episodes: compute them on this many randomly chosen episodes of each (chosen)
            task (0, the default: all). Covers every task's states at the cost of a few: on the
            20-task 2D-navigation batch, 5 of 20 episodes of every task cost what all episodes of
            5 tasks cost. Approximate, like ``fisher_tasks``; the line search checks all episodes.
        fisher: ``"meta"`` (default): F is the Hessian of the mean KL through the inner
            adaptation, J^T F' J with J = d theta'/d theta (Finn et al.'s update, and each
            product is a double backprop through the second-order adaptation).
            ``"post"``: J is taken as the identity, so F is the mean Fisher of the
            post-update policies on their valid states: a product costs one double backprop
            through the policy alone. Approximate, like ``fisher_tasks``; the gradient is
            exact and the line search checks the exact KL through the adaptation. Not for
            learned inner rates (their Fisher would be 0).
        task_chunk: tasks per vmap call in the meta-update's objective (0: all at once).
            The losses, gradients and Fisher-vector products are the same for any value
            (up to float rounding; tested); only speed differs. On the 2-core CPU, chunks of 2-4
            tasks measured 10-20% faster than one call for all 20 tasks and than a per-task
            loop (chunks of 1), see README "Speed". On a GPU use 0.
        fisher_factored: compute meta-Fisher products as J^T F' J (:meth:`_meta_fisher_product`)
            where that is exact and possible (one inner step with a fixed rate, an MLP policy);
            ``False``: always double backprop through the adaptation. Same numbers, other speed.
        seed: seeds the choice of those tasks.
    """

    def __init__(
        self,
        policy: nn.Module,
        *,
        inner_lr: float = 0.1,
        inner_steps: int = 1,
        first_order: bool = False,
        max_kl: float = 1e-2,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_ratio: float = 0.8,
        ls_max_steps: int = 15,
        ls_rescale: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        normalize_advantages: bool = True,
        inner_estimator: str = "reinforce",
        baseline_reg: float = 1e-5,
        fisher_tasks: int = 0,
        fisher_episodes: int = 0,
        fisher: str = "meta",
        task_chunk: int = 4,
        fisher_factored: bool = True,
        seed: int = 0,
    ) -> None:
        if inner_steps < 0:
            raise ValueError(f"MAMLTRPO: inner_steps={inner_steps} must be >= 0")
        if not 0.0 <= gamma <= 1.0 or not 0.0 <= gae_lambda <= 1.0:
            raise ValueError(f"MAMLTRPO: gamma={gamma} and gae_lambda={gae_lambda} must be in [0, 1]")
        if max_kl <= 0 or cg_iters < 1 or cg_damping < 0 or not 0 < ls_ratio < 1 or ls_max_steps < 1:
            raise ValueError(
                f"MAMLTRPO: need max_kl > 0 ({max_kl}), cg_iters >= 1 ({cg_iters}), cg_damping >= 0 "
                f"({cg_damping}), 0 < ls_ratio < 1 ({ls_ratio}), ls_max_steps >= 1 ({ls_max_steps})"
            )
        self.policy = policy
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.max_kl = float(max_kl)
        self.cg_iters = int(cg_iters)
        self.cg_damping = float(cg_damping)
        self.ls_ratio = float(ls_ratio)
        self.ls_max_steps = int(ls_max_steps)
        self.ls_rescale = bool(ls_rescale)
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.normalize_advantages = bool(normalize_advantages)
        if inner_estimator not in ("reinforce", "lvc"):
            raise ValueError(f"MAMLTRPO: inner_estimator={inner_estimator!r}; expected 'reinforce' or 'lvc'")
        self.inner_estimator = inner_estimator
        self._inner_fn = reinforce_loss if inner_estimator == "reinforce" else surrogate_loss
        self.baseline_reg = float(baseline_reg)
        if fisher_tasks < 0:
            raise ValueError(f"MAMLTRPO: fisher_tasks={fisher_tasks} must be >= 0 (0: all tasks)")
        self.fisher_tasks = int(fisher_tasks)
        if fisher_episodes < 0:
            raise ValueError(f"MAMLTRPO: fisher_episodes={fisher_episodes} must be >= 0 (0: all episodes)")
        self.fisher_episodes = int(fisher_episodes)
        if fisher not in ("meta", "post"):
            raise ValueError(f"MAMLTRPO: fisher={fisher!r}; expected 'meta' (exact) or 'post' (J = I, approximate)")
        if fisher == "post" and any(k.startswith(LR_PREFIX) for k in params_of(policy)):
            raise ValueError("MAMLTRPO: fisher='post' cannot precondition learned inner rates (inner.learn_lr: "
                             "their post-update Fisher is 0); use fisher='meta'")
        self.fisher = fisher
        if task_chunk < 0:
            raise ValueError(f"MAMLTRPO: task_chunk={task_chunk} must be >= 0 (0: all tasks at once)")
        self.task_chunk = int(task_chunk)
        self.fisher_factored = bool(fisher_factored)
        self.fisher_generator = torch.Generator().manual_seed(int(seed))

    # ------------------------------------------------------------------ estimators
    def advantages(self, episodes: Episodes) -> torch.Tensor:
        """Per-task advantages ``[..., T, B]``: linear baseline fitted on these episodes, GAE,
        then (optionally) per-task normalisation. Detached; 0 at masked steps."""
        values = linear_baseline_values(episodes, self.gamma, reg_coeff=self.baseline_reg)
        adv = gae(episodes.rewards, values, episodes.masks, self.gamma, self.gae_lambda)
        if self.normalize_advantages:
            adv = normalize_advantages(adv, episodes.masks)
        return adv.detach()

    # ------------------------------------------------------------------ inner loop
    def _inner_loss(self, params: Params, data: Any) -> torch.Tensor:
        episode_fields, advantages = data
        return self._inner_fn(self.policy, params, Episodes(*episode_fields), advantages)

    def _inner_data(self, train_episodes: TrainEpisodes) -> _InnerData:
        if isinstance(train_episodes, Episodes):
            batches, steps_per_batch = [train_episodes], self.inner_steps
        else:
            batches, steps_per_batch = list(train_episodes), 1
        if not batches:
            raise ValueError("MAMLTRPO: train_episodes is an empty sequence")
        for e in batches:
            if e.masks.dim() != 3:
                raise ValueError(
                    "MAMLTRPO expects stacked episodes [N, T, B, ...]; got masks of shape "
                    f"{tuple(e.masks.shape)} (use Episodes.stack)"
                )
            if e.masks.shape[0] != batches[0].masks.shape[0]:
                raise ValueError("MAMLTRPO: all train batches must hold the same number of tasks")
        return _InnerData(tuple((_as_tuple(e), self.advantages(e)) for e in batches), steps_per_batch)

    def _split_lr(self, params: Mapping[str, torch.Tensor]) -> tuple[Params, LearningRate]:
        """The policy's parameters and the inner step size: ``inner_lr``, or the learned
        per-parameter rates (Meta-SGD) when ``params`` hold ``inner_lr.*`` entries."""
        if not any(k.startswith(LR_PREFIX) for k in params):
            return dict(params), self.inner_lr
        policy_params = {k: v for k, v in params.items() if not k.startswith(LR_PREFIX)}
        return policy_params, {k: params[LR_PREFIX + lr_key(k)] for k in policy_params}

    def _adapt(self, data: _InnerData, params: Mapping[str, torch.Tensor], lr_decay: float = 1.0) -> Params:
        params, lr = self._split_lr(params)

        def scaled(factor: float) -> LearningRate:
            return {k: v * factor for k, v in lr.items()} if isinstance(lr, Mapping) else lr * factor

        if getattr(self.policy, "stacked", None) is not None:
            return self._adapt_stacked(data, params, lr, lr_decay)
        if len(data.batches) == 1:
            return adapt_batched(
                self._inner_loss,
                params,
                data.batches[0],
                lr=lr,
                steps=data.steps_per_batch,
                first_order=self.first_order,
            )

        def one_task(per_step: tuple[_Batch, ...]) -> Params:
            fast = dict(params)
            for j, batch in enumerate(per_step):
                fast = adapt(
                    self._inner_loss,
                    fast,
                    batch,
                    lr=scaled(lr_decay**j),
                    steps=data.steps_per_batch,
                    first_order=self.first_order,
                )
            return fast

        return torch.func.vmap(one_task, randomness="different")(data.batches)

    def _adapt_stacked(self, data: _InnerData, params: Params, lr: LearningRate, lr_decay: float) -> Params:
        """:meth:`_adapt` for policies with a stacked forward (the MLP policies), without vmap.

        theta is expanded to N per-task copies ``[N, *shape]`` (views) and the inner loss
        summed over tasks: task i's loss depends on copy i only, so one backward pass gives
        every task's gradient, ``[N, *shape]``, and with ``create_graph`` the adapted params
        stay differentiable in theta through the expansion (second order unless
        ``first_order``). The same numbers as vmap over tasks of :func:`metarl.maml.adapt`
        (tested), with batched matmuls on plain autograd instead of functorch transforms.
        Without a differentiable theta (sampling, the line search) the graph is not kept.
        """
        n = data.batches[0][1].shape[0]
        lrs = list(lr.values()) if isinstance(lr, Mapping) else []
        differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in [*params.values(), *lrs])
        create_graph = differentiable and not self.first_order

        def expand(v: torch.Tensor) -> torch.Tensor:
            v = v.unsqueeze(0).expand(n, *v.shape)
            return v if differentiable else v.detach().requires_grad_(True)

        with torch.enable_grad():
            fast = {k: expand(v) for k, v in params.items()}
            for j, (episode_fields, advantages) in enumerate(data.batches):
                factor = lr_decay**j
                step_lr = {k: v * factor for k, v in lr.items()} if isinstance(lr, Mapping) else lr * factor
                for _ in range(data.steps_per_batch):
                    loss = n * self._inner_fn(self.policy, fast, Episodes(*episode_fields), advantages, per_task=True)
                    grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
                    if not create_graph:
                        grads = tuple(g.detach() for g in grads)
                    fast = sgd_step(fast, dict(zip(fast, grads, strict=True)), step_lr)
                    if not differentiable:
                        fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
        return fast if differentiable else {k: v.detach() for k, v in fast.items()}

    def adapt(
        self,
        train_episodes: TrainEpisodes,
        params: Mapping[str, torch.Tensor] | None = None,
        *,
        lr_decay: float = 1.0,
    ) -> Params:
        """Adapted params theta'_i for every task, stacked ``[N, *shape]``.

        ``train_episodes``: stacked Episodes ``[N, T, B, ...]`` (``inner_steps`` steps on it),
        or a sequence of k stacked Episodes (k steps, the j-th on batch j; pass the first k
        batches to get the params that sample batch k + 1). ``params`` defaults to the
        policy's current parameters, in which case the result is detached (for sampling
        and evaluation); given params with ``requires_grad`` stay differentiable.
        ``lr_decay`` multiplies the step size after each batch of a sequence (0.5: the
        test-time halving of Finn et al.'s RL evaluation); training uses 1.0.
        When ``params`` (or the policy) hold learned rates ``inner_lr.*``
        (:func:`~metarl.rl.policies.attach_inner_lr`), those are the step sizes; the result
        holds the policy's parameters only.
        """
        data = self._inner_data(train_episodes)
        if params is None:
            with torch.no_grad():
                return self._adapt(data, detach_params(params_of(self.policy)), lr_decay)
        return self._adapt(data, params, lr_decay)

    # ------------------------------------------------------------------ outer step
    @staticmethod
    def _subset(
        data: _InnerData, valid: Episodes, advantages: torch.Tensor, old_params: Params, index: Any
    ) -> tuple[_InnerData, Episodes, torch.Tensor, Params]:
        """The tasks ``index`` (a slice: views; an index tensor: copies) of every per-task input."""
        sub_data = _InnerData(
            tuple((tuple(f[index] for f in fields_), adv[index]) for fields_, adv in data.batches), data.steps_per_batch
        )
        sub_valid = Episodes(*(f[index] for f in _as_tuple(valid)))
        return sub_data, sub_valid, advantages[index], {k: v[index] for k, v in old_params.items()}

    def _objective(
        self,
        data: _InnerData,
        valid_episodes: Episodes,
        valid_advantages: torch.Tensor,
        old_params: Params | None = None,
    ) -> _MetaObjective:
        """``params -> (surrogate, mean KL)`` over all tasks (:class:`_MetaObjective`)."""
        return _MetaObjective(self, data, valid_episodes, valid_advantages, old_params)

    def _fisher_subset(
        self, data: _InnerData, valid_episodes: Episodes, valid_advantages: torch.Tensor, old_params: Params
    ) -> tuple[_InnerData, Episodes, torch.Tensor, Params]:
        """The inputs of the Fisher-vector products: ``fisher_tasks`` random tasks (all if 0) and of
        those ``fisher_episodes`` random valid episodes (all if 0), drawn from ``fisher_generator``."""
        n, b = valid_episodes.masks.shape[0], valid_episodes.masks.shape[-1]
        if 0 < self.fisher_tasks < n:
            idx = torch.randperm(n, generator=self.fisher_generator)[: self.fisher_tasks].sort().values
            data, valid_episodes, valid_advantages, old_params = self._subset(
                data, valid_episodes, valid_advantages, old_params, idx
            )
        if 0 < self.fisher_episodes < b:  # the same valid episodes of every task (they are exchangeable)
            ep = torch.randperm(b, generator=self.fisher_generator)[: self.fisher_episodes].sort().values
            valid_episodes = Episodes(*(f[:, :, ep] for f in _as_tuple(valid_episodes)))
            valid_advantages = valid_advantages[:, :, ep]
        return data, valid_episodes, valid_advantages, old_params

    def _fisher_kl(
        self, data: _InnerData, valid_episodes: Episodes, valid_advantages: torch.Tensor, old_params: Params
    ) -> Any:
        """The KL whose Hessian preconditions the step, on :meth:`_fisher_subset`'s inputs: through
        the adaptation (``fisher="meta"``; ``None`` for all tasks and episodes: the objective's
        own KL) or of the post-update policies alone (``fisher="post"``)."""
        if self._exact_fisher(valid_episodes.masks.shape[0], valid_episodes.masks.shape[-1]):
            return None
        data, valid_episodes, valid_advantages, old_params = self._fisher_subset(
            data, valid_episodes, valid_advantages, old_params
        )
        if self.fisher == "meta":
            objective = self._objective(data, valid_episodes, valid_advantages, old_params)
            return lambda params: objective(params)[1]
        # post: theta'_i = theta'_i(theta_0) + (params - theta_0), so the Hessian at theta_0 is
        # the mean Fisher of the post-update policies
        old_dist = old_distribution(self.policy, old_params, valid_episodes, per_task=True)

        def post_update_kl(params: Params) -> torch.Tensor:
            fast = {k: old_params[k] + (v - v.detach()) for k, v in params.items()}
            return kl_of(self.policy, fast, valid_episodes, old_dist, per_task=True)

        return post_update_kl

    def _factored(self, data: _InnerData) -> bool:
        """Whether the meta-Fisher products can be factored (:meth:`_meta_fisher_product`): one
        second-order inner step with a fixed rate, on an MLP policy."""
        return (
            self.fisher == "meta" and self.fisher_factored and not self.first_order
            and len(data.batches) == 1 and data.steps_per_batch == 1
            and getattr(self.policy, "stacked", None) is not None
            and not any(k.startswith(LR_PREFIX) for k in params_of(self.policy))
        )

    def _meta_fisher_product(
        self, data: _InnerData, valid_episodes: Episodes, old_params: Params, params: Params
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> F v`` for the meta-Fisher at theta_0 = ``params``, factored as J^T F' J.

        The KL through the adaptation is ``mean_i KL_i(theta'_i(theta))`` with KL_i's value and
        gradient 0 at theta'_i(theta_0) (pi_old is the post-update policy there). Its Hessian at
        theta_0 is therefore exactly ``mean_i J_i^T F_i J_i``: F_i the Fisher of the post-update
        policy i (the Hessian of KL_i), J_i = d theta'_i / d theta = I - alpha H_i with H_i the
        inner loss's Hessian (symmetric, so J_i^T = J_i); the term with the second derivative of
        theta'_i is multiplied by KL_i's zero gradient. Each product is then three Hessian-vector
        products on retained graphs: H_i v (all tasks in one backward pass, theta expanded to
        per-task copies as in :meth:`_adapt_stacked`), F_i u_i on the valid states, H_i w_i, where
        double backprop through the whole second-order adaptation costs more (README "Speed").
        Equal to it to float rounding (tested).
        """
        (episode_fields, advantages), = data.batches
        n = valid_episodes.masks.shape[0]
        alpha = self.inner_lr
        names = list(params)
        with torch.enable_grad():
            copies = {k: params[k].detach().unsqueeze(0).expand(n, *params[k].shape).requires_grad_(True)
                      for k in names}
            inner = n * self._inner_fn(self.policy, copies, Episodes(*episode_fields), advantages, per_task=True)
            inner_grads = torch.autograd.grad(inner, [copies[k] for k in names], create_graph=True)
            phi = {k: old_params[k].detach().clone().requires_grad_(True) for k in names}
            old_dist = old_distribution(self.policy, old_params, valid_episodes, per_task=True)
            kl = kl_of(self.policy, phi, valid_episodes, old_dist, per_task=True)
            kl_grads = torch.autograd.grad(kl, [phi[k] for k in names], create_graph=True)
        leaves_c, leaves_p = [copies[k] for k in names], [phi[k] for k in names]

        def hvp_inner(vs: list[torch.Tensor]) -> list[torch.Tensor]:
            return list(torch.autograd.grad(inner_grads, leaves_c, grad_outputs=vs, retain_graph=True))

        def product(v: torch.Tensor) -> torch.Tensor:
            vs = [t.unsqueeze(0).expand(n, *t.shape) for t in unflatten(v, params).values()]
            u = [a - alpha * h for a, h in zip(vs, hvp_inner(vs), strict=True)]  # J_i v
            fu = list(torch.autograd.grad(kl_grads, leaves_p, grad_outputs=u, retain_graph=True))  # F_i u_i / n
            w = [a - alpha * h for a, h in zip(fu, hvp_inner(fu), strict=True)]  # J_i^T (F_i u_i) / n
            return flatten([t.sum(0) for t in w]).detach()

        return product

    def _exact_fisher(self, n_tasks: int, n_episodes: int) -> bool:
        subsampled = 0 < self.fisher_tasks < n_tasks or 0 < self.fisher_episodes < n_episodes
        return self.fisher == "meta" and not subsampled

    def step(self, train_episodes: TrainEpisodes, valid_episodes: Episodes) -> dict[str, float]:
        """One meta-update of the policy; returns metrics.

        ``train_episodes`` as in :meth:`adapt` (a sequence must have ``inner_steps``
        batches); ``valid_episodes`` stacked ``[N, T, B, ...]``, sampled by the params
        :meth:`adapt` returns for ``train_episodes`` at the current theta, with their
        ``log_probs``. The policy's parameters are overwritten (in place, once) only if
        the line search accepts.

        Metrics: ``surrogate_before``/``surrogate_after`` (post-update surrogate loss, lower
        is better), ``kl``, ``ls_steps``, ``accepted``, ``grad_norm``, ``step_norm`` (see
        :func:`metarl.trpo.trust_region_step`), ``inner_loss`` (REINFORCE loss of theta on
        the first train batch), ``entropy`` (of the post-update policies on the valid
        states) and ``logp_gap``: the largest |log pi_theta'(a|s) - stored log_prob| over
        live valid steps; ~0 when the valid episodes were sampled by :meth:`adapt`'s
        params, large when they were not (then the surrogate and KL disagree about
        which policy is "old").
        """
        if not isinstance(train_episodes, Episodes) and len(train_episodes) != self.inner_steps:
            raise ValueError(
                f"MAMLTRPO.step: got {len(train_episodes)} train batches for inner_steps={self.inner_steps}"
            )
        data = self._inner_data(train_episodes)
        n_tasks = data.batches[0][1].shape[0]
        if valid_episodes.masks.dim() != 3 or valid_episodes.masks.shape[0] != n_tasks:
            raise ValueError(
                f"MAMLTRPO.step: valid episodes must be stacked [N={n_tasks}, T, B, ...]; "
                f"masks have shape {tuple(valid_episodes.masks.shape)}"
            )
        live_params = params_of(self.policy)
        theta0 = detach_params(live_params)
        valid_advantages = self.advantages(valid_episodes)
        with torch.no_grad():
            first_fields, first_advantages = data.batches[0]
            inner_loss = reinforce_loss(self.policy, theta0, Episodes(*first_fields), first_advantages)

        # pi_old (the post-update policies at theta_0) and the diagnostics come from the
        # objective's first call, trust_region_step's gradient pass at theta_0
        objective = self._objective(data, valid_episodes, valid_advantages)

        def fisher_kl(params: Params) -> torch.Tensor:
            assert objective.old_params is not None  # the gradient pass ran first
            kl = self._fisher_kl(data, valid_episodes, valid_advantages, objective.old_params)
            return kl(params)

        def fisher_product(params: Params) -> Callable[[torch.Tensor], torch.Tensor]:
            assert objective.old_params is not None
            sub_data, sub_valid, _, sub_old = self._fisher_subset(
                data, valid_episodes, valid_advantages, objective.old_params
            )
            return self._meta_fisher_product(sub_data, sub_valid, sub_old, params)

        exact = self._exact_fisher(n_tasks, valid_episodes.masks.shape[-1])
        factored = self._factored(data)
        new_params, metrics = trust_region_step(
            objective,
            theta0,
            fisher_kl=None if exact or factored else fisher_kl,
            fisher_product=fisher_product if factored else None,
            max_kl=self.max_kl,
            cg_iters=self.cg_iters,
            cg_damping=self.cg_damping,
            ls_ratio=self.ls_ratio,
            ls_max_steps=self.ls_max_steps,
            ls_rescale=self.ls_rescale,
        )
        if metrics["accepted"]:
            with torch.no_grad():
                for name, p in live_params.items():
                    p.copy_(new_params[name])
        metrics.update(inner_loss=float(inner_loss), entropy=objective.entropy, logp_gap=objective.logp_gap)
        return metrics


class _MetaObjective:
    """``params -> (surrogate, mean KL)`` of MAML-TRPO over all tasks, ``task_chunk`` tasks per
    vmap call (each chunk's mean weighted by its share of tasks: the same numbers as one call).

    The KL's fixed side pi_old is the post-update policies at theta_0, which sampled the
    valid episodes. Given ``old_params`` (their parameters), it is computed up front.
    Otherwise the first call, which must be at theta_0 (trust_region_step's gradient pass
    is), takes it from its own forward pass, detached: KL(pi_old || pi) then has value and
    gradient 0 and the Fisher as Hessian there, as with ``old_params``, and no extra
    adaptation or forward pass is spent on pi_old. That call also records
    ``old_params`` (detached, ``[N, ...]``), ``entropy`` (mean entropy of pi_old on the
    valid states) and ``logp_gap`` (see :meth:`MAMLTRPO.step`).
    """

    def __init__(
        self,
        algo: MAMLTRPO,
        data: _InnerData,
        valid_episodes: Episodes,
        valid_advantages: torch.Tensor,
        old_params: Params | None = None,
    ) -> None:
        self.algo = algo
        n = valid_episodes.masks.shape[0]
        chunk = algo.task_chunk or n
        self.parts: list[tuple[_InnerData, Episodes, torch.Tensor, float]] = []
        self.old_dists: list[Distribution | None] = []
        for start in range(0, n, chunk):
            index = slice(start, min(n, start + chunk))
            sub_data, sub_valid, sub_adv, sub_old = algo._subset(
                data, valid_episodes, valid_advantages, old_params or {}, index
            )
            self.parts.append((sub_data, sub_valid, sub_adv, (index.stop - index.start) / n))
            self.old_dists.append(
                None if old_params is None else old_distribution(algo.policy, sub_old, sub_valid, per_task=True)
            )
        self.old_params: Params | None = detach_params(old_params) if old_params is not None else None
        self.entropy = float("nan")
        self.logp_gap = float("nan")

    def __call__(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        policy = self.algo.policy
        first = self.old_params is None
        loss: Any = 0.0
        kl: Any = 0.0
        fasts, ent, gap = [], 0.0, 0.0
        for i, (sub_data, sub_valid, sub_adv, weight) in enumerate(self.parts):
            fast = self.algo._adapt(sub_data, params)
            dist, logp = policy_log_prob(policy, fast, sub_valid, per_task=True)
            old_dist = self.old_dists[i]
            if old_dist is None:
                old_dist = self.old_dists[i] = detach_distribution(dist)
                with torch.no_grad():
                    live = sub_valid.masks > 0
                    fasts.append(detach_params(fast))
                    ent += weight * float(masked_mean(old_dist.entropy(), sub_valid.masks))
                    gap = max(gap, float(torch.where(live, (logp - sub_valid.log_probs).abs(), 0.0).max()))
            part_loss, part_kl = surrogate_and_kl_of(dist, logp, sub_valid, sub_adv, old_dist)
            loss, kl = loss + weight * part_loss, kl + weight * part_kl
        if first:
            self.old_params = {k: torch.cat([f[k] for f in fasts]) for k in fasts[0]}
            self.entropy, self.logp_gap = ent, gap
        return loss, kl
