"""Policies: plain ``nn.Module``s whose ``forward(obs)`` returns a ``torch.distributions`` object.

Two families, as in Finn et al. 2017 sec. 5.3 and Duan et al. 2016 (arXiv 1604.06778):
a Gaussian MLP with a state-independent learned log-std for continuous actions, and a
categorical MLP for discrete ones. Distributions are built with ``validate_args=False``
so that they can be created inside ``torch.func`` transforms.

Meta-RL needs one policy per task after adaptation. :func:`policy_distribution` runs the
module once for all tasks with stacked parameters (``torch.func.vmap``) and returns one
distribution whose batch shape starts with the task dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from metarl.maml import functional_forward
from metarl.nets import ACTIVATIONS, mlp, stacked_mlp  # noqa: F401  (re-exported)


class GaussianMLPPolicy(nn.Module):
    """pi(a|s) = N(mu_theta(s), diag(exp(log_std))^2), log_std a learned vector.

    ``forward(obs [..., obs_dim])`` returns ``Independent(Normal)`` with batch shape ``[...]``
    and event shape ``[act_dim]``; ``log_prob`` sums over action dimensions.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
        min_log_std: float = -6.0,
    ) -> None:
        super().__init__()
        self.mu = mlp([obs_dim, *hidden_sizes, act_dim], activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(torch.tensor(init_std).log())))
        self.min_log_std = float(min_log_std)

    def forward(self, obs: torch.Tensor) -> Distribution:
        loc = self.mu(obs)
        scale = self.log_std.clamp(min=self.min_log_std).exp().expand_as(loc)
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def stacked(self, params: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], Distribution] | None:
        """:meth:`forward` for N stacked parameter sets (``[N, *shape]``), prepared once:
        ``obs [N, ..., obs_dim] -> distribution``, without vmap (see
        :func:`~metarl.nets.stacked_mlp`); ``None`` if ``params`` lack a stacked parameter."""
        log_std = params.get("log_std")
        mu = stacked_mlp(self.mu, params, "mu.")
        if mu is None or log_std is None or log_std.dim() != 2:
            return None
        std = log_std.clamp(min=self.min_log_std).exp()

        def forward(obs: torch.Tensor) -> Distribution:
            loc = mu(obs)
            scale = std.view(std.shape[0], *([1] * (loc.dim() - 2)), std.shape[-1]).expand_as(loc)
            return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)

        return forward


class LatentGaussianPolicy(nn.Module):
    """A Gaussian MLP policy that also draws a per-episode latent ``z ~ N(mu_z, diag(sigma_z)^2)``, its first
    "action", and conditions every later action on it: MAESN-style structured exploration (Gupta et al. 2018,
    arXiv 1802.07245), ``policy.latent_dim``.

    Why: the goal of a task is not in the observation, so per-step action noise gives every pre-update
    episode of a task much the same behaviour (on HalfCheetahVel, the same speed), and one policy-gradient
    step cannot tell apart goals beyond that behaviour. A latent held for a whole episode can make the
    episodes differ as a whole, and the inner step moves ``mu_z`` (a parameter, adapted with the rest)
    towards the latents of the episodes that did best on the task.

    It acts on :class:`metarl.envs.vector.LatentFeedback` observations ``cat(obs, z, first)``: the action
    distribution is over ``act_dim + latent_dim`` coordinates, ``N(mu_theta(obs, z), sigma)`` for the env's
    and, for the latent's, ``N(mu_z, sigma_z)`` at the first step and ``N(z, 1)`` after it, whose value the
    env ignores and whose log-prob does not depend on the parameters. So the log-prob of an episode's first
    step includes ``log q(z)``: the REINFORCE inner loss has the latent's score-function term, weighted by the
    first step's advantage, and the TRPO surrogate and KL include the latent's ratio and KL, with no other
    code. The first step's advantage is the one that carries z's effect: its baseline sees ``s_0`` (``z`` = 0),
    while the later steps' linear baseline sees ``z``, and least-squares residuals are orthogonal to it.

    ``mu_z = scale * latent_mu`` and ``log sigma_z = std_scale * latent_log_std`` (both start at 0, so
    z ~ N(0, I)). The losses are means over all steps, of which the latent term has one per episode, so a scale
    of ``sqrt(horizon * k)`` makes the inner step on that parameter ``k`` times a REINFORCE step on z at
    ``inner.lr`` (mean over episodes), and leaves the TRPO step, whose natural gradient does not depend on the
    parameterisation, as it is. The run's policy takes ``k = policy.latent_step`` for the mean and ``k = 1``
    for the log-std: with 20 episodes a larger step on the log-std moves it by noise alone (measured: the latent's
    std grew to 15-34 and the adapted policies did worse than before adapting; RESULTS).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
        scale: float = 1.0,
        std_scale: float | None = None,
        min_log_std: float = -6.0,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"LatentGaussianPolicy: latent_dim must be >= 1, got {latent_dim}")
        self.obs_dim, self.env_action_dim, self.latent_dim = int(obs_dim), int(act_dim), int(latent_dim)
        self.mu = mlp([obs_dim + latent_dim, *hidden_sizes, act_dim], activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(torch.tensor(init_std).log())))
        self.latent_mu = nn.Parameter(torch.zeros(latent_dim))
        self.latent_log_std = nn.Parameter(torch.zeros(latent_dim))
        self.scale = float(scale)
        self.std_scale = float(scale if std_scale is None else std_scale)
        self.min_log_std = float(min_log_std)

    def _distribution(self, obs: torch.Tensor, loc: torch.Tensor, log_std: torch.Tensor,
                      latent_mu: torch.Tensor, latent_log_std: torch.Tensor) -> Distribution:
        """``log_std``, ``latent_mu`` and ``latent_log_std`` broadcast against ``loc``'s leading dims."""
        z, first = obs[..., self.obs_dim:self.obs_dim + self.latent_dim], obs[..., -1:]
        scale_a = log_std.clamp(min=self.min_log_std).exp().expand_as(loc)
        loc_z = first * (self.scale * latent_mu) + (1 - first) * z
        scale_z = first * (self.std_scale * latent_log_std).clamp(min=self.min_log_std).exp() + (1 - first)
        return Independent(Normal(torch.cat([loc, loc_z], -1), torch.cat([scale_a, scale_z], -1),
                                  validate_args=False), 1, validate_args=False)

    def forward(self, obs: torch.Tensor) -> Distribution:
        loc = self.mu(obs[..., :self.obs_dim + self.latent_dim])
        return self._distribution(obs, loc, self.log_std, self.latent_mu, self.latent_log_std)

    def stacked(self, params: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], Distribution] | None:
        """:meth:`forward` for N stacked parameter sets, as :meth:`GaussianMLPPolicy.stacked`."""
        mu = stacked_mlp(self.mu, params, "mu.")
        vectors = [params.get(k) for k in ("log_std", "latent_mu", "latent_log_std")]
        if mu is None or any(v is None or v.dim() != 2 for v in vectors):
            return None

        def forward(obs: torch.Tensor) -> Distribution:
            loc = mu(obs[..., :self.obs_dim + self.latent_dim])
            views = [v.view(v.shape[0], *([1] * (loc.dim() - 2)), v.shape[-1]) for v in vectors]
            return self._distribution(obs, loc, *views)

        return forward


class CategoricalMLPPolicy(nn.Module):
    """pi(a|s) = Categorical(softmax(f_theta(s))) for discrete actions; ``forward`` returns it."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.logits = mlp([obs_dim, *hidden_sizes, num_actions], activation)

    def forward(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(obs), validate_args=False)

    def stacked(self, params: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], Distribution] | None:
        """:meth:`forward` for N stacked parameter sets, as :meth:`GaussianMLPPolicy.stacked`."""
        logits = stacked_mlp(self.logits, params, "logits.")
        return None if logits is None else lambda obs: Categorical(logits=logits(obs), validate_args=False)


#: Name prefix of learned inner learning rates held by a policy (Meta-SGD, :func:`attach_inner_lr`).
LR_PREFIX = "inner_lr."


def widened(params: Mapping[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """``params`` of a :class:`GaussianMLPPolicy` with the std times ``factor`` (``log_std + log factor``;
    shared or stacked per task): the policy that samples the pre-update episodes under ``explore_std``."""
    out = dict(params)
    if factor != 1.0:
        if "log_std" not in out:
            raise ValueError(f"explore_std: {factor} widens a Gaussian policy's std; this policy has no log_std "
                             "(set explore_std: 1)")
        out["log_std"] = out["log_std"] + math.log(factor)
    return out


def lr_key(name: str) -> str:
    """The ``inner_lr`` entry of parameter ``name`` (``ParameterDict`` keys cannot hold dots)."""
    return name.replace(".", "__")


def attach_inner_lr(policy: nn.Module, init: float) -> nn.Module:
    """Give ``policy`` a learnable per-parameter inner learning rate (Meta-SGD, Li et al. 2017,
    arXiv 1707.09835), each entry shaped as its parameter and starting at ``init``.

    They live in ``policy.inner_lr`` so that checkpoints, ``metarl evaluate`` and
    ``metarl.load(...).adapt`` carry them with the policy; the forward pass ignores them, and
    :class:`~metarl.rl.maml_trpo.MAMLTRPO` uses them as the inner step sizes and meta-learns
    them with the policy (in the TRPO step and its trust region). Returns ``policy``.
    """
    names = [(n, p) for n, p in policy.named_parameters()]
    policy.inner_lr = nn.ParameterDict({lr_key(n): nn.Parameter(torch.full_like(p.detach(), float(init)))
                                        for n, p in names})
    return policy


def distribution_params(dist: Distribution) -> tuple[str, tuple[torch.Tensor, ...]]:
    """``(kind, tensors)``: the family (``"normal"``/``"categorical"``) and the tensors that define ``dist``."""
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return "normal", (dist.base_dist.loc, dist.base_dist.scale)
    if isinstance(dist, Categorical):
        return "categorical", (dist.logits,)
    raise TypeError(f"policy_distribution supports Independent(Normal) and Categorical, got {type(dist)}")


def distribution_from_params(kind: str, tensors: Sequence[torch.Tensor]) -> Distribution:
    """The inverse of :func:`distribution_params`."""
    if kind == "normal":
        loc, scale = tensors
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
    return Categorical(logits=tensors[0], validate_args=False)


def detach_distribution(dist: Distribution) -> Distribution:
    """``dist`` with its defining tensors detached (a constant, e.g. pi_old in a KL)."""
    kind, tensors = distribution_params(dist)
    return distribution_from_params(kind, [t.detach() for t in tensors])


def _squeeze_task_dim(dist: Distribution) -> Distribution:
    kind, tensors = distribution_params(dist)
    return distribution_from_params(kind, [t.squeeze(0) for t in tensors])


def policy_distribution_fn(
    policy: nn.Module, params: Mapping[str, torch.Tensor], *, per_task: bool
) -> Callable[[torch.Tensor], Distribution]:
    """``obs -> policy_distribution(policy, params, obs, per_task=per_task)``, prepared once for
    many calls with the same ``params`` (a rollout: one call per time step).

    The MLP policies (their ``stacked`` method) run one batched matmul per layer, the
    layers prepared here once; shared params are one stacked set, run on each ``obs[i]``.
    Other policies go through ``functional_call`` (and ``vmap`` over tasks).
    """
    stacked = getattr(policy, "stacked", None)
    if stacked is not None:
        if per_task:
            forward = stacked(params)
            if forward is not None:
                return forward
        else:  # one stacked set, run on each block obs[i] (see metarl.nets.stacked_mlp)
            one = stacked({k: v.unsqueeze(0) for k, v in params.items()})
            if one is not None:
                return lambda obs: one(obs) if obs.dim() > 1 else _squeeze_task_dim(one(obs.unsqueeze(0)))
    if not per_task:
        return lambda obs: functional_forward(policy, params, obs)

    def per_task_vmap(obs: torch.Tensor) -> Distribution:
        kind: list[str] = []

        def one(p: Mapping[str, torch.Tensor], o: torch.Tensor) -> tuple[torch.Tensor, ...]:
            k, tensors = distribution_params(functional_forward(policy, p, o))
            kind.append(k)
            return tensors

        tensors = torch.func.vmap(one)(dict(params), obs)
        return distribution_from_params(kind[0], tensors)

    return per_task_vmap


def policy_distribution(
    policy: nn.Module, params: Mapping[str, torch.Tensor], obs: torch.Tensor, *, per_task: bool
) -> Distribution:
    """The policy's action distribution at ``obs`` under ``params``.

    Args:
        policy: a module whose ``forward`` returns ``Independent(Normal)`` or ``Categorical``.
        params: shared parameters, or with ``per_task=True`` parameters stacked over tasks
            (each tensor ``[N, *shape]``, e.g. the output of ``adapt_batched``).
        obs: ``[..., obs_dim]``; with ``per_task=True``, ``[N, ..., obs_dim]``.

    Returns a distribution with batch shape ``obs.shape[:-1]``, differentiable in ``params``.
    See :func:`policy_distribution_fn` for how it is computed.
    """
    return policy_distribution_fn(policy, params, per_task=per_task)(obs)


def sample_actions(dist: Distribution, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one action per batch element from ``dist`` using an explicit ``generator``.

    ``torch.distributions`` sample from the global RNG; this draws the noise from
    ``generator`` instead so that rollouts are reproducible from a seed.
    """
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        base = dist.base_dist
        noise = torch.randn(base.loc.shape, generator=generator, dtype=base.loc.dtype, device=base.loc.device)
        return base.loc + base.scale * noise
    if isinstance(dist, Categorical):
        probs = dist.probs.reshape(-1, dist.probs.shape[-1])
        idx = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return idx.reshape(dist.probs.shape[:-1])
    raise TypeError(f"sample_actions supports Independent(Normal) and Categorical, got {type(dist)}")
