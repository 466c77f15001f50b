"""Fast adaptation on held-out tasks: validation during training, ``metarl evaluate`` and ``Run.adapt``.

Every path adapts with the run's own inner loop (:func:`metarl.rl.adapt.adapt_on_episodes`),
resampling after each step as in Finn et al. 2017's RL evaluation, on a sampler it is given
(the training run's own workers, for validation) with streams seeded for the purpose.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.config import ConfigError, RLConfig, config_from_dict
from metarl.evaluate import summarize
from metarl.maml import Params, detach_params, params_of
from metarl.progress import progress
from metarl.rl.adapt import adapt_on_episodes
from metarl.rl.build import (
    advantage_estimator,
    inner_loop,
    make_env,
    policy_module,
    sampler_for,
    seeded_policy,
    test_step_sizes,
)
from metarl.rl.episodes import Episodes
from metarl.rl.losses import log_prob_gap
from metarl.rl.policies import widened
from metarl.seeding import eval_seed


def adaptation_returns(
    cfg: RLConfig, policy: nn.Module, tasks: list[dict], *, steps: int, sampler: Any, seed: int,
    params_out: list[Params] | None = None, episodes_out: list[Episodes] | None = None, desc: str | None = None,
) -> torch.Tensor:
    """Mean return per task after 0..``steps`` inner steps, resampling after each: ``[steps+1, N]``.

    The episodes before adapting are sampled with the std times ``cfg.explore_std`` (1: the policy's own),
    so the return after 0 steps is that of the policy the first step learns from.

    ``sampler`` samples with streams seeded by ``seed`` (its own streams continue untouched), so
    the result depends on the policy, the tasks and ``seed`` only. ``params_out``, if given,
    receives the (detached) parameters after 0..``steps`` steps: shared ones first, then stacked
    per task (``[N, ...]``); ``episodes_out`` the episodes sampled with them (``[N, T, B, ...]``
    after k steps), e.g. for figures of the paths before and after adaptation. ``desc`` names a
    progress bar over the sampling rounds on stderr (``metarl evaluate``); ``None`` shows none.
    """
    inner, advantages = inner_loop(cfg), advantage_estimator(cfg)
    theta: Params = detach_params(params_of(policy))
    params, per_task = theta, False
    batches: list[Episodes] = []
    out = []
    with sampler.seeded(seed):
        for k in progress(range(steps + 1), desc=desc or "", unit="step", disable=desc is None):
            sampling = params if per_task else widened(params, cfg.explore_std)
            batches.append(Episodes.stack(sampler.sample(policy, sampling, tasks, per_task=per_task)))
            out.append(batches[-1].returns().mean(-1))
            if params_out is not None:
                params_out.append(detach_params(params))
            if episodes_out is not None:
                episodes_out.append(batches[-1])
            if k < steps:
                params = adapt_on_episodes(policy, theta, batches, inner, advantages, **test_step_sizes(cfg))
                per_task = True
    return torch.stack(out)


def success_curve(episodes: list[Episodes]) -> torch.Tensor | None:
    """Success rate per task after 0..k steps, ``[k+1, N]``, from :func:`adaptation_returns`'s
    ``episodes_out`` (``[N, T, B, ...]`` each); ``None`` where the env reports no ``info["success"]``."""
    flags = [e.successes() for e in episodes]
    if not flags or any(f is None for f in flags):
        return None
    return torch.stack([f.float().mean(-1) for f in flags])


def jsonable_task(task: Any) -> Any:
    """A task as JSON can hold it, for the ``tasks`` of ``metarl evaluate``'s result (so that its
    ``per_task`` scores can be read against the goals): numpy values as numbers and lists, tuples as
    lists, mappings key by key, anything else JSON has no type for as its ``repr``."""
    if isinstance(task, dict):
        return {str(key): jsonable_task(value) for key, value in task.items()}
    if isinstance(task, (list, tuple)):
        return [jsonable_task(value) for value in task]
    if isinstance(task, np.ndarray):
        return jsonable_task(task.tolist())
    if isinstance(task, np.generic):
        return task.item()
    if task is None or isinstance(task, (bool, int, float, str)):
        return task
    return repr(task)


#: The goals of Finn et al.'s test scripts (``maml_examples/test_maml_{cheetah,cheetah_direc,ant,ant_direc}.py``
#: in Finn's ``maml_rl``): 40 draws of numpy's legacy ``np.random.seed(S); np.random.uniform(LOW, HIGH, 40)``,
#: which its frozen stream reproduces exactly. A velocity task takes the draw; a direction task runs forward
#: where the draw exceeds THRESHOLD (rllab's ``*_rand_direc`` envs), backward otherwise.
FINN2017_TEST_GOALS: dict[str, tuple[int, float, float, float | None]] = {  # env id: (S, LOW, HIGH, THRESHOLD)
    "metarl/HalfCheetahVel-v0": (1, 0.0, 2.0, None),
    "metarl/HalfCheetahDir-v0": (1, 0.0, 2.0, 1.0),
    "metarl/AntVel-v0": (1, 0.0, 3.0, None),
    "metarl/AntDir-v0": (2, 0.0, 3.0, 1.5),
}


def finn2017_test_tasks(env_id: str) -> list[dict]:
    """The 40 held-out tasks Finn et al. 2017 scored Figure 5 on, for one of :data:`FINN2017_TEST_GOALS`,
    so that a run compares with the paper's per-task returns (``metarl/rl/finn2017_figure5.json``) goal
    for goal."""
    if env_id not in FINN2017_TEST_GOALS:
        raise ConfigError(f"--task-set finn2017: the paper's test goals exist for {', '.join(FINN2017_TEST_GOALS)}, "
                          f"not {env_id}; give a JSON file of tasks instead")
    seed, low, high, threshold = FINN2017_TEST_GOALS[env_id]
    draws = np.random.RandomState(seed).uniform(low, high, size=40)
    if threshold is None:
        return [{"velocity": float(v)} for v in draws]
    return [{"direction": 1 if v > threshold else -1} for v in draws]


def load_task_set(spec: str, env: gym.Env) -> list[dict]:
    """``metarl evaluate --task-set``: ``finn2017`` or a JSON file (a list of tasks, or an evaluation JSON
    whose ``"tasks"`` are used, as ``--task``'s entries or as held-out tasks), each checked against the
    env's task space where it has one; any problem is a one-line :class:`ConfigError`."""
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    if spec == "finn2017":
        tasks = finn2017_test_tasks(env_id)
    else:
        try:
            with open(spec) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--task-set {spec}: cannot read it ({e}); give finn2017 or a JSON file of tasks "
                              "(a list, or an evaluation JSON)") from None
        tasks = data.get("tasks") if isinstance(data, dict) else data
        if isinstance(tasks, list):
            tasks = [t["task"] if isinstance(t, dict) and "task" in t and "by_step" in t else t for t in tasks]
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise ConfigError(f"--task-set {spec}: no tasks in it (expected a non-empty list of task dicts such as "
                              '[{"velocity": 1.3}], or an evaluation JSON with "tasks")')
    space = getattr(env.unwrapped, "task_space", None)
    if space is None:
        return tasks
    name = env.unwrapped.env_name
    try:
        return [space.check(task, name) for task in tasks]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--task-set {spec}: {e}") from None


def evaluation_tasks(env: gym.Env, n_tasks: int, seed: int) -> list[dict]:
    """Held-out tasks named by ``seed``, from a stream apart from training's (:mod:`metarl.seeding`): the
    env's ``sample_test_tasks`` where it has a fixed test set (Meta-World), else its ``sample_tasks``."""
    base = env.unwrapped
    draw = getattr(base, "sample_test_tasks", None) or base.sample_tasks
    return draw(n_tasks, np.random.default_rng(eval_seed(seed)))


def adapt_run(module: nn.Module, params: Params, cfg: RLConfig, episodes: Episodes, *, steps: int) -> Params:
    """``metarl.load(run).adapt(episodes)``: one task's params after ``steps`` steps on ``episodes``.

    With ``inner_estimator: lvc`` the inner loss weighs each action by pi / pi_sampling, so
    ``episodes.log_probs`` must be those of the run's policy that sampled them (the sampler's);
    anything else is refused here rather than silently giving another step. Later steps on the
    same episodes are then importance-weighted (REINFORCE repeats the plain gradient step).
    """
    if steps == 0:
        return dict(params)
    if cfg.inner_estimator == "lvc":
        gap = log_prob_gap(module, params, episodes)
        if not gap <= 1e-3:
            raise ValueError(
                f"adapt: this run's inner loss is LVC (inner_estimator: lvc), which needs episodes.log_probs of "
                f"the run's own policy; they differ from it by up to {gap:.3g} nats. Pass episodes sampled by "
                "run.policy(deterministic=False) with their log-probs (run.policy().distribution(obs)), or set "
                "run.config.inner_estimator = 'reinforce' for the plain REINFORCE step (the same step when the "
                "log-probs are the policy's)."
            )
    batch = Episodes.stack([episodes])
    fast = adapt_on_episodes(module, params, [batch] * steps, inner_loop(cfg), advantage_estimator(cfg),
                             **test_step_sizes(cfg))
    return {k: v[0] for k, v in fast.items()}


def env_kwargs_with_defaults(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` over the registered ones and the env class's keyword defaults, so that two configs
    that differ only by spelling out a default (``clip_ctrl_cost: false``) make the same env; the
    plain ``kwargs`` where the env's entry point cannot be inspected."""
    try:
        spec = gym.spec(env_id)
        entry = spec.entry_point
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        params = inspect.signature(creator).parameters.values()
    except Exception:  # an unregistered or uninspectable env: compare what the configs say
        return dict(kwargs)
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **spec.kwargs, **kwargs}


def _scores(curve: torch.Tensor) -> dict[str, Any]:
    """A baseline's entry in the evaluation JSON: its summary by step and its return on each held-out task,
    in the run's task order, so that the run and the baseline can be compared goal for goal (paired)."""
    return {"by_step": summarize(curve), "per_task": curve.tolist()}


def _baseline_curve(cfg: RLConfig, name: str, state: dict[str, Any], tasks: list[dict], steps: int,
                    sampler: Any, seed: int, lr: float | None = None) -> torch.Tensor:
    """A baseline run's curve on the same tasks, adapted with the evaluated run's inner loop (same
    steps, episodes per step, exploration std, lr unless ``lr`` is given, and test-time schedule) but in the env its own
    config makes (an oracle sees each task in its observations)."""
    bcfg = config_from_dict(state["config"])
    if not isinstance(bcfg, RLConfig) or bcfg.env.id != cfg.env.id:
        raise ConfigError(f"--baseline {name}: its env {getattr(bcfg, 'env', None)} differs from {cfg.env.id}")
    if env_kwargs_with_defaults(cfg.env.id, bcfg.env.kwargs) != env_kwargs_with_defaults(cfg.env.id, cfg.env.kwargs):
        raise ConfigError(f"--baseline {name}: its env.kwargs {bcfg.env.kwargs} differ from {cfg.env.kwargs}")
    bcfg = config_from_dict(state["config"], [("inner.lr", cfg.inner.lr if lr is None else lr),
                                              ("env.episodes_per_task", cfg.env.episodes_per_task),
                                              ("explore_std", cfg.explore_std),
                                              *((f"test_{k}", v) for k, v in test_step_sizes(cfg).items())])
    benv = make_env(bcfg)
    try:
        bpolicy = policy_module(bcfg, benv)
    finally:
        benv.close()
    bpolicy.load_state_dict(state["learner"]["model"])
    if bcfg.env.oracle == cfg.env.oracle:
        return adaptation_returns(bcfg, bpolicy, tasks, steps=steps, sampler=sampler, seed=seed,
                                  desc=f"evaluate {name}")
    own = sampler_for(bcfg, seed)  # another observation space: its own sampler
    try:
        return adaptation_returns(bcfg, bpolicy, tasks, steps=steps, sampler=own, seed=seed, desc=f"evaluate {name}")
    finally:
        own.close()


def evaluate_rl(
    cfg: RLConfig,
    learner_state: dict[str, Any],
    *,
    n_tasks: int,
    steps: int,
    seed: int,
    baselines: dict[str, dict[str, Any]],
    random: bool = True,
    baseline_lrs: dict[str, float] | None = None,
    task_set: str | None = None,
) -> dict[str, Any]:
    """Return after 0..steps adaptation steps on ``n_tasks`` fresh tasks, for the run, a randomly
    initialised policy (unless ``random`` is false) and each baseline run, all on the same tasks and
    sampling seeds. ``baseline_lrs``: an inner lr per baseline name (``random`` included) in place of
    the run's, as Finn et al. tuned the baselines' step sizes for their Figure 5. ``task_set``: the
    tasks of :func:`load_task_set` instead of ``n_tasks`` drawn with ``seed`` (which still seeds the
    sampling)."""
    lrs = baseline_lrs or {}
    env = make_env(cfg)
    sampler = sampler_for(cfg, eval_seed(seed))
    try:
        tasks = load_task_set(task_set, env) if task_set is not None else evaluation_tasks(env, n_tasks, seed)
        seed = eval_seed(seed)  # sampler streams apart from training's too
        policy = policy_module(cfg, env)
        policy.load_state_dict(learner_state["model"])
        episodes: list[Episodes] = []
        curve = adaptation_returns(cfg, policy, tasks, steps=steps, sampler=sampler, seed=seed, desc="evaluate run",
                                   episodes_out=episodes)
        success = success_curve(episodes)
        del episodes
        out = {}
        if random:
            random_policy = seeded_policy(cfg, seed + 20_011, env)
            rcfg = dataclasses.replace(cfg, inner=dataclasses.replace(cfg.inner, lr=lrs["random"])) if "random" in lrs \
                else cfg
            out["random"] = _scores(adaptation_returns(rcfg, random_policy, tasks, steps=steps, sampler=sampler,
                                                       seed=seed, desc="evaluate random"))
        for name, state in baselines.items():
            out[name] = _scores(_baseline_curve(cfg, name, state, tasks, steps, sampler, seed, lr=lrs.get(name)))
        for name, lr in lrs.items():
            out[name]["inner_lr"] = lr
        result = {"metric": "return", "by_step": summarize(curve), "baselines": out,
                  "tasks": [jsonable_task(task) for task in tasks], "per_task": curve.tolist()}
        if success is not None:  # the success rate by step, where the env reports one (Meta-World)
            result["success"] = summarize(success)
            result["per_task_success"] = success.tolist()
        return result
    finally:
        sampler.close()
        env.close()
