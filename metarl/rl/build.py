"""MAML-TRPO meta-RL runs: the learner driven by ``metarl train`` and its evaluation.

One meta-iteration (Finn et al. 2017, Algorithm 3): draw ``meta_batch_size`` tasks; for
each inner step k sample pre-update episodes with the current (per-task) parameters and
adapt; sample post-update episodes with the adapted policies; take one TRPO meta-step.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import envs  # noqa: F401  (registers the environments)
from metarl.checkpoint import rng_state, set_rng_state
from metarl.config import RLConfig
from metarl.maml import Params, detach_params, params_of
from metarl.rl.episodes import Episodes
from metarl.rl.losses import log_prob_gap
from metarl.rl.maml_trpo import MAMLTRPO
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, attach_inner_lr
from metarl.rl.sampler import make_sampler
from metarl.seeding import eval_seed, validation_seed


def make_env(cfg: RLConfig) -> gym.Env:
    """One instance of the run's environment (spaces and task sampling)."""
    return gym.make(cfg.env.id, **env_kwargs(cfg))


def env_kwargs(cfg: RLConfig) -> dict[str, Any]:
    """Keyword arguments of ``gymnasium.make`` for the run's env: ``env.kwargs``, plus ``oracle=True``
    with ``env.oracle`` (the task is then part of the observation, so the policy's input widens)."""
    kwargs = dict(cfg.env.kwargs)
    if cfg.env.oracle:
        kwargs["oracle"] = True
    return kwargs


def policy_module(cfg: RLConfig, env: gym.Env | None = None) -> nn.Module:
    """The run's policy: Gaussian MLP for Box actions, categorical MLP for Discrete ones."""
    env = env if env is not None else make_env(cfg)
    obs_dim = int(np.prod(env.observation_space.shape))
    if isinstance(env.action_space, gym.spaces.Discrete):
        policy: nn.Module = CategoricalMLPPolicy(
            obs_dim, int(env.action_space.n), cfg.policy.hidden, cfg.policy.activation
        )
    else:
        act_dim = int(np.prod(env.action_space.shape))
        policy = GaussianMLPPolicy(obs_dim, act_dim, cfg.policy.hidden, cfg.policy.activation, cfg.policy.init_std)
    if cfg.policy.init == "xavier":
        xavier_init(policy)
    if cfg.inner.learn_lr and cfg.algorithm == "maml":
        attach_inner_lr(policy, cfg.inner.lr)
    return policy


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` (Glorot & Bengio 2010): the
    mean action starts near 0 for every state instead of at a random offset."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def seeded_policy(cfg: RLConfig, seed: int, env: gym.Env | None = None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return policy_module(cfg, env)


def make_algo(cfg: RLConfig, policy: nn.Module) -> MAMLTRPO:
    steps = 0 if cfg.algorithm == "pretrain" else cfg.inner.steps
    return MAMLTRPO(
        policy, inner_lr=cfg.inner.lr, inner_steps=steps, first_order=cfg.inner.first_order,
        max_kl=cfg.trpo.max_kl, cg_iters=cfg.trpo.cg_iters, cg_damping=cfg.trpo.cg_damping,
        ls_ratio=cfg.trpo.ls_ratio, ls_max_steps=cfg.trpo.ls_max_steps, ls_rescale=cfg.trpo.ls_rescale, gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda, normalize_advantages=cfg.normalize_advantages, inner_estimator=cfg.inner_estimator,
        fisher_tasks=cfg.trpo.fisher_tasks, fisher_episodes=cfg.trpo.fisher_episodes, fisher=cfg.trpo.fisher,
        task_chunk=cfg.trpo.task_chunk, seed=cfg.seed,
    )


def _sampler(cfg: RLConfig, seed: int) -> Any:
    """The run's sampler: local, or on Ray (imported only then); both give the same episodes."""
    if cfg.sampler.backend == "ray":
        from metarl.rl.ray_sampler import RaySampler

        return RaySampler(
            cfg.env.id, episodes_per_task=cfg.env.episodes_per_task, num_workers=cfg.sampler.num_workers,
            seed=seed, env_kwargs=env_kwargs(cfg), address=cfg.sampler.address,
        )
    return make_sampler(
        cfg.env.id, episodes_per_task=cfg.env.episodes_per_task,
        num_workers=cfg.sampler.num_workers or None, seed=seed, env_kwargs=env_kwargs(cfg),
    )


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count.

    The meta-update runs while the sampler's physics threads / workers wait, so it may use
    every core without oversubscribing them; sampling itself keeps one torch thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MAMLTRPOLearner:
    """Meta-trains a policy with MAML-TRPO.

    Best checkpoint: by the mean return after ``inner.steps`` adaptation steps on
    ``eval.tasks`` fixed validation tasks (drawn from a stream apart from training's and
    from ``metarl evaluate``'s, and sampled with the same seeds at every validation, so
    successive values differ by the policy only), checked every ``eval.every`` iterations.
    (The training post-update return is a noisier signal: it comes from that iteration's
    tasks, the very batch the step was chosen on.) A ``pretrain`` run (the pretrained and
    oracle baselines) optimises the return without adaptation, so its best checkpoint is
    chosen by the return before adaptation: a step of the inner loop on a policy that was
    not meta-trained for it says little about the policy (it made the HalfCheetahVel oracle
    pick iteration 40, -145 before adaptation, over iteration 150, -68).
    """

    best_mode = "max"

    def __init__(self, cfg: RLConfig) -> None:
        self.cfg = cfg
        self.best_key = "val/return_pre" if cfg.algorithm == "pretrain" else "val/return_post"
        self.env = make_env(cfg)
        self.device = torch.device(cfg.device)
        self.module = seeded_policy(cfg, cfg.seed, self.env).to(self.device)
        self.algo = make_algo(cfg, self.module)
        self.sampler = _sampler(cfg, cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # kept for symmetry of RNG state
        self._val_tasks: list[dict] | None = None

    def _sample(self, params: Params, tasks: list[dict], per_task: bool) -> Episodes:
        """Sampling runs on the CPU (parameters cross once per call); the episodes go to the
        device of the meta-update (``--device cuda``)."""
        cpu = {k: v.detach().cpu() for k, v in params.items()}
        return Episodes.stack(self.sampler.sample(self.module, cpu, tasks, per_task=per_task)).to(self.device)

    def sample_adapted(self, tasks: list[dict]) -> tuple[list[Episodes], Episodes, Params]:
        """Pre-update episodes for each inner step, post-update episodes, and the adapted params."""
        theta = detach_params(params_of(self.module))
        train: list[Episodes] = []
        params: Params = theta
        per_task = False
        for _ in range(self.algo.inner_steps):
            train.append(self._sample(params, tasks, per_task))
            with torch_threads(self.cfg.update_threads or os.cpu_count() or 1):  # the physics waits
                params = detach_params(self.algo.adapt(train, theta))
            per_task = True
        valid = self._sample(params, tasks, per_task)
        return train, valid, params

    def train_step(self, iteration: int, log: bool) -> dict[str, float]:
        tasks = self.env.unwrapped.sample_tasks(self.cfg.meta_batch_size, self.np_rng)
        t0 = time.perf_counter()
        train, valid, _ = self.sample_adapted(tasks)
        t1 = time.perf_counter()
        with torch_threads(self.cfg.update_threads or os.cpu_count() or 1):
            metrics = dict(self.algo.step(train if train else valid, valid))
        t2 = time.perf_counter()
        steps = sum(float(e.masks.sum()) for e in [*train, valid])
        ns = {"inner_loss": "train", "entropy": "train", "logp_gap": "train"}
        out = {f"{ns.get(k, 'trpo')}/{k}": float(v) for k, v in metrics.items()}
        out["train/return_post"] = float(valid.returns().mean())
        out["train/return_pre"] = float(train[0].returns().mean()) if train else out["train/return_post"]
        out["time/sample_s"] = t1 - t0
        out["time/update_s"] = t2 - t1
        out["time/env_steps_per_s"] = steps / max(t1 - t0, 1e-9)
        return out

    def validate(self) -> dict[str, float]:
        """``val/return_pre`` and ``val/return_post``: mean return on the validation tasks before
        and after ``inner.steps`` steps (resampling after each), as :func:`adaptation_returns`."""
        seed = validation_seed(self.cfg.seed)
        if self._val_tasks is None:
            self._val_tasks = self.env.unwrapped.sample_tasks(self.cfg.eval.tasks, np.random.default_rng(seed))
        policy = copy.deepcopy(self.module).cpu()
        returns = adaptation_returns(self.cfg, policy, self._val_tasks, steps=self.cfg.inner.steps, seed=seed)
        means = returns.mean(-1)
        return {"val/return_pre": float(means[0]), "val/return_post": float(means[-1])}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "rng": rng_state(self.generator, self.np_rng),
            "sampler": self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None,
            "fisher_rng": self.algo.fisher_generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        set_rng_state(state["rng"], self.generator, self.np_rng)
        if state.get("fisher_rng") is not None:
            self.algo.fisher_generator.set_state(state["fisher_rng"])
        if state.get("sampler") is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])

    def close(self) -> None:
        self.sampler.close()
        self.env.close()


def build_rl(cfg: RLConfig) -> MAMLTRPOLearner:
    return MAMLTRPOLearner(cfg)


# ---------------------------------------------------------------------------- evaluation
def adaptation_returns(
    cfg: RLConfig, policy: nn.Module, tasks: list[dict], *, steps: int, seed: int
) -> torch.Tensor:
    """Mean return per task after 0..``steps`` inner steps, resampling after each: ``[steps+1, N]``."""
    algo = make_algo(cfg, policy)
    sampler = _sampler(cfg, seed)
    try:
        theta: Params = detach_params(params_of(policy))
        params, per_task = theta, False
        batches: list[Episodes] = []
        out = []
        for k in range(steps + 1):
            batches.append(Episodes.stack(sampler.sample(policy, params, tasks, per_task=per_task)))
            out.append(batches[-1].returns().mean(-1))
            if k < steps:  # the training inner loop, resampling after each step
                params = algo.adapt(batches, theta, lr_decay=cfg.test_lr_decay)
                per_task = True
        return torch.stack(out)
    finally:
        sampler.close()


def adapt_policy(run: Any, episodes: Episodes, *, steps: int) -> Params:
    """``metarl.load(run).adapt(episodes)``: one task's params after ``steps`` steps on ``episodes``.

    With ``inner_estimator: lvc`` the inner loss weighs each action by pi / pi_sampling, so
    ``episodes.log_probs`` must be those of the run's policy that sampled them (the sampler's);
    anything else is refused here rather than silently giving another step. Later steps on the
    same episodes are then importance-weighted (REINFORCE repeats the plain gradient step).
    """
    if steps == 0:
        return dict(run.params)
    if run.config.inner_estimator == "lvc":
        gap = log_prob_gap(run.module, run.params, episodes)
        if not gap <= 1e-3:
            raise ValueError(
                f"adapt: this run's inner loss is LVC (inner_estimator: lvc), which needs episodes.log_probs of "
                f"the run's own policy; they differ from it by up to {gap:.3g} nats. Pass episodes sampled by "
                "run.policy() with their log-probs, or set run.config.inner_estimator = 'reinforce' for the plain "
                "REINFORCE step (the same step when the log-probs are the policy's)."
            )
    algo = make_algo(run.config, run.module)
    batch = Episodes.stack([episodes])
    fast = algo.adapt([batch] * steps, run.params, lr_decay=run.config.test_lr_decay)
    return {k: v[0] for k, v in fast.items()}


def evaluation_tasks(env: gym.Env, n_tasks: int, seed: int) -> list[dict]:
    """Held-out tasks named by ``seed``, from a stream apart from training's (:mod:`metarl.seeding`)."""
    return env.unwrapped.sample_tasks(n_tasks, np.random.default_rng(eval_seed(seed)))


def evaluate_rl(
    cfg: RLConfig,
    learner_state: dict[str, Any],
    *,
    n_tasks: int,
    steps: int,
    seed: int,
    baselines: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Return after 0..steps adaptation steps on ``n_tasks`` fresh tasks, for MAML and baselines.

    Every policy meets the same tasks (drawn from the evaluated run's env) and is adapted with
    the evaluated run's inner loop, but runs in the env its own config makes: an oracle
    baseline (``env.oracle: true``, Finn et al. 2017 sec. 5.3) sees each task in its
    observations. A baseline must share the env id and ``env.kwargs`` (the reward).
    """
    from metarl.config import ConfigError, config_from_dict
    from metarl.fewshot.build import summarize

    env = make_env(cfg)
    tasks = evaluation_tasks(env, n_tasks, seed)
    seed = eval_seed(seed)  # sampler streams apart from training's too
    policy = policy_module(cfg, env)
    policy.load_state_dict(learner_state["model"])
    result = {"metric": "return", "by_step": summarize(adaptation_returns(cfg, policy, tasks, steps=steps, seed=seed))}
    out_baselines: dict[str, Any] = {}
    random_policy = seeded_policy(cfg, seed + 20_011, env)
    out_baselines["random"] = {
        "by_step": summarize(adaptation_returns(cfg, random_policy, tasks, steps=steps, seed=seed))
    }
    for name, state in baselines.items():
        bcfg = config_from_dict(state["config"])
        if bcfg.benchmark != "rl" or bcfg.env.id != cfg.env.id:
            raise ConfigError(f"--baseline {name}: its env {getattr(bcfg, 'env', None)} differs from {cfg.env.id}")
        if bcfg.env.kwargs != cfg.env.kwargs:
            raise ConfigError(f"--baseline {name}: its env.kwargs {bcfg.env.kwargs} differ from {cfg.env.kwargs}")
        # the baseline is adapted with the evaluated run's inner loop (same steps and lr)
        bcfg = config_from_dict({**state["config"], "inner": state["config"]["inner"] | {"lr": cfg.inner.lr},
                                 "test_lr_decay": cfg.test_lr_decay})
        benv = make_env(bcfg)
        try:
            bpolicy = policy_module(bcfg, benv)
        finally:
            benv.close()
        bpolicy.load_state_dict(state["learner"]["model"])
        curve = adaptation_returns(bcfg, bpolicy, tasks, steps=steps, seed=seed)
        out_baselines[name] = {"by_step": summarize(curve)}
    result["baselines"] = out_baselines
    env.close()
    return result
