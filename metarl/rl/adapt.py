"""The one RL inner loop: a pure function from (theta, pre-update episodes) to theta'_i for every task.

Finn et al. 2017 (arXiv 1703.03400), eq. (1) with the policy-gradient loss of eq. (4):
``theta'_i = theta - alpha * grad_theta L_i(theta; D_i)`` for each task i of a meta-batch.
Training (every meta-algorithm), validation, ``metarl evaluate`` and ``metarl.load(run).adapt``
all adapt through :func:`adapt_policy`; nothing else in metarl writes an RL inner step.

Several steps: ``batches`` holds one :class:`InnerBatch` per resampling, and each gets
``inner.steps`` gradient steps in order (the paper's multi-step RL evaluation samples a new
batch with the params after each step, at the step size lr, then lr / 2 for each further step:
``lr_after_first=0.5``; see :func:`step_scale`).

Two implementations, the same numbers (tested against each other and against a per-task loop
of :func:`metarl.maml.adapt`): policies with a ``stacked`` forward (the MLP policies) expand
theta to N per-task views and take every task's gradient in one backward pass (batched
matmuls on plain autograd); other policies go through ``torch.func.vmap`` over tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol

import torch
from torch import nn

from metarl.maml import LearningRate, Params, adapt, sgd_step
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.episodes import Episodes
from metarl.rl.losses import reinforce_loss, surrogate_loss
from metarl.rl.policies import LR_PREFIX, lr_key


class InnerLoss(Protocol):
    """``(policy, params, episodes, advantages, *, per_task) -> scalar`` (a mean over tasks)."""

    def __call__(
        self, policy: nn.Module, params: Mapping[str, torch.Tensor], episodes: Episodes,
        advantages: torch.Tensor, *, per_task: bool = False,
    ) -> torch.Tensor: ...


#: The inner losses by name. ``reinforce``: ``-mean log pi(a|s) A`` (the paper's). ``lvc``:
#: ``-mean pi(a|s) / pi_s(a|s) A`` with pi_s the sampling policy (the episodes' log-probs), the
#: low-variance curvature objective of ProMP (Rothfuss et al. 2019, arXiv 1810.06784): the same
#: value gradient at the sampling params, and a Hessian that keeps the curvature the pre-update
#: sampling distribution contributes, so the meta-gradient through the adaptation differs.
INNER_LOSSES: dict[str, InnerLoss] = {"reinforce": reinforce_loss, "lvc": surrogate_loss}


class InnerBatch(NamedTuple):
    """Pre-update episodes of N tasks, stacked ``[N, T, B, ...]``, and their advantages ``[N, T, B]``."""

    episodes: Episodes
    advantages: torch.Tensor

    def select(self, index: slice | torch.Tensor) -> InnerBatch:
        """Tasks ``index`` (a slice gives views, an index tensor copies)."""
        return InnerBatch(episodes_at(self.episodes, index), self.advantages[index])


def episodes_at(episodes: Episodes, index: slice | torch.Tensor | tuple) -> Episodes:
    """Every field of ``episodes`` indexed by ``index`` (e.g. tasks ``[i]`` or episodes ``[:, :, j]``)."""
    return Episodes(*(getattr(episodes, f.name)[index] for f in fields(Episodes)))


@dataclass(frozen=True)
class InnerLoop:
    """How a policy adapts: step size alpha, gradient steps per batch, the loss, and its order.

    ``lr`` is alpha (0.1 in Finn et al. 2017 sec. 5.3); a policy holding learned rates
    (``inner_lr.*`` params, Meta-SGD) uses those instead. ``first_order`` drops the second-order
    terms of the meta-gradient (FOMAML).
    """

    lr: float = 0.1
    steps: int = 1
    estimator: str = "reinforce"
    first_order: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"InnerLoop: steps={self.steps} must be >= 0")
        if self.estimator not in INNER_LOSSES:
            raise ValueError(f"InnerLoop: estimator={self.estimator!r}; expected one of {sorted(INNER_LOSSES)}")

    @property
    def loss(self) -> InnerLoss:
        return INNER_LOSSES[self.estimator]


def split_lr(params: Mapping[str, torch.Tensor], lr: float) -> tuple[Params, LearningRate]:
    """The policy's parameters and the inner step size: ``lr``, or the learned per-parameter
    rates (Meta-SGD, Li et al. 2017) when ``params`` hold ``inner_lr.*`` entries."""
    if not any(k.startswith(LR_PREFIX) for k in params):
        return dict(params), lr
    policy_params = {k: v for k, v in params.items() if not k.startswith(LR_PREFIX)}
    return policy_params, {k: params[LR_PREFIX + lr_key(k)] for k in policy_params}


def _scaled(lr: LearningRate, factor: float) -> LearningRate:
    return {k: v * factor for k, v in lr.items()} if isinstance(lr, Mapping) else lr * factor


def step_scale(j: int, lr_decay: float = 1.0, lr_after_first: float = 1.0) -> float:
    """The step size's factor on batch ``j`` (0-based): ``lr_decay**j``, times ``lr_after_first``
    for every batch after the first. Finn et al.'s test scripts take lr, then lr / 2 for each
    further step (``lr_after_first=0.5``); ``lr_decay=0.5`` halves it again at every step."""
    return lr_decay**j * (lr_after_first if j else 1.0)


def per_task_inner_loss(
    policy: nn.Module, inner: InnerLoop, params: Params, batch: InnerBatch
) -> torch.Tensor:
    """The sum over tasks of each task's inner loss, task i with ``params[k][i]``: its gradient in
    the stacked params ``[N, *shape]`` is every task's inner gradient at once."""
    n = batch.advantages.shape[0]
    return n * inner.loss(policy, params, batch.episodes, batch.advantages, per_task=True)


def adapt_policy(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    batches: Sequence[InnerBatch],
    inner: InnerLoop,
    *,
    lr_decay: float = 1.0,
    lr_after_first: float = 1.0,
) -> Params:
    """theta'_i for every task, stacked ``[N, *shape]``: ``inner.steps`` steps on each batch in turn.

    ``params``: theta (shared by the tasks), possibly with learned rates ``inner_lr.*``; the
    result holds the policy's parameters only. Batch j's step size is scaled by
    :func:`step_scale` (``lr_decay``, ``lr_after_first``; both 1: the training step throughout).
    With a differentiable theta (``requires_grad``, grad mode on) the result
    is differentiable in it (to second order unless ``inner.first_order``); otherwise it is
    detached and no graph is kept (sampling, line searches, evaluation).
    """
    if not batches:
        raise ValueError("adapt_policy: no pre-update batch to adapt on")
    n = batches[0].advantages.shape[0]
    if any(b.episodes.masks.dim() != 3 or b.advantages.shape[0] != n for b in batches):
        raise ValueError("adapt_policy expects stacked episodes [N, T, B, ...] with the same N in every batch "
                         "(use Episodes.stack)")
    theta, lr = split_lr(params, inner.lr)
    scales = [step_scale(j, lr_decay, lr_after_first) for j in range(len(batches))]
    if getattr(policy, "stacked", None) is not None:
        return _adapt_stacked(policy, theta, batches, inner, lr, scales)
    return _adapt_vmap(policy, theta, batches, inner, lr, scales)


def _adapt_stacked(
    policy: nn.Module, theta: Params, batches: Sequence[InnerBatch], inner: InnerLoop, lr: LearningRate,
    scales: Sequence[float],
) -> Params:
    """theta expanded to N per-task views ``[N, *shape]`` and the inner losses summed over tasks:
    task i's loss depends on view i only, so one backward pass gives every task's gradient, and
    with ``create_graph`` the result stays differentiable in theta through the expansion."""
    n = batches[0].advantages.shape[0]
    lrs = list(lr.values()) if isinstance(lr, Mapping) else []
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in [*theta.values(), *lrs])
    create_graph = differentiable and not inner.first_order

    def expand(v: torch.Tensor) -> torch.Tensor:
        v = v.unsqueeze(0).expand(n, *v.shape)
        return v if differentiable else v.detach().requires_grad_(True)

    with torch.enable_grad():
        fast = {k: expand(v) for k, v in theta.items()}
        for j, batch in enumerate(batches):
            step_lr = _scaled(lr, scales[j])
            for _ in range(inner.steps):
                loss = per_task_inner_loss(policy, inner, fast, batch)
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
                if not create_graph:
                    grads = tuple(g.detach() for g in grads)
                fast = sgd_step(fast, dict(zip(fast, grads, strict=True)), step_lr)
                if not differentiable:
                    fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
    return fast if differentiable else {k: v.detach() for k, v in fast.items()}


def _adapt_vmap(
    policy: nn.Module, theta: Params, batches: Sequence[InnerBatch], inner: InnerLoop, lr: LearningRate,
    scales: Sequence[float],
) -> Params:
    """:func:`metarl.maml.adapt` per task under ``torch.func.vmap`` (any policy module)."""
    data = tuple((tuple(getattr(b.episodes, f.name) for f in fields(Episodes)), b.advantages) for b in batches)

    def loss(params: Params, task: tuple) -> torch.Tensor:
        episode_fields, advantages = task
        return inner.loss(policy, params, Episodes(*episode_fields), advantages)

    def one_task(per_batch: tuple) -> Params:
        fast = dict(theta)
        for j, task in enumerate(per_batch):
            fast = adapt(loss, fast, task, lr=_scaled(lr, scales[j]), steps=inner.steps,
                         first_order=inner.first_order)
        return fast

    lrs = list(lr.values()) if isinstance(lr, Mapping) else []
    if torch.is_grad_enabled() and any(t.requires_grad for t in [*theta.values(), *lrs]):
        return torch.func.vmap(one_task, randomness="different")(data)
    theta = {k: v.detach() for k, v in theta.items()}
    lr = {k: v.detach() for k, v in lr.items()} if isinstance(lr, Mapping) else lr
    return {k: v.detach() for k, v in torch.func.vmap(one_task, randomness="different")(data).items()}


def adapt_on_episodes(
    policy: nn.Module,
    params: Mapping[str, torch.Tensor],
    train: Sequence[Episodes],
    inner: InnerLoop,
    advantages: AdvantageEstimator,
    *,
    lr_decay: float = 1.0,
    lr_after_first: float = 1.0,
) -> Params:
    """:func:`adapt_policy` on stacked episodes ``[N, T, B, ...]``, their advantages estimated here:
    the adaptation between a meta-iteration's rollouts and at evaluation."""
    return adapt_policy(policy, params, [InnerBatch(e, advantages(e)) for e in train], inner, lr_decay=lr_decay,
                        lr_after_first=lr_after_first)
