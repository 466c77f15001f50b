"""Trust-region machinery on parameter dictionaries (TRPO, Schulman et al. 2015, arXiv 1502.05477).

TRPO solves, around the current parameters theta_0 (eq. 14 of the paper),

    minimise L(theta)   subject to   KL_mean(theta_0 || theta) <= delta,

with L the surrogate loss (lower is better) and KL_mean the KL divergence between the
policy that collected the data and the candidate one, averaged over visited states. It
approximates L linearly (gradient g) and KL quadratically (its Hessian at theta_0, the
Fisher information F, appendix C), which gives the natural-gradient direction s = F^-1 g
(conjugate gradient on Fisher-vector products, never forming F) scaled so that the
quadratic model of the KL equals delta, s * sqrt(2 delta / s^T F s); a backtracking line
search then enforces the real constraint and a real improvement of L.

Everything here takes parameters as ``name -> tensor`` dicts and returns new dicts: no
module is written. The caller writes the accepted parameters into its module once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from metarl.maml import Params

#: ``params -> (surrogate loss, mean KL)``, both scalars, differentiable in ``params``.
Objective = Callable[[Params], tuple[torch.Tensor, torch.Tensor]]


def flatten(tensors: Iterable[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors (or a Params dict's values, in its order) into one vector ``[P]``."""
    if isinstance(tensors, Mapping):
        tensors = tensors.values()
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """The inverse of :func:`flatten`: split ``vec [P]`` into tensors shaped as ``like``'s values."""
    total = sum(t.numel() for t in like.values())
    if vec.dim() != 1 or vec.numel() != total:
        raise ValueError(f"unflatten: vector of shape {tuple(vec.shape)} does not hold {total} parameters")
    out: Params = {}
    offset = 0
    for name, t in like.items():
        out[name] = vec[offset : offset + t.numel()].view_as(t)
        offset += t.numel()
    return out


def conjugate_gradient(
    Avp: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    *,
    return_residual: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive-definite A given only ``v -> A v``.

    Hestenes & Stiefel 1952; Nocedal & Wright, *Numerical Optimization*, alg. 5.2. Starts
    from x = 0 and stops after ``iters`` iterations or once the squared residual norm
    ``r^T r`` drops below ``residual_tol``. In exact arithmetic it is exact after P
    iterations for ``b`` of size P. Shapes: ``b [P]``, returns ``[P]``; with
    ``return_residual`` also the residual ``r = b - A x`` that CG tracks, so that
    ``x^T A x = x^T (b - r)`` costs no further product with A.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr.item() < residual_tol:
            break
        Ap = Avp(p)
        alpha = rr / torch.dot(p, Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return (x, r) if return_residual else x


def fisher_vector_product(
    kl: torch.Tensor, params: Mapping[str, torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H + damping I) v`` with H the Hessian of ``kl`` wrt ``params``, by double backprop.

    ``kl`` is the mean KL(pi_old || pi_params) computed from the tensors in ``params``
    (leaves with ``requires_grad``), evaluated where pi_params = pi_old: there its gradient
    vanishes and its Hessian is the (average) Fisher information matrix (Schulman et al.
    2015, appendix C.1). The first derivative is taken once with ``create_graph=True``;
    each product then costs one backward pass through that gradient's graph (Pearlmutter
    1994). ``damping`` (Tikhonov) keeps the system positive definite for conjugate
    gradient. Vectors are flat, ``[P]``, in the order of ``params``; results are detached.
    """
    leaves = list(params.values())
    grads = torch.autograd.grad(kl, leaves, create_graph=True, allow_unused=True, materialize_grads=True)
    flat_grad = flatten(grads)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        if not flat_grad.requires_grad:  # the KL is (at most) linear in params: H = 0
            return damping * v
        hv = torch.autograd.grad(
            torch.dot(flat_grad, v), leaves, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return flatten(hv).detach() + damping * v

    return fvp


@dataclass(frozen=True)
class TrustRegion:
    """Settings of :func:`trust_region_update`: delta, conjugate gradient and the line search."""

    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_ratio: float = 0.8
    ls_max_steps: int = 15
    ls_rescale: bool = False

    def __post_init__(self) -> None:
        if (self.max_kl <= 0 or self.cg_iters < 1 or self.cg_damping < 0 or not 0 < self.ls_ratio < 1
                or self.ls_max_steps < 1):
            raise ValueError(
                f"TrustRegion: need max_kl > 0 ({self.max_kl}), cg_iters >= 1 ({self.cg_iters}), cg_damping >= 0 "
                f"({self.cg_damping}), 0 < ls_ratio < 1 ({self.ls_ratio}), ls_max_steps >= 1 ({self.ls_max_steps})"
            )


#: ``v -> F v`` for flat vectors ``[P]``: a Fisher-vector product (undamped, detached).
FisherProduct = Callable[[torch.Tensor], torch.Tensor]
#: ``(params, kl) -> FisherProduct`` at ``params`` (leaves with ``requires_grad``), given the KL that
#: ``objective`` computed there: how a caller chooses its Fisher (:mod:`metarl.rl.fisher`).
FisherStrategy = Callable[[Params, torch.Tensor], FisherProduct]


def exact_fisher(params: Params, kl: torch.Tensor) -> FisherProduct:
    """The exact Fisher of ``kl`` at ``params``: its Hessian by double backprop (the default)."""
    return fisher_vector_product(kl, params, 0.0)


def trust_region_step(
    objective: Objective,
    params: Mapping[str, torch.Tensor],
    *,
    max_kl: float,
    fisher: FisherStrategy = exact_fisher,
    **kwargs: Any,
) -> tuple[Params, dict[str, float]]:
    """One TRPO update of ``params``: natural-gradient direction, KL-scaled step, line search.

    ``objective(params) -> (loss, kl)``: the surrogate loss to *minimise* (e.g.
    ``-mean(ratio * advantage)``) and the mean KL(pi_old || pi_params), pi_old the
    data-collecting policy, so ``kl`` is 0 at ``params``; one call lets them share work. It is
    called once with gradients at ``params`` and then for each line-search candidate under
    ``no_grad``. ``fisher`` turns that first call's KL into Fisher-vector products (default: its
    exact Hessian). The other keywords are :func:`trust_region_update`'s.
    """
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss, kl = objective(leaves)
    return trust_region_update(loss, leaves, lambda: fisher(leaves, kl), objective, max_kl=max_kl, **kwargs)


def trust_region_update(
    loss: torch.Tensor,
    params: Params,
    fisher_product: Callable[[], FisherProduct],
    objective: Objective,
    *,
    max_kl: float,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    ls_ratio: float = 0.8,
    ls_max_steps: int = 15,
    ls_rescale: bool = False,
) -> tuple[Params, dict[str, float]]:
    """The TRPO update from the loss at theta_0 = ``params`` (leaves, with its graph).

    Args:
        loss: the surrogate loss at ``params``, differentiable in them.
        params: theta_0, leaves with ``requires_grad``; not modified.
        fisher_product: builds ``v -> F v`` (undamped) at ``params``; called only when the
            gradient is nonzero. Any approximation of F (subsampled, post-update) changes the
            direction and scale only: the line search checks the exact KL of ``objective``.
        objective: ``params -> (loss, kl)`` for the line-search candidates (``no_grad``).
        max_kl: delta, the trust-region radius on the mean KL.
        cg_iters, cg_damping: conjugate-gradient iterations and the damping added to F.
        ls_ratio, ls_max_steps: backtracking factor and number of candidates
            theta_0 - ls_ratio^k * step, k = 0 .. ls_max_steps - 1 (see ``ls_rescale``).
        ls_rescale: when a candidate breaks the KL bound, shrink the step by
            ``min(ls_ratio, 0.95 * sqrt(max_kl / kl))`` instead of ``ls_ratio``: the
            quadratic model of the KL refitted on the measured value. With an approximate
            Fisher the first candidate can overshoot the bound many times over, and plain
            backtracking then spends an objective evaluation per factor 0.8; the acceptance
            test is unchanged. ``False``: plain backtracking (the paper's).

    The step is s * sqrt(2 delta / s^T (F + damping I) s) with s = CG(F + damping I, g),
    g = grad loss(theta_0) (Schulman et al. 2015, appendix C). The first candidate whose
    loss is finite and strictly lower than at theta_0 and whose mean KL is finite and
    <= ``max_kl`` is accepted; if none is (or g = 0), theta_0 is returned.

    Returns:
        ``(new_params, metrics)``: ``new_params`` detached new tensors (never views of
        ``params``, so writing them into a module is safe), with the shapes of ``params``;
        metrics ``surrogate_before`` / ``surrogate_after`` (the loss at theta_0 and at the
        returned params), ``kl`` (mean KL of the returned params; 0 when rejected),
        ``ls_steps`` (backtracking steps before acceptance, 0 = full step;
        ``ls_max_steps`` when rejected), ``accepted`` (1.0 or 0.0), ``grad_norm`` (||g||)
        and ``step_norm`` (Euclidean norm of the accepted parameter change).
    """
    if max_kl <= 0:
        raise ValueError(f"trust_region_step: max_kl={max_kl} must be > 0")
    if not 0 < ls_ratio < 1:
        raise ValueError(f"trust_region_step: ls_ratio={ls_ratio} must be in (0, 1)")
    if ls_max_steps < 1:
        raise ValueError(f"trust_region_step: ls_max_steps={ls_max_steps} must be >= 1")

    full_step, metrics = natural_step(loss, params, fisher_product, max_kl=max_kl, cg_iters=cg_iters,
                                      cg_damping=cg_damping, ls_max_steps=ls_max_steps)
    old = {k: v.detach() for k, v in params.items()}
    if full_step is None:
        return {k: v.clone() for k, v in old.items()}, metrics
    return line_search(objective, old, full_step, metrics["surrogate_before"], metrics, max_kl=max_kl,
                       ls_ratio=ls_ratio, ls_max_steps=ls_max_steps, ls_rescale=ls_rescale)


def natural_step(
    loss: torch.Tensor,
    params: Params,
    fisher_product: Callable[[], FisherProduct],
    *,
    max_kl: float,
    cg_iters: int,
    cg_damping: float,
    ls_max_steps: int,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The full TRPO step ``s * sqrt(2 delta / s^T (F + damping I) s)``, s = CG(F + damping I, g), and
    the step's initial metrics (as if rejected); ``None`` for g = 0 (nothing to do)."""
    grads = torch.autograd.grad(
        loss, list(params.values()), retain_graph=True, allow_unused=True, materialize_grads=True
    )
    g = flatten(grads).detach()
    loss_before = float(loss.detach())
    metrics: dict[str, float] = {
        "surrogate_before": loss_before,
        "surrogate_after": loss_before,
        "kl": 0.0,
        "ls_steps": float(ls_max_steps),
        "accepted": 0.0,
        "grad_norm": float(g.norm()),
        "step_norm": 0.0,
    }
    if not math.isfinite(loss_before) or not math.isfinite(metrics["grad_norm"]):
        raise FloatingPointError(
            f"trust_region_step: non-finite surrogate ({loss_before}) or gradient norm "
            f"({metrics['grad_norm']})"
        )
    if metrics["grad_norm"] == 0.0:
        return None, metrics
    fvp = _damped(fisher_product(), cg_damping)
    s, residual = conjugate_gradient(fvp, g, iters=cg_iters, return_residual=True)
    sFs = float(torch.dot(s, g - residual))  # = s^T (F + damping I) s, without an 11th product
    if not math.isfinite(sFs) or sFs <= 0.0:
        raise FloatingPointError(f"trust_region_step: s^T F s = {sFs}; the damped Fisher must be positive")
    return math.sqrt(2.0 * max_kl / sFs) * s, metrics


def _damped(product: FisherProduct, damping: float) -> FisherProduct:
    """``v -> (F + damping I) v``: Tikhonov damping keeps F positive definite for conjugate gradient."""
    return lambda v: product(v) + damping * v


def line_search(
    objective: Objective,
    old: Params,
    full_step: torch.Tensor,
    loss_before: float,
    metrics: dict[str, float],
    *,
    max_kl: float,
    ls_ratio: float,
    ls_max_steps: int,
    ls_rescale: bool,
) -> tuple[Params, dict[str, float]]:
    """Backtracking from ``old - full_step`` (see :func:`trust_region_update`); updates ``metrics``."""
    theta0 = flatten(old)
    scale = 1.0
    with torch.no_grad():
        for k in range(ls_max_steps):
            delta = scale * full_step
            candidate = unflatten(theta0 - delta, old)
            new_loss, new_kl = objective(candidate)
            new_loss_f, new_kl_f = float(new_loss), float(new_kl)
            if (
                math.isfinite(new_loss_f)
                and math.isfinite(new_kl_f)
                and new_loss_f < loss_before
                and new_kl_f <= max_kl
            ):
                metrics.update(
                    surrogate_after=new_loss_f,
                    kl=new_kl_f,
                    ls_steps=float(k),
                    accepted=1.0,
                    step_norm=float(delta.norm()),
                )
                return candidate, metrics
            if ls_rescale and math.isfinite(new_kl_f) and new_kl_f > max_kl:
                scale *= min(ls_ratio, 0.95 * math.sqrt(max_kl / new_kl_f))
            else:
                scale *= ls_ratio
    return {k: v.clone() for k, v in old.items()}, metrics
