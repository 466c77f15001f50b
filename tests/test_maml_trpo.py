"""The MAML-TRPO meta-step: meta-gradient vs finite differences, vmap vs a per-task loop."""

from __future__ import annotations

import copy
from dataclasses import fields

import pytest
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from metarl.config import ConfigError, config_from_dict
from metarl.maml import Params, adapt, adapt_batched, detach_params, params_of
from metarl.rl.adapt import InnerBatch, InnerLoop, adapt_on_episodes, adapt_policy, episodes_at, split_lr
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.build import make_algorithm
from metarl.rl.episodes import Episodes
from metarl.rl.fisher import (
    FisherInput,
    MetaProblem,
    Subsampled,
    exact_fisher,
    factored_fisher,
    make_fisher,
    post_update_fisher,
)
from metarl.rl.losses import (
    entropy,
    kl_divergence,
    log_prob_gap,
    old_distribution,
    reinforce_loss,
    surrogate_loss,
)
from metarl.rl.maml_trpo import MAMLTRPO
from metarl.rl.objective import MetaBatch, adapted_params, meta_batch, meta_objective, task_chunks
from metarl.rl.policies import (
    LR_PREFIX,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    attach_inner_lr,
    lr_key,
    policy_distribution,
    sample_actions,
)
from metarl.trpo import TrustRegion, fisher_vector_product, flatten, trust_region_step, unflatten

torch.set_num_threads(1)

N, T, B = 2, 6, 3


def make_policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(2, 2, hidden_sizes=(4,), activation="tanh", init_std=0.8).double()


def make_algo(
    policy: nn.Module,
    inner_steps: int = 1,
    per_step_batches: bool = False,
    *,
    inner_lr: float = 0.5,
    first_order: bool = False,
    inner_estimator: str = "reinforce",
    fisher: str = "meta",
    fisher_tasks: int = 0,
    fisher_episodes: int = 0,
    fisher_factored: bool = True,
    task_chunk: int = 4,
    max_kl: float = 1e-2,
    normalize_advantages: bool = True,
    seed: int = 0,
) -> MAMLTRPO:
    """A MAMLTRPO from the parts: ``inner_steps`` gradient steps on one pre-update batch, or
    (``per_step_batches``) one step on each of ``inner_steps`` batches. The Fisher strategy is chosen
    as :mod:`metarl.rl.build` chooses it: factored where that is exact (one second-order step on one
    batch, a fixed rate, an MLP policy) unless ``fisher_factored=False``, subsampled with ``seed``."""
    inner = InnerLoop(inner_lr, 1 if per_step_batches else inner_steps, inner_estimator, first_order)
    inner_batches = inner_steps if per_step_batches else 1
    learned_lr = any(k.startswith(LR_PREFIX) for k in params_of(policy))
    factorable = (fisher_factored and inner_batches == 1 and inner.steps == 1 and not first_order
                  and not learned_lr and getattr(policy, "stacked", None) is not None)
    return MAMLTRPO(
        policy, inner=inner, inner_batches=inner_batches,
        advantages=AdvantageEstimator(normalize=normalize_advantages), trust_region=TrustRegion(max_kl=max_kl),
        fisher=make_fisher(fisher, factorable=factorable, tasks=fisher_tasks, episodes=fisher_episodes, seed=seed),
        task_chunk=task_chunk,
    )


def adapted(algo: MAMLTRPO, train: list[Episodes], params: Params | None = None, lr_decay: float = 1.0) -> Params:
    """theta'_i of every task, ``[N, ...]``, after one pass over the pre-update batches ``train``; at
    the policy's current (detached) parameters when ``params`` is None, else differentiable in them."""
    if params is None:
        params = detach_params(params_of(algo.policy))
    return adapt_on_episodes(algo.policy, params, train, algo.inner, algo.advantages, lr_decay=lr_decay)


def pi_old(algo: MAMLTRPO, batch: MetaBatch, post_params: Params) -> tuple[Distribution, ...]:
    """pi_old per chunk of ``algo.task_chunk`` tasks from given post-update params ``[N, ...]``."""
    return tuple(
        old_distribution(algo.policy, {k: v[s] for k, v in post_params.items()}, batch.select(s).valid.episodes,
                         per_task=True)
        for s in task_chunks(batch.n_tasks, algo.task_chunk)
    )


def objective_fn(algo: MAMLTRPO, train: list[Episodes], valid: Episodes, post_params: Params):
    """``params -> (surrogate, mean KL)`` through the adaptation, pi_old the policies ``post_params``."""
    batch = meta_batch(train, valid, algo.advantages)
    old = pi_old(algo, batch, post_params)

    def objective(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        value = meta_objective(algo.policy, params, batch, algo.inner, old=old, chunk=algo.task_chunk)
        return value.loss, value.kl

    return objective


def meta_problem(algo: MAMLTRPO, train: list[Episodes], valid: Episodes) -> MetaProblem:
    return MetaProblem(algo.policy, meta_batch(train, valid, algo.advantages), algo.inner, algo.task_chunk)


def fisher_product(algo: MAMLTRPO, train: list[Episodes], valid: Episodes, leaves: Params, strategy=None):
    """``v -> F v`` (undamped) of ``strategy`` (default: the algorithm's) at theta_0 = ``leaves``,
    pi_old the post-update policies there, as the step calls it."""
    post = adapted(algo, train, detach_params(leaves))
    strategy = algo.fisher if strategy is None else strategy
    return strategy(meta_problem(algo, train, valid), leaves, FisherInput(None, post))


def rollouts(policy, params: Params, per_task: bool, g: torch.Generator) -> Episodes:
    """Synthetic stacked episodes [N, T, B] sampled from ``params``; reward pulls a to a task goal."""
    obs = torch.randn(N, T, B, 2, generator=g, dtype=torch.float64)
    lengths = torch.randint(2, T + 1, (N, 1, B), generator=g)
    masks = (torch.arange(T)[None, :, None] < lengths).double()
    with torch.no_grad():
        dist = policy_distribution(policy, params, obs, per_task=per_task)
        actions = sample_actions(dist, g)
        log_probs = dist.log_prob(actions)
    goals = torch.tensor([[1.0, -1.0], [-0.5, 0.5]], dtype=torch.float64)[:, None, None, :]
    rewards = -(actions + obs - goals).pow(2).sum(-1) * masks
    return Episodes(obs, actions, rewards, masks, log_probs)


def problem(seed: int, inner_steps: int, per_step_batches: bool, meta_sgd: bool = False, **kwargs):
    """An algorithm, its policy, train episodes (a list: one batch, or one per inner step), valid
    episodes. ``meta_sgd``: the policy carries learned per-parameter inner lrs, drawn around 0.5."""
    policy = make_policy()
    if meta_sgd:
        attach_inner_lr(policy, 0.5)
        with torch.no_grad():
            for lr in policy.inner_lr.values():
                lr.add_(0.2 * torch.rand(lr.shape, generator=torch.Generator().manual_seed(seed), dtype=lr.dtype))
    algo = make_algo(policy, inner_steps, per_step_batches, **kwargs)
    g = torch.Generator().manual_seed(seed)
    theta = detach_params(params_of(policy))
    train = [rollouts(policy, theta, False, g)]
    if per_step_batches:
        for _ in range(inner_steps - 1):
            train.append(rollouts(policy, adapted(algo, train), True, g))
    valid = rollouts(policy, adapted(algo, train), True, g)
    return algo, policy, train, valid


def meta_loss(algo: MAMLTRPO, train: list[Episodes], valid: Episodes, params: Params) -> torch.Tensor:
    """The post-update surrogate as a function of theta, built from the public pieces."""
    return surrogate_loss(
        algo.policy, adapted(algo, train, params), valid, algo.advantages(valid), per_task=True
    )


@pytest.mark.parametrize(
    "inner_steps,per_step_batches,meta_sgd",
    [(1, False, False), (2, False, False), (2, True, False), (1, False, True), (2, True, True)],
    ids=["1step", "2steps", "2batches", "meta-sgd-1step", "meta-sgd-2batches"],
)
def test_meta_gradient_matches_finite_differences(inner_steps: int, per_step_batches: bool, meta_sgd: bool) -> None:
    """d(post-update surrogate)/d(theta) through the inner loop, and with Meta-SGD also
    d/d(learned inner lrs), against central differences in float64."""
    algo, policy, train, valid = problem(0, inner_steps, per_step_batches, meta_sgd=meta_sgd)
    theta = detach_params(params_of(policy))
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grad = flatten(torch.autograd.grad(meta_loss(algo, train, valid, leaves), list(leaves.values())))
    x0 = flatten(theta)
    h = 1e-6
    fd = torch.empty_like(x0)
    with torch.no_grad():
        for i in range(x0.numel()):
            e = torch.zeros_like(x0)
            e[i] = h
            plus = meta_loss(algo, train, valid, unflatten(x0 + e, theta))
            minus = meta_loss(algo, train, valid, unflatten(x0 - e, theta))
            fd[i] = (plus - minus) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    if meta_sgd:  # the learned lrs get a meta-gradient
        lr_grad = flatten({k: g for k, g in unflatten(grad, theta).items() if k.startswith("inner_lr.")})
        assert lr_grad.numel() == flatten(dict(policy.inner_lr)).numel() and float(lr_grad.norm()) > 0
        return
    # the inner loop matters: the second-order meta-gradient differs from the first-order one
    algo_fo = make_algo(policy, inner_steps, per_step_batches, first_order=True)
    leaves_fo = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grad_fo = flatten(
        torch.autograd.grad(meta_loss(algo_fo, train, valid, leaves_fo), list(leaves_fo.values()))
    )
    assert float((grad_fo - grad).norm()) > 1e-3 * float(grad.norm())


def test_first_order_meta_gradient_is_the_sum_of_post_update_gradients() -> None:
    """FOMAML: d theta'_i / d theta = I, so the meta-gradient is sum_i dL/dtheta'_i (at theta'_i)."""
    algo, policy, train, valid = problem(1, 2, False, first_order=True)
    theta = detach_params(params_of(policy))
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grad = torch.autograd.grad(meta_loss(algo, train, valid, leaves), list(leaves.values()))
    fast = {k: v.clone().requires_grad_(True) for k, v in adapted(algo, train).items()}
    loss = surrogate_loss(policy, fast, valid, algo.advantages(valid), per_task=True)
    ref = torch.autograd.grad(loss, list(fast.values()))
    for a, b in zip(grad, ref, strict=True):
        torch.testing.assert_close(a, b.sum(dim=0))


def loop_adapt(algo: MAMLTRPO, train: list[Episodes], params: Params) -> list[Params]:
    """Reference inner loop: plain ``adapt`` for one task at a time, ``inner.steps`` steps per batch."""
    out = []
    for n in range(N):
        fast = dict(params)
        for batch in train:
            task = batch.unstack()[n]
            adv = algo.advantages(batch)[n]

            def loss_fn(p: Params, data: tuple[Episodes, torch.Tensor]) -> torch.Tensor:
                return reinforce_loss(algo.policy, p, data[0], data[1])

            fast = adapt(loss_fn, fast, (task, adv), lr=algo.inner.lr, steps=algo.inner.steps)
        out.append(fast)
    return out


def per_task_plain_adapt(algo: MAMLTRPO, theta: Params, train: list[Episodes], factors: list[float]) -> list[Params]:
    """Each task adapted alone by plain ``adapt``, batch j at ``inner.lr * factors[j]``: the reference."""
    out = []
    for n in range(N):
        fast = dict(theta)
        for j, batch in enumerate(train):
            task, adv = batch.unstack()[n], algo.advantages(batch)[n]

            def loss_fn(p: Params, data: tuple[Episodes, torch.Tensor]) -> torch.Tensor:
                return reinforce_loss(algo.policy, p, data[0], data[1])

            fast = adapt(loss_fn, fast, (task, adv), lr=algo.inner.lr * factors[j], steps=1)
        out.append(fast)
    return out


def test_adapt_with_lr_decay_takes_the_decayed_step_on_each_later_batch() -> None:
    """Test-time halving (``lr_decay``): batch j's step uses lr * decay**j, per task as plain ``adapt``."""
    algo, policy, train, valid = problem(12, 2, True)
    theta = detach_params(params_of(policy))
    got = adapted(algo, train, lr_decay=0.5)
    for n, fast in enumerate(per_task_plain_adapt(algo, theta, train, [1.0, 0.5])):
        for k in theta:
            torch.testing.assert_close(got[k][n], fast[k], rtol=1e-12, atol=1e-12)
    undecayed = adapted(algo, train)
    assert any(not torch.allclose(undecayed[k], got[k]) for k in theta)


def test_adapt_with_lr_after_first_takes_the_papers_test_step_sizes() -> None:
    """Finn et al.'s test scripts: lr on the first batch, lr * 0.5 on every later one (not 0.25 on the
    third); combined with ``lr_decay`` the factors multiply. Per task as plain ``adapt``."""
    algo, policy, train, valid = problem(13, 3, True)
    theta = detach_params(params_of(policy))
    params = adapt_on_episodes(algo.policy, theta, train, algo.inner, algo.advantages, lr_after_first=0.5)
    both = adapt_on_episodes(algo.policy, theta, train, algo.inner, algo.advantages, lr_after_first=0.5,
                             lr_decay=0.8)
    for got, factors in ((params, [1.0, 0.5, 0.5]), (both, [1.0, 0.5 * 0.8, 0.5 * 0.64])):
        for n, fast in enumerate(per_task_plain_adapt(algo, theta, train, factors)):
            for k in theta:
                torch.testing.assert_close(got[k][n], fast[k], rtol=1e-12, atol=1e-12)
    geometric = adapted(algo, train, lr_decay=0.5)  # 1, 0.5, 0.25: differs on the third batch only
    assert any(not torch.allclose(geometric[k], params[k]) for k in theta)


def loop_objective(algo: MAMLTRPO, train: list[Episodes], valid: Episodes, old: list[Params]):
    valid_adv = algo.advantages(valid)
    tasks = valid.unstack()

    def objective(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        fast = loop_adapt(algo, train, params)
        loss = sum(surrogate_loss(algo.policy, fast[n], tasks[n], valid_adv[n]) for n in range(N)) / N
        kl = sum(kl_divergence(algo.policy, fast[n], old[n], tasks[n]) for n in range(N)) / N
        return loss, kl

    return objective


@pytest.mark.parametrize("inner_steps,per_step_batches", [(1, False), (2, True)], ids=["1step", "2batches"])
def test_batched_meta_step_equals_per_task_loop(inner_steps: int, per_step_batches: bool) -> None:
    algo, policy, train, valid = problem(2, inner_steps, per_step_batches)
    theta = detach_params(params_of(policy))

    # adapted params
    batched = adapted(algo, train)
    looped = loop_adapt(algo, train, theta)
    for n in range(N):
        for k in theta:
            torch.testing.assert_close(batched[k][n], looped[n][k], rtol=1e-12, atol=1e-12)

    # surrogate, KL, gradient and Fisher-vector product through the adaptation
    old = [{k: v[n] for k, v in batched.items()} for n in range(N)]
    loop_obj = loop_objective(algo, train, valid, old)
    batch_obj = objective_fn(algo, train, valid, batched)
    v = torch.randn(flatten(theta).shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    results = []
    for objective in (batch_obj, loop_obj):
        leaves = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
        loss, kl = objective(leaves)
        grad = flatten(torch.autograd.grad(loss, list(leaves.values()), retain_graph=True))
        fvp = fisher_vector_product(kl, leaves, damping=1e-3)(v)
        results.append((loss.detach(), kl.detach(), grad, fvp))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert float(results[0][3].norm()) > 0

    # the whole step: the module ends where trust_region_step on the loop objective goes
    ref_params, ref_metrics = trust_region_step(loop_obj, theta, max_kl=algo.trust_region.max_kl)
    metrics = algo.step(train, valid)
    assert metrics["accepted"] == ref_metrics["accepted"] == 1.0
    assert metrics["ls_steps"] == ref_metrics["ls_steps"]
    for k, p in params_of(policy).items():
        torch.testing.assert_close(p.detach(), ref_params[k], rtol=1e-8, atol=1e-10)
    for key in ("surrogate_before", "surrogate_after", "kl", "grad_norm"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-6, abs=1e-12)


def test_step_respects_the_trust_region_and_reports_metrics() -> None:
    algo, policy, train, valid = problem(3, 1, False, max_kl=0.01)
    theta = {k: p.detach().clone() for k, p in params_of(policy).items()}
    old_fast = adapted(algo, train)
    m = algo.step(train, valid)
    assert m["accepted"] == 1.0
    assert m["surrogate_after"] < m["surrogate_before"]
    assert m["logp_gap"] < 1e-10  # valid episodes were sampled by the adapted params
    new_theta = detach_params(params_of(policy))
    assert any(not torch.equal(new_theta[k], theta[k]) for k in theta)
    # independently recomputed post-update KL between old and new adapted policies
    new_fast = adapted(make_algo(policy, 1), train)
    with torch.no_grad():
        d_old = policy_distribution(policy, old_fast, valid.observations, per_task=True)
        d_new = policy_distribution(policy, new_fast, valid.observations, per_task=True)
        kl = torch.distributions.kl_divergence(d_old, d_new)
        per_task = (kl * valid.masks).sum(dim=(1, 2)) / valid.masks.sum(dim=(1, 2))
    assert float(per_task.mean()) == pytest.approx(m["kl"], rel=1e-9)
    assert 0 < m["kl"] <= 0.01
    expected = {
        "surrogate_before",
        "surrogate_after",
        "kl",
        "ls_steps",
        "accepted",
        "grad_norm",
        "step_norm",
        "inner_loss",
        "adapt_kl",
        "entropy",
        "logp_gap",
    }
    assert set(m) == expected
    assert all(isinstance(v, float) for v in m.values())


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_adapt_kl_is_the_kl_from_theta_to_each_adapted_policy_on_its_pre_update_states(inner_steps: int) -> None:
    algo, policy, train, valid = problem(5, inner_steps, True)
    theta = {k: v.clone() for k, v in detach_params(params_of(policy)).items()}
    fast = adapted(algo, train)  # after every inner step
    states = train[0]
    kls = []
    for i in range(N):  # task by task, from the distributions' closed form
        with torch.no_grad():
            before = policy_distribution(policy, theta, states.observations[i], per_task=False)
            after = policy_distribution(policy, {k: v[i] for k, v in fast.items()}, states.observations[i],
                                        per_task=False)
            kl = torch.distributions.kl_divergence(before, after)
        kls.append(float((kl * states.masks[i]).sum() / states.masks[i].sum()))
    m = algo.step(train, valid)
    assert m["adapt_kl"] == pytest.approx(sum(kls) / N, rel=1e-9) and m["adapt_kl"] > 0
    small = make_algo(policy, inner_steps, True, inner_lr=0.05)
    policy.load_state_dict(theta)
    assert 0 < small.step(train, valid)["adapt_kl"] < m["adapt_kl"]  # a smaller step moves it less
    assert "adapt_kl" not in MAMLTRPO(policy, inner_batches=0).step([], valid)  # no adaptation, no metric


def test_rejected_step_leaves_the_module_untouched() -> None:
    """Zero valid rewards and no normalisation: zero surrogate gradient, nothing to accept."""
    algo, policy, train, valid = problem(4, 1, False, normalize_advantages=False)
    valid = Episodes(
        valid.observations, valid.actions, torch.zeros_like(valid.rewards), valid.masks, valid.log_probs
    )
    before = {k: p.detach().clone() for k, p in params_of(policy).items()}
    live_before = {k: p for k, p in params_of(policy).items()}
    m = algo.step(train, valid)
    assert m["accepted"] == 0.0 and m["grad_norm"] == 0.0
    for k, p in params_of(policy).items():
        assert p is live_before[k]
        assert torch.equal(p.detach(), before[k])
        assert p.grad is None


def test_adapt_on_per_step_batches_chains_single_steps() -> None:
    algo, policy, train, _ = problem(5, 2, True)
    two = adapted(algo, train)
    one = adapted(algo, train[:1])
    theta = detach_params(params_of(policy))
    # a sequence of one batch is one step
    ref = loop_adapt(make_algo(policy, 1), train[:1], theta)
    for k in theta:
        assert not two[k].requires_grad
        torch.testing.assert_close(one[k][0], ref[0][k])
        torch.testing.assert_close(one[k][1], ref[1][k])
    with pytest.raises(ValueError):
        algo.step(train[:1], train[0])  # step needs inner_batches batches
    with pytest.raises(ValueError):
        adapted(algo, [train[0].unstack()[0]])  # not stacked over tasks


def test_zero_inner_steps_is_plain_trpo_on_theta() -> None:
    """No inner step (``InnerLoop(steps=0)``), or no pre-update batch at all (``inner_batches=0``,
    the pretrained baseline): every task's post-update params are theta."""
    algo, policy, train, valid = problem(6, 0, False)
    fast = adapted(algo, train)
    theta = detach_params(params_of(policy))
    no_batch = adapted_params(policy, theta, MetaBatch((), InnerBatch(valid, algo.advantages(valid))), algo.inner)
    for k, p in params_of(policy).items():
        for got in (fast[k], no_batch[k]):
            assert got.shape == (N, *p.shape)
            torch.testing.assert_close(got, p.detach().expand_as(got))


def test_step_runs_in_float32_with_module_params() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8, 8))
    algo = make_algo(policy, 1, inner_lr=0.1)  # the defaults of MAMLTRPO and of the config's meta step
    g = torch.Generator().manual_seed(0)
    theta = detach_params(params_of(policy))
    train = [rollouts(policy, {k: v.double() for k, v in theta.items()}, False, g).to(dtype=torch.float32)]
    valid = rollouts(
        copy.deepcopy(policy).double(), {k: v.double() for k, v in adapted(algo, train).items()}, True, g
    ).to(dtype=torch.float32)
    m = algo.step(train, valid)
    assert m["accepted"] == 1.0 and m["kl"] <= algo.trust_region.max_kl
    assert m["logp_gap"] < 1e-4


def categorical_problem(seed: int, inner_steps: int = 1):
    """A categorical MLP policy, its MAMLTRPO and ``sample(params, per_task)``: synthetic stacked
    episodes [N, T, B] drawn from ``params`` in which task n is rewarded for action n; padded
    steps hold action -1 (out of range: it must be ignored)."""
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(2, 3, hidden_sizes=(6,)).double()
    algo = make_algo(policy, inner_steps)
    g = torch.Generator().manual_seed(seed)

    def sample(params: Params, per_task: bool) -> Episodes:
        obs = torch.randn(N, T, B, 2, generator=g, dtype=torch.float64)
        masks = (torch.arange(T)[None, :, None] < torch.randint(2, T + 1, (N, 1, B), generator=g)).double()
        with torch.no_grad():
            dist = policy_distribution(policy, params, obs, per_task=per_task)
            actions = sample_actions(dist, g)
            log_probs = dist.log_prob(actions)
        actions = torch.where(masks > 0, actions, -1)
        rewards = (actions == torch.arange(N)[:, None, None]).double() * masks
        return Episodes(obs, actions, rewards, masks, log_probs)

    return policy, algo, sample


def test_step_with_a_categorical_policy() -> None:
    policy, algo, sample = categorical_problem(0)
    train = [sample(detach_params(params_of(policy)), False)]
    valid = sample(adapted(algo, train), True)
    m = algo.step(train, valid)
    assert m["accepted"] == 1.0 and 0 < m["kl"] <= algo.trust_region.max_kl
    assert m["logp_gap"] < 1e-12


def test_fisher_on_all_tasks_is_the_exact_step() -> None:
    results = []
    for fisher_tasks in (0, N):
        algo, policy, train, valid = problem(3, 1, False, fisher_tasks=fisher_tasks)
        algo.step(train, valid)
        results.append(flatten(params_of(policy)).detach())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_subsampled_fisher_is_the_fisher_of_the_chosen_tasks() -> None:
    """``fisher_tasks=1`` (seed 0 picks the task): the products are the chosen task's meta-Fisher,
    whether factored (as the step computes them here) or by double backprop."""
    chosen = int(torch.randperm(N, generator=torch.Generator().manual_seed(0))[0])
    for factored in (True, False):
        algo, policy, train, valid = problem(4, 1, False, fisher_tasks=1, fisher_factored=factored)
        assert isinstance(algo.fisher, Subsampled)
        assert algo.fisher.base is (factored_fisher if factored else exact_fisher)
        theta = detach_params(params_of(policy))
        # independently: the KL of the chosen task alone, through its own adaptation
        one_train = [episodes_at(train[0], slice(chosen, chosen + 1))]
        one_valid = episodes_at(valid, slice(chosen, chosen + 1))
        old = adapted(algo, one_train, theta)
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        kl_one = kl_divergence(policy, adapted(algo, one_train, leaves), old, one_valid, per_task=True)
        expected = fisher_vector_product(kl_one, leaves, 0.0)
        leaves2 = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        got = fisher_product(algo, train, valid, leaves2)
        v = torch.randn(flatten(theta).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(got(v), expected(v))
    with pytest.raises(ValueError, match="fisher_tasks=-1"):
        make_fisher("meta", factorable=True, tasks=-1)


@pytest.mark.parametrize("inner_steps,per_step_batches", [(1, False), (2, True)], ids=["1step", "2batches"])
def test_task_chunks_give_the_same_objective_gradient_fisher_and_step(inner_steps: int, per_step_batches: bool) -> None:
    """Evaluating the objective a chunk of tasks at a time (task_chunk=1: N calls) changes nothing."""
    results = []
    for chunk in (0, 1):
        algo, policy, train, valid = problem(5, inner_steps, per_step_batches, task_chunk=chunk)
        theta = detach_params(params_of(policy))
        objective = objective_fn(algo, train, valid, adapted(algo, train, theta))
        leaves = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
        loss, kl = objective(leaves)
        grad = flatten(torch.autograd.grad(loss, list(leaves.values()), retain_graph=True))
        v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        fvp = fisher_vector_product(kl, leaves, damping=0.0)(v)
        metrics = algo.step(train, valid)
        results.append((loss.detach(), grad, fvp, flatten(params_of(policy)).detach(), metrics["accepted"]))
    assert float(results[0][2].norm()) > 0 and results[0][4] == 1.0
    # float64 rounding differs with the summation order (and CG and the step amplify it);
    # a wrong chunk weighting would be off by O(1)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="task_chunk=-1"):
        MAMLTRPO(make_policy(), task_chunk=-1)


@pytest.mark.parametrize("chunk", [0, 1])
def test_objective_without_pi_old_at_theta0_equals_it_with_the_post_update_policies_given(chunk: int) -> None:
    """``meta_objective(old=None)`` at theta_0 takes pi_old from its own forward pass: value,
    gradient, Fisher-vector product and later calls with the pi_old it returns equal those with
    pi_old built from the post-update params up front, and it returns those params and the
    step's diagnostics."""
    algo, policy, train, valid = problem(11, 1, False, task_chunk=chunk)
    theta = detach_params(params_of(policy))
    batch = meta_batch(train, valid, algo.advantages)
    post = adapted(algo, train, theta)
    v = torch.randn(flatten(theta).shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted = unflatten(flatten(theta) + 0.05 * v, theta)
    results = []
    for old in (pi_old(algo, batch, post), None):
        leaves = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
        value = meta_objective(policy, leaves, batch, algo.inner, old=old, chunk=chunk)
        grad = flatten(torch.autograd.grad(value.loss, list(leaves.values()), retain_graph=True))
        fvp = fisher_vector_product(value.kl, leaves, damping=0.0)(v)
        with torch.no_grad():
            later = meta_objective(policy, shifted, batch, algo.inner, old=value.old, chunk=chunk)
        results.append((value.loss.detach(), value.kl.detach(), grad, fvp, torch.stack([later.loss, later.kl])))
        for k in theta:
            torch.testing.assert_close(value.post_params[k], post[k], rtol=0, atol=1e-12)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert float(results[0][1]) == 0.0 and float(results[0][4][1]) > 0
    # the diagnostics, recomputed independently
    expected_entropy = entropy(policy, post, valid, per_task=True)
    assert value.entropy == pytest.approx(float(expected_entropy), rel=1e-10)
    assert value.logp_gap < 1e-10
    bad = valid.log_probs.clone()
    bad[N - 1, 2, 1] += 0.3  # a live step of the last task
    assert bool(valid.masks[N - 1, 2, 1] > 0)
    spoiled = Episodes(valid.observations, valid.actions, valid.rewards, valid.masks, bad)
    value = meta_objective(policy, {k: t.clone().requires_grad_(True) for k, t in theta.items()},
                           meta_batch(train, spoiled, algo.advantages), algo.inner, chunk=chunk)
    assert value.logp_gap == pytest.approx(0.3, abs=1e-9)
    assert log_prob_gap(policy, post, spoiled, per_task=True) == pytest.approx(value.logp_gap, abs=1e-12)


def test_meta_sgd_with_uniform_rates_equals_the_fixed_lr_and_its_step_updates_them() -> None:
    algo, policy, train, valid = problem(6, 2, True)
    fixed = adapted(algo, train)
    attach_inner_lr(policy, algo.inner.lr)
    learned = adapted(algo, train)
    assert set(learned) == set(fixed)  # the policy's parameters only
    for k in fixed:
        torch.testing.assert_close(learned[k], fixed[k], rtol=1e-12, atol=1e-12)
    before = flatten(dict(policy.inner_lr)).detach().clone()
    assert algo.step(train, valid)["accepted"] == 1.0
    assert float((flatten(dict(policy.inner_lr)).detach() - before).abs().max()) > 0


def _post_fisher_explicit(algo: MAMLTRPO, policy, train: list[Episodes], valid: Episodes) -> torch.Tensor:
    """The mean over tasks of the Hessian of KL(pi_old_i || pi_phi) in phi at phi = theta'_i,
    formed entry by entry with ``torch.autograd.functional.hessian`` on the flat vector."""
    theta = detach_params(params_of(policy))
    old = adapted(algo, train, theta)
    hessians = []
    for i in range(valid.masks.shape[0]):
        one_valid = episodes_at(valid, slice(i, i + 1))
        old_i = {k: v[i : i + 1] for k, v in old.items()}
        like = {k: v[0] for k, v in old_i.items()}

        def kl_of(flat: torch.Tensor, old_i=old_i, one_valid=one_valid, like=like) -> torch.Tensor:
            phi = {k: v[None] for k, v in unflatten(flat, like).items()}
            return kl_divergence(policy, phi, old_i, one_valid, per_task=True)

        hessians.append(torch.autograd.functional.hessian(kl_of, flatten(like)))
    return torch.stack(hessians).mean(0)


@pytest.mark.parametrize("fisher_tasks", [0, 1])
def test_post_update_fisher_is_the_mean_fisher_of_the_adapted_policies(fisher_tasks: int) -> None:
    algo, policy, train, valid = problem(8, 1, False, fisher="post", fisher_tasks=fisher_tasks)
    theta = detach_params(params_of(policy))
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    got_fvp = fisher_product(algo, train, valid, leaves)
    v = torch.randn(flatten(theta).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if fisher_tasks == 0:
        assert algo.fisher is post_update_fisher
        expected = _post_fisher_explicit(algo, policy, train, valid) @ v
    else:  # the chosen task's Fisher alone (seed 0 picks it)
        chosen = int(torch.randperm(N, generator=torch.Generator().manual_seed(0))[0])
        one = [episodes_at(e, slice(chosen, chosen + 1)) for e in (train[0], valid)]
        expected = _post_fisher_explicit(algo, policy, [one[0]], one[1]) @ v
    torch.testing.assert_close(got_fvp(v), expected)
    # it differs from the exact (meta) Fisher J^T F J when the inner step is not zero
    fresh = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
    exact = fisher_product(algo, train, valid, fresh, exact_fisher)(v)
    if fisher_tasks == 0:
        assert float((exact - expected).norm()) > 1e-3 * float(expected.norm())


@pytest.mark.parametrize("fisher", ["post", "meta"])
def test_fisher_episodes_restricts_the_fisher_to_the_drawn_episodes_of_every_task(fisher: str) -> None:
    """``fisher_episodes=k``: the Fisher-vector products use k random valid episodes of each task
    (the same k for all, drawn from the step's generator), explicit Hessians / the objective's KL
    on those episodes alone; with fisher_tasks too, the tasks are drawn first."""
    for fisher_tasks in (0, 1):
        algo, policy, train, valid = problem(14, 1, False, fisher=fisher, fisher_episodes=2, fisher_tasks=fisher_tasks)
        theta = detach_params(params_of(policy))
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        got = fisher_product(algo, train, valid, leaves)
        g = torch.Generator().manual_seed(0)  # make_fisher's seed: tasks first, then episodes
        tasks = torch.randperm(N, generator=g)[:1].sort().values if fisher_tasks else torch.arange(N)
        episodes = torch.randperm(B, generator=g)[:2].sort().values
        sub_train = episodes_at(train[0], tasks)
        sub_valid = episodes_at(episodes_at(valid, tasks), (slice(None), slice(None), episodes))
        v = torch.randn(flatten(theta).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        if fisher == "post":
            expected = _post_fisher_explicit(algo, policy, [sub_train], sub_valid) @ v
        else:  # the exact objective's KL, built on the sub-batch alone (the adaptation sees every train episode)
            sub_algo = make_algo(policy, 1, inner_lr=algo.inner.lr)
            objective = objective_fn(sub_algo, [sub_train], sub_valid, adapted(sub_algo, [sub_train], theta))
            fresh = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
            expected = fisher_vector_product(objective(fresh)[1], fresh, 0.0)(v)
        torch.testing.assert_close(got(v), expected)
        everything = make_algo(policy, 1, inner_lr=algo.inner.lr, fisher=fisher, fisher_tasks=fisher_tasks)
        fresh = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
        full = fisher_product(everything, train, valid, fresh)
        assert float((full(v) - expected).norm()) > 1e-6 * float(expected.norm())  # a real restriction
    assert algo.step(train, valid)["accepted"] == 1.0
    with pytest.raises(ValueError, match="fisher_episodes=-1"):
        make_fisher(fisher, factorable=True, episodes=-1)


def test_post_update_fisher_equals_the_exact_one_when_the_inner_step_is_zero() -> None:
    """With inner lr 0, theta' = theta and J = I: both Fishers, and so both steps, coincide."""
    results = []
    for fisher in ("meta", "post"):
        policy = make_policy()
        algo = make_algo(policy, 1, inner_lr=0.0, fisher=fisher)
        g = torch.Generator().manual_seed(9)
        train = [rollouts(policy, detach_params(params_of(policy)), False, g)]
        valid = rollouts(policy, adapted(algo, train), True, g)
        m = algo.step(train, valid)
        assert m["accepted"] == 1.0
        results.append(flatten(params_of(policy)).detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-7, atol=1e-10)


def test_post_update_fisher_step_respects_the_exact_trust_region() -> None:
    algo, policy, train, valid = problem(10, 1, False, fisher="post")
    theta = {k: v.clone() for k, v in detach_params(params_of(policy)).items()}  # step writes in place
    m = algo.step(train, valid)
    assert m["accepted"] == 1.0 and 0 < m["kl"] <= algo.trust_region.max_kl
    # the reported KL is the exact one, through the adaptation, at the new parameters
    new = detach_params(params_of(policy))
    old = adapted(algo, train, theta)
    kl = kl_divergence(policy, adapted(algo, train, new), old, valid, per_task=True)
    torch.testing.assert_close(float(kl), m["kl"])
    with pytest.raises(ValueError, match="got 'bogus'"):
        make_fisher("bogus", factorable=True)
    # refused when the run is built from its config, before any sampling
    meta_sgd_policy = attach_inner_lr(make_policy(), 0.5)
    cfg = config_from_dict({"benchmark": "rl", "inner": {"lr": 0.5, "learn_lr": True}, "trpo": {"fisher": "post"}})
    with pytest.raises(ConfigError, match="learned inner rates"):
        make_algorithm(cfg, meta_sgd_policy)


@pytest.mark.parametrize("inner_steps,per_step_batches", [(1, False), (2, True)], ids=["1step", "2batches"])
def test_meta_fisher_vector_product_matches_finite_differences_of_the_kl_gradient(
    inner_steps: int, per_step_batches: bool
) -> None:
    """The exact FVP differentiates the KL through the second-order adaptation twice (third
    derivatives of the activations); central differences of its gradient need only first ones."""
    algo, policy, train, valid = problem(11, inner_steps, per_step_batches)
    theta = detach_params(params_of(policy))
    objective = objective_fn(algo, train, valid, adapted(algo, train, theta))

    def kl_grad(flat: torch.Tensor) -> torch.Tensor:
        leaves = {k: v.clone().requires_grad_(True) for k, v in unflatten(flat, theta).items()}
        return flatten(torch.autograd.grad(objective(leaves)[1], list(leaves.values())))

    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    x0 = flatten(theta)
    v = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = fisher_vector_product(objective(leaves)[1], leaves, 0.0)(v)
    eps = 1e-5
    fd = (kl_grad(x0 + eps * v) - kl_grad(x0 - eps * v)) / (2 * eps)
    assert float(got.norm()) > 1e-6
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-8)


def test_lvc_inner_estimator_takes_the_same_step_and_adds_the_sampling_curvature_to_the_meta_gradient() -> None:
    """ProMP's LVC inner loss (Rothfuss et al. 2019): at the sampling parameters the adapted params
    are REINFORCE's; the meta-gradient gains alpha * M g' with M = mean_t A_t grad log pi_t grad
    log pi_t^T (the inner loss's extra curvature) and g' the post-update gradient, computed here
    step by step with plain autograd."""
    alpha = 0.5
    algo, policy, train, valid = problem(12, 1, False)
    lvc = make_algo(policy, 1, inner_lr=alpha, inner_estimator="lvc")
    theta = detach_params(params_of(policy))
    for k, v in adapted(algo, train, theta).items():  # same inner step
        torch.testing.assert_close(adapted(lvc, train, theta)[k], v, rtol=1e-12, atol=1e-12)

    grads = []
    for a in (algo, lvc):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        grads.append(flatten(torch.autograd.grad(meta_loss(a, train, valid, leaves), list(leaves.values()))))
    assert float((grads[1] - grads[0]).norm()) > 1e-3 * float(grads[0].norm())

    # independent: alpha * sum_n M_n g'_n / N, M_n from per-step score vectors
    fast = adapted(algo, train, theta)
    pre = train[0]
    adv_train, adv_valid = algo.advantages(pre), algo.advantages(valid)
    expected = torch.zeros_like(grads[0])
    for n in range(N):
        fast_n = {k: v[n].clone().requires_grad_(True) for k, v in fast.items()}
        valid_n = episodes_at(valid, slice(n, n + 1))
        post = surrogate_loss(policy, {k: v[None] for k, v in fast_n.items()}, valid_n, adv_valid[n : n + 1],
                              per_task=True)
        g_post = flatten(torch.autograd.grad(post, list(fast_n.values())))
        live = torch.nonzero(pre.masks[n] > 0)
        m_g = torch.zeros_like(g_post)
        for t, b in live.tolist():
            leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
            logp = policy_distribution(policy, leaves, pre.observations[n, t, b], per_task=False).log_prob(
                pre.actions[n, t, b])
            score = flatten(torch.autograd.grad(logp, list(leaves.values())))
            m_g += adv_train[n, t, b] * score * torch.dot(score, g_post)
        expected += alpha * m_g / len(live) / N
    torch.testing.assert_close(grads[1] - grads[0], expected, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="estimator='dice'"):
        InnerLoop(estimator="dice")


@pytest.mark.parametrize("case", ["gaussian", "gaussian-first-order", "gaussian-meta-sgd", "categorical"])
def test_stacked_adaptation_equals_vmap_of_adapt_with_meta_gradients(case: str) -> None:
    """adapt_policy adapts MLP policies without vmap (theta expanded to per-task copies, one backward
    pass); it must give vmap-of-``adapt``'s params and their derivatives wrt theta (and the rates)."""
    if case == "categorical":
        policy, algo, sample = categorical_problem(3, inner_steps=2)
        train = [sample(detach_params(params_of(policy)), False)]
    else:
        algo, policy, train, _ = problem(13, 2, False, meta_sgd=case.endswith("meta-sgd"),
                                         first_order=case.endswith("first-order"))
    assert getattr(policy, "stacked", None) is not None
    batches = [InnerBatch(e, algo.advantages(e)) for e in train]
    inner = algo.inner

    def inner_loss(p: Params, data: tuple) -> torch.Tensor:
        episode_fields, advantages = data
        return inner.loss(policy, p, Episodes(*episode_fields), advantages)

    data = (tuple(getattr(train[0], f.name) for f in fields(Episodes)), batches[0].advantages)
    results = []
    for path in ("stacked", "vmap"):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params_of(policy).items()}
        if path == "stacked":
            fast = adapt_policy(policy, leaves, batches, inner)
        else:
            params, lr = split_lr(leaves, inner.lr)
            fast = adapt_batched(inner_loss, params, data, lr=lr, steps=2, first_order=inner.first_order)
        scalar = sum((v.sin() * torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).view_as(v)).sum()
                     for v in fast.values())
        grads = torch.autograd.grad(scalar, list(leaves.values()), allow_unused=True, materialize_grads=True)
        results.append([fast[k].detach() for k in sorted(fast)] + list(grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # sampling and the line search: no graph, same numbers
        plain = adapt_policy(policy, detach_params(params_of(policy)), batches, inner)
    for i, k in enumerate(sorted(plain)):
        assert not plain[k].requires_grad
        torch.testing.assert_close(plain[k], results[0][i], rtol=1e-12, atol=1e-12)


class PlainGaussianPolicy(nn.Module):
    """A Gaussian policy with no ``stacked`` forward (a plain ``nn.Sequential`` with ``nn.Tanh``):
    adapt_policy and the losses run it through ``functional_call`` and ``torch.func.vmap``. Its
    parameters carry the names of :func:`make_policy`'s, so that one's values can be loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
        self.log_std = nn.Parameter(torch.zeros(2))

    def forward(self, obs: torch.Tensor) -> Distribution:
        loc = self.mu(obs)
        scale = self.log_std.exp().expand_as(loc)
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


@pytest.mark.parametrize("case", ["2batches-decay", "2steps-first-order", "meta-sgd-2batches"])
def test_vmap_adaptation_of_a_plain_module_equals_the_stacked_mlp_and_a_per_task_loop(case: str) -> None:
    """adapt_policy on a policy without ``stacked`` (the vmap path) gives, for the same function and
    data, the stacked MLP path's adapted params and meta-gradient (of the post-update surrogate, wrt
    theta and the learned rates), and those of a per-task loop of plain :func:`metarl.maml.adapt`."""
    per_step, meta_sgd = case.startswith(("2batches", "meta-sgd")), case.startswith("meta-sgd")
    algo, mlp_policy, train, valid = problem(16, 2, per_step, meta_sgd=meta_sgd,
                                             first_order=case.endswith("first-order"))
    decay = 0.5 if case.endswith("decay") else 1.0
    plain = PlainGaussianPolicy().double()
    if meta_sgd:
        attach_inner_lr(plain, 0.0)
    plain.load_state_dict(mlp_policy.state_dict())
    assert getattr(plain, "stacked", None) is None
    inner, adv_valid = algo.inner, algo.advantages(valid)
    batches = [InnerBatch(e, algo.advantages(e)) for e in train]
    theta = detach_params(params_of(mlp_policy))
    assert set(theta) == set(params_of(plain))

    def per_task_loop(leaves: Params) -> tuple[Params, torch.Tensor]:
        """Reference: each task adapted alone by ``adapt``, the surrogate averaged over tasks."""
        params = {k: v for k, v in leaves.items() if not k.startswith(LR_PREFIX)}
        lr = {k: leaves[LR_PREFIX + lr_key(k)] for k in params} if meta_sgd else inner.lr
        fasts, loss = [], 0.0
        for n in range(N):
            fast = dict(params)
            for j, batch in enumerate(batches):
                step_lr = {k: v * decay**j for k, v in lr.items()} if meta_sgd else lr * decay**j

                def loss_fn(p: Params, d: tuple[Episodes, torch.Tensor]) -> torch.Tensor:
                    return reinforce_loss(plain, p, d[0], d[1])

                fast = adapt(loss_fn, fast, (batch.episodes.unstack()[n], batch.advantages[n]), lr=step_lr,
                             steps=inner.steps, first_order=inner.first_order)
            fasts.append(fast)
            loss = loss + surrogate_loss(plain, fast, valid.unstack()[n], adv_valid[n]) / N
        return {k: torch.stack([f[k] for f in fasts]) for k in params}, loss

    results = []
    for path in ("stacked", "vmap", "loop"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        if path == "loop":
            fast, loss = per_task_loop(leaves)
        else:
            policy = mlp_policy if path == "stacked" else plain
            fast = adapt_policy(policy, leaves, batches, inner, lr_decay=decay)
            loss = surrogate_loss(policy, fast, valid, adv_valid, per_task=True)
        grad = flatten(torch.autograd.grad(loss, list(leaves.values())))
        results.append([fast[k].detach() for k in sorted(fast)] + [loss.detach(), grad])
    assert float(results[0][-1].norm()) > 0
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # no graph, the same params
        detached = adapt_policy(plain, theta, batches, inner, lr_decay=decay)
    for i, k in enumerate(sorted(detached)):
        assert not detached[k].requires_grad
        torch.testing.assert_close(detached[k], results[1][i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("estimator", ["reinforce", "lvc"])
def test_factored_meta_fisher_product_equals_double_backprop_through_the_adaptation(estimator: str) -> None:
    """J^T F' J (three Hessian-vector products) against the Hessian of the KL through the
    second-order adaptation by double backprop, on all tasks and on a fisher_tasks subsample;
    and the step takes it exactly where it is exact (one fixed-rate second-order inner step)."""
    for fisher_tasks in (0, 1):
        algo, policy, train, valid = problem(15, 1, False, inner_estimator=estimator, fisher_tasks=fisher_tasks)
        theta = detach_params(params_of(policy))
        if fisher_tasks:  # the same draw of tasks for both
            assert isinstance(algo.fisher, Subsampled) and algo.fisher.base is factored_fisher
            algo.fisher.generator.manual_seed(3)
            want_fisher = Subsampled(exact_fisher, fisher_tasks, 0, torch.Generator().manual_seed(3))
        else:
            assert algo.fisher is factored_fisher
            want_fisher = exact_fisher
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        got = fisher_product(algo, train, valid, leaves)
        want = fisher_product(algo, train, valid, leaves, want_fisher)
        for seed in range(3):
            v = torch.randn(flatten(theta).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(got(v), want(v), rtol=1e-9, atol=1e-12)
    # the whole step: factored and double backprop give the same update
    results = []
    for factored in (True, False):
        algo, policy, train, valid = problem(15, 1, False, inner_estimator=estimator, fisher_factored=factored)
        assert algo.step(train, valid)["accepted"] == 1.0
        results.append(flatten(params_of(policy)).detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-8, atol=1e-10)
    # not exact (or not implemented) elsewhere: the run's config picks it only for one fixed-rate
    # second-order step on one batch of an MLP policy ...
    for overrides in ({}, {"steps": 2}, {"learn_lr": True}, {"first_order": True}, {"fisher": "post"}):
        trpo = {"fisher": overrides.pop("fisher")} if "fisher" in overrides else {}
        cfg = config_from_dict({"benchmark": "rl", "inner_estimator": estimator, "inner": overrides, "trpo": trpo})
        policy = make_policy()
        if cfg.inner.learn_lr:
            attach_inner_lr(policy, cfg.inner.lr)
        assert (make_algorithm(cfg, policy).fisher is factored_fisher) == (not overrides and not trpo)
    # ... and the strategy refuses several steps on one batch and a first-order inner loop
    for inner in (InnerLoop(0.5, 2, estimator), InnerLoop(0.5, 1, estimator, first_order=True)):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        problem_ = meta_problem(algo, train, valid)._replace(inner=inner)
        with pytest.raises(ValueError, match="one second-order inner step"):
            factored_fisher(problem_, leaves, FisherInput(None, adapted(algo, train, theta)))


def test_factored_meta_fisher_product_with_a_categorical_policy() -> None:
    policy, algo, sample = categorical_problem(5)
    theta = detach_params(params_of(policy))
    train = [sample(theta, False)]
    old = adapted(algo, train)
    valid = sample(old, True)
    assert algo.fisher is factored_fisher
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    got = fisher_product(algo, train, valid, leaves)
    want = fisher_vector_product(objective_fn(algo, train, valid, old)(leaves)[1], leaves, 0.0)
    v = torch.randn(flatten(theta).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got(v), want(v), rtol=1e-9, atol=1e-12)
    assert float(want(v).norm()) > 0
