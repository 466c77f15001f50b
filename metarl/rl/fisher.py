"""Fisher-vector products for the MAML-TRPO meta-step, as strategies chosen once from the config.

The TRPO step preconditions the meta-gradient with F, the Hessian at theta_0 of the mean KL
through the adaptation (:mod:`metarl.rl.objective`). A strategy is called once per meta-step
as ``strategy(problem, params, value) -> (v -> F v)`` with ``params`` theta_0 (leaves with
``requires_grad``) and ``value`` the objective's gradient pass there (its KL's graph, and the
post-update params theta'_i(theta_0), which define pi_old). Products are undamped and detached.

- :func:`exact_fisher`: double backprop of that KL (Finn et al.'s update).
- :func:`factored_fisher`: the same matrix as ``mean_i J_i^T F_i J_i``, cheaper (one inner step
  with a fixed rate, an MLP policy; exact).
- :func:`post_update_fisher`: J taken as I, the post-update policies' own Fisher (approximate).
- :class:`Subsampled`: any of them on a random subset of tasks and/or valid episodes (rllab's
  ``subsample_factor``; approximate). The line search always checks the exact KL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from metarl.maml import Params
from metarl.rl.adapt import InnerLoop, per_task_inner_loss
from metarl.rl.losses import kl_of, old_distribution
from metarl.rl.objective import MetaBatch, meta_objective
from metarl.trpo import FisherProduct, fisher_vector_product, flatten, unflatten


class MetaProblem(NamedTuple):
    """What a meta-step's Fisher needs besides theta_0: the policy, the data and the inner loop."""

    policy: nn.Module
    batch: MetaBatch
    inner: InnerLoop
    chunk: int = 0


class FisherInput(NamedTuple):
    """The gradient pass at theta_0: the KL there (``None`` when the problem is a subsample of the
    one it was computed on) and the post-update params theta'_i(theta_0), ``[N, *shape]``."""

    kl: torch.Tensor | None
    post_params: Params


MetaFisher = Callable[[MetaProblem, Params, FisherInput], FisherProduct]


def exact_fisher(problem: MetaProblem, params: Params, at: FisherInput) -> FisherProduct:
    """Hessian of the mean KL through the adaptation by double backprop (Pearlmutter 1994)."""
    kl = at.kl
    if kl is None:
        kl = meta_objective(problem.policy, params, problem.batch, problem.inner, chunk=problem.chunk).kl
    return fisher_vector_product(kl, params, 0.0)


def post_update_fisher(problem: MetaProblem, params: Params, at: FisherInput) -> FisherProduct:
    """The mean Fisher of the post-update policies on their valid states: theta'_i(theta) taken as
    ``theta'_i(theta_0) + (theta - theta_0)`` (J = I). A product costs a double backprop through
    the policy alone. Approximate; not for learned inner rates (their Fisher would be 0)."""
    valid = problem.batch.valid.episodes
    old_dist = old_distribution(problem.policy, at.post_params, valid, per_task=True)
    fast = {k: at.post_params[k] + (v - v.detach()) for k, v in params.items()}
    return fisher_vector_product(kl_of(problem.policy, fast, valid, old_dist, per_task=True), params, 0.0)


def factored_fisher(problem: MetaProblem, params: Params, at: FisherInput) -> FisherProduct:
    """``v -> F v`` for the meta-Fisher at theta_0 = ``params``, factored as ``mean_i J_i^T F_i J_i``.

    KL_i(theta'_i(theta)) has value and gradient 0 at theta_0 (pi_old is the post-update policy
    there), so its Hessian at theta_0 is exactly ``J_i^T F_i J_i``: F_i the Fisher of the
    post-update policy i, J_i = d theta'_i / d theta = I - alpha H_i with H_i the inner loss's
    Hessian (symmetric); the second derivative of theta'_i is multiplied by KL_i's zero gradient.
    A product is then three Hessian-vector products on graphs built once per step: H_i v (all tasks
    in one backward pass, theta expanded to per-task copies as in :func:`metarl.rl.adapt.adapt_policy`),
    F_i u_i on the valid states, H_i w_i; cheaper than double backprop through the whole
    second-order adaptation (0.15 s against 0.20 s per product on 2D navigation). Equal to
    :func:`exact_fisher` to float rounding (tested). Needs one batch, one step, a fixed rate.
    """
    policy, batch, inner = problem.policy, problem.batch, problem.inner
    if len(batch.train) != 1 or inner.steps != 1 or inner.first_order:
        raise ValueError("factored_fisher needs one second-order inner step on one batch")
    n, alpha, names = batch.n_tasks, inner.lr, list(params)
    with torch.enable_grad():
        copies = {k: params[k].detach().unsqueeze(0).expand(n, *params[k].shape).requires_grad_(True)
                  for k in names}
        inner_grads = torch.autograd.grad(per_task_inner_loss(policy, inner, copies, batch.train[0]),
                                          [copies[k] for k in names], create_graph=True)
        phi = {k: at.post_params[k].detach().clone().requires_grad_(True) for k in names}
        old_dist = old_distribution(policy, at.post_params, batch.valid.episodes, per_task=True)
        kl = kl_of(policy, phi, batch.valid.episodes, old_dist, per_task=True)
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


@dataclass
class Subsampled:
    """``base`` on ``tasks`` random tasks (0: all) and of each ``episodes`` random valid episodes
    (0: all), drawn from ``generator`` at every step. On the 20-task 2D-navigation batch, 5 of 20
    episodes of every task cost what all episodes of 5 tasks cost and cover every task's states."""

    base: MetaFisher
    tasks: int = 0
    episodes: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __call__(self, problem: MetaProblem, params: Params, at: FisherInput) -> FisherProduct:
        batch, post = problem.batch, at.post_params
        n, b = batch.n_tasks, batch.valid.advantages.shape[-1]
        if 0 < self.tasks < n:
            idx = torch.randperm(n, generator=self.generator)[: self.tasks].sort().values
            batch, post = batch.select(idx), {k: v[idx] for k, v in post.items()}
        if 0 < self.episodes < b:  # the same valid episodes of every task (they are exchangeable)
            episodes = torch.randperm(b, generator=self.generator)[: self.episodes].sort().values
            batch = batch.select_valid_episodes(episodes)
        return self.base(problem._replace(batch=batch), params, FisherInput(None, post))


def make_fisher(kind: str, *, factorable: bool, learned_lr: bool = False, tasks: int = 0, episodes: int = 0,
                seed: int = 0) -> MetaFisher:
    """The strategy for ``trpo.fisher`` (``meta`` or ``post``) with ``trpo.fisher_tasks`` /
    ``trpo.fisher_episodes``: ``meta`` is factored where ``factorable`` (one second-order step with
    a fixed rate on an MLP policy: exact and faster), else double backprop. ``learned_lr``: the
    policy carries learned inner rates (Meta-SGD), which only the meta-Fisher preconditions."""
    if kind not in FISHERS:
        raise ValueError(f"trpo.fisher: got {kind!r}; expected one of {sorted(FISHERS)}")
    if tasks < 0 or episodes < 0:
        raise ValueError(f"trpo.fisher_tasks={tasks} and fisher_episodes={episodes} must be >= 0 (0: all)")
    choice = FISHERS[kind]
    if learned_lr and not choice.learned_lr:
        raise ValueError(f"trpo.fisher: {kind!r} cannot precondition learned inner rates (inner.learn_lr: their "
                         "Fisher there is 0); use trpo.fisher: meta")
    base = choice.factored if factorable and choice.factored is not None else choice.general
    if tasks or episodes:
        return Subsampled(base, tasks, episodes, torch.Generator().manual_seed(int(seed)))
    return base


class FisherChoice(NamedTuple):
    """A ``trpo.fisher`` choice: its general strategy, a faster one where factorable (or None), and
    whether it preconditions learned inner rates."""

    general: MetaFisher
    factored: MetaFisher | None
    learned_lr: bool


#: ``trpo.fisher`` choices: the KL through the adaptation (exact) or the post-update policies' own.
FISHERS: dict[str, FisherChoice] = {
    "meta": FisherChoice(exact_fisher, factored_fisher, learned_lr=True),
    "post": FisherChoice(post_update_fisher, None, learned_lr=False),
}
