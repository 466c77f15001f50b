"""The parts of a meta-RL run made from its config: env, policy, sampler, inner loop, algorithm.

Each meta-algorithm is registered once in :data:`ALGORITHMS` (``algorithm:`` in the config);
the sampler backends in :data:`SAMPLERS` (``sampler.backend``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import metarl.envs as envs  # registers the environments
from metarl.config import ConfigError, RLConfig
from metarl.maml import params_of
from metarl.rl.adapt import InnerLoop
from metarl.rl.baseline import AdvantageEstimator
from metarl.rl.fisher import make_fisher
from metarl.rl.generic_sampler import GenericSampler
from metarl.rl.maml_trpo import MAMLTRPO
from metarl.rl.objective import ActionBoxPenalty
from metarl.rl.policies import (
    LR_PREFIX,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    LatentGaussianPolicy,
    attach_inner_lr,
)
from metarl.rl.promp import ProMP
from metarl.rl.sampler import make_sampler
from metarl.trpo import TrustRegion


def env_kwargs(cfg: RLConfig) -> dict[str, Any]:
    """Keyword arguments of ``gymnasium.make`` for the run's env: ``env.kwargs``, plus ``oracle=True``
    with ``env.oracle`` (the task is then part of the observation, so the policy's input widens)."""
    kwargs = dict(cfg.env.kwargs)
    if cfg.env.oracle:
        kwargs["oracle"] = True
    return kwargs


def make_env(cfg: RLConfig) -> gym.Env:
    """One instance of the run's environment (spaces and task sampling), checked to follow the task
    protocol (:func:`metarl.envs.check_task_env`). An id Gymnasium does not know, a ``module:Id`` whose
    module cannot be imported, an env refusing ``oracle=True`` or one that does not follow the protocol
    is a :class:`ConfigError` (before any run directory is written)."""
    kwargs = env_kwargs(cfg)
    try:
        env = gym.make(cfg.env.id, **kwargs)
    except gym.error.Error as e:
        known = (f"; known ids: {', '.join(envs.ENV_IDS)} (`metarl envs` describes them), and any registered "
                 "id following metarl.envs.protocol ('module:Id' imports the module that registers it)")
        unknown = isinstance(e, gym.error.UnregisteredEnv) or "Malformed" in str(e)
        raise ConfigError(f"env.id: cannot make {cfg.env.id!r}: {e}{known if unknown else ''}") from None
    except ModuleNotFoundError as e:  # the module of a "module:Id" (gymnasium's message names it)
        raise ConfigError(f"env.id: cannot make {cfg.env.id!r}: {e}") from None
    except TypeError as e:
        if "oracle" in kwargs and "oracle" in str(e):
            raise ConfigError(f"env.oracle: {cfg.env.id} does not take oracle=True (the optional part of the task "
                              f"protocol, see metarl.envs.protocol): {e}") from None
        if not envs.is_builtin(cfg.env.id):
            raise  # a user's env: its own traceback says more than one line would
        # a built-in env refusing a keyword or its value (the message names both); Gymnasium's suffix repeats kwargs
        reason = str(e).split(" was raised from the environment creator")[0]
        raise ConfigError(f"env.kwargs: {reason}") from None
    try:
        envs.check_task_env(env)
    except envs.TaskProtocolError as e:
        env.close()
        raise ConfigError(f"env.id: {e}") from None
    return env


def policy_module(cfg: RLConfig, env: gym.Env | None = None) -> nn.Module:
    """The run's policy: Gaussian MLP for Box actions, categorical MLP for Discrete ones."""
    env = env if env is not None else make_env(cfg)
    obs_dim = int(np.prod(env.observation_space.shape))
    if isinstance(env.action_space, gym.spaces.Discrete):
        if cfg.policy.latent_dim:
            raise ConfigError(f"policy.latent_dim: {cfg.policy.latent_dim} is drawn as a Gaussian action, and "
                              f"{cfg.env.id} has discrete actions; set policy.latent_dim: 0")
        if cfg.explore_std != 1.0:
            raise ConfigError(f"explore_std: {cfg.explore_std} widens a Gaussian policy's std, and {cfg.env.id} has "
                              "discrete actions (a categorical policy); set explore_std: 1")
        policy: nn.Module = CategoricalMLPPolicy(
            obs_dim, int(env.action_space.n), cfg.policy.hidden, cfg.policy.activation
        )
    elif cfg.policy.latent_dim:
        policy = latent_policy(cfg, env, obs_dim)
    else:
        act_dim = int(np.prod(env.action_space.shape))
        policy = GaussianMLPPolicy(obs_dim, act_dim, cfg.policy.hidden, cfg.policy.activation, cfg.policy.init_std)
    if cfg.policy.init == "xavier":
        xavier_init(policy)
    if cfg.inner.learn_lr and ALGORITHMS[cfg.algorithm].adapts:
        attach_inner_lr(policy, cfg.inner.lr)
    return policy


def latent_policy(cfg: RLConfig, env: gym.Env, obs_dim: int) -> LatentGaussianPolicy:
    """The :class:`LatentGaussianPolicy` of ``policy.latent_dim`` > 0: its latent's mean scaled by the square root
    of the env's horizon times ``policy.latent_step``, its log-std by that of the horizon; a setting it cannot work
    with is a :class:`ConfigError`."""
    d = cfg.policy.latent_dim
    if not envs.is_builtin(cfg.env.id) or cfg.sampler.backend != "local":
        raise ConfigError(f"policy.latent_dim: {d} needs a built-in env and sampler.backend: local (got "
                          f"{cfg.env.id!r} on {cfg.sampler.backend!r}); set policy.latent_dim: 0")
    if cfg.action_box_penalty:
        raise ConfigError(f"policy.latent_dim: {d} and action_box_penalty: {cfg.action_box_penalty} cannot be "
                          "combined; set one of them to 0")
    horizon = env.spec.max_episode_steps if env.spec is not None else None
    act_dim = int(np.prod(env.action_space.shape))
    return LatentGaussianPolicy(obs_dim, act_dim, d, cfg.policy.hidden, cfg.policy.activation, cfg.policy.init_std,
                                scale=math.sqrt((horizon or 1) * cfg.policy.latent_step),
                                std_scale=math.sqrt(horizon or 1))


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` (Glorot & Bengio 2010): the
    mean action starts near 0 for every state instead of at a random offset."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def seeded_policy(cfg: RLConfig, seed: int, env: gym.Env | None = None) -> nn.Module:
    """:func:`policy_module` initialised from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return policy_module(cfg, env)


def inner_loop(cfg: RLConfig) -> InnerLoop:
    """The run's inner loop: one step of size ``inner.lr`` per pre-update batch."""
    return InnerLoop(lr=cfg.inner.lr, steps=1, estimator=cfg.inner_estimator, first_order=cfg.inner.first_order)


def test_step_sizes(cfg: RLConfig) -> dict[str, float]:
    """The test-time step-size keywords of :func:`metarl.rl.adapt.adapt_on_episodes` from the config
    (``test_lr_decay``, ``test_lr_after_first``): one place for every test-time adaptation."""
    return {"lr_decay": cfg.test_lr_decay, "lr_after_first": cfg.test_lr_after_first}


def advantage_estimator(cfg: RLConfig) -> AdvantageEstimator:
    return AdvantageEstimator(cfg.gamma, cfg.gae_lambda, cfg.normalize_advantages)


def training_tasks(cfg: RLConfig, env: gym.Env) -> Callable[[int, np.random.Generator], list[dict]]:
    """How training draws a meta-batch's tasks: the env's own distribution, or, with ``train_goal_skew`` k > 0,
    goal velocities with density proportional to ``(v - low) ** k``. Validation and evaluation always draw from
    the env's own. ``train_goal_skew`` on an env without goal velocities is a :class:`ConfigError`."""
    if cfg.train_goal_skew == 0:
        return env.unwrapped.sample_tasks
    space = getattr(env.unwrapped, "task_space", None)
    if not isinstance(space, envs.tasks.VelocityTasks):
        raise ConfigError(f"train_goal_skew: {cfg.train_goal_skew} skews goal velocities, and {cfg.env.id} has "
                          f"no velocity tasks; set train_goal_skew: 0")
    return functools.partial(space.sample, skew=cfg.train_goal_skew)


# ---------------------------------------------------------------------------- algorithms
def action_box_penalty(cfg: RLConfig, env: gym.Env | None = None) -> ActionBoxPenalty | None:
    """The run's :class:`ActionBoxPenalty` (``action_box_penalty`` > 0) on the env's action box; ``None``
    when off. An env whose actions are not a bounded Box is a :class:`ConfigError`."""
    if cfg.action_box_penalty == 0:
        return None
    space = (env if env is not None else make_env(cfg)).action_space
    if not isinstance(space, gym.spaces.Box) or not space.is_bounded():
        raise ConfigError(f"action_box_penalty: {cfg.action_box_penalty} needs bounded Box actions, and {cfg.env.id} "
                          f"has {space}; set action_box_penalty: 0")
    low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(-1) for b in (space.low, space.high))
    return ActionBoxPenalty(low, high, cfg.action_box_penalty)


def _maml_trpo(cfg: RLConfig, policy: nn.Module, inner_batches: int, env: gym.Env | None = None) -> MAMLTRPO:
    learned_lr = any(k.startswith(LR_PREFIX) for k in params_of(policy))
    t = cfg.trpo
    factorable = (inner_batches == 1 and not cfg.inner.first_order and not learned_lr
                  and getattr(policy, "stacked", None) is not None)
    return MAMLTRPO(
        policy, inner=inner_loop(cfg), inner_batches=inner_batches, advantages=advantage_estimator(cfg),
        trust_region=TrustRegion(t.max_kl, t.cg_iters, t.cg_damping, t.ls_ratio, t.ls_max_steps, t.ls_rescale),
        fisher=_fisher(cfg, factorable, learned_lr),
        task_chunk=t.task_chunk, penalty=action_box_penalty(cfg, env),
    )


def _fisher(cfg: RLConfig, factorable: bool, learned_lr: bool) -> Any:
    t = cfg.trpo
    try:
        return make_fisher(t.fisher, factorable=factorable, learned_lr=learned_lr, tasks=t.fisher_tasks,
                           episodes=t.fisher_episodes, seed=cfg.seed)
    except ValueError as e:  # a config that cannot work: said before any sampling
        raise ConfigError(str(e)) from None


def _promp(cfg: RLConfig, policy: nn.Module, inner_batches: int, env: gym.Env | None = None) -> ProMP:
    p = cfg.promp
    return ProMP(
        policy, inner=inner_loop(cfg), inner_batches=inner_batches, advantages=advantage_estimator(cfg),
        lr=p.lr, steps=p.steps, clip_eps=p.clip_eps, kl_coeff=p.kl_coeff, target_kl=p.target_kl,
        adaptive_kl=p.adaptive_kl, task_chunk=cfg.trpo.task_chunk, penalty=action_box_penalty(cfg, env),
    )


class Algorithm(NamedTuple):
    """A registered meta-algorithm: its factory ``(cfg, policy, inner_batches, env) -> algo`` and whether
    it adapts (a run that does not, the pretrained baseline, is judged by its return before adapting)."""

    build: Callable[[RLConfig, nn.Module, int, gym.Env | None], Any]
    adapts: bool


ALGORITHMS: dict[str, Algorithm] = {
    "maml": Algorithm(_maml_trpo, adapts=True),
    "promp": Algorithm(_promp, adapts=True),
    "pretrain": Algorithm(_maml_trpo, adapts=False),
}


def make_algorithm(cfg: RLConfig, policy: nn.Module, env: gym.Env | None = None) -> Any:
    """The run's meta-algorithm on ``policy``, with ``inner.steps`` pre-update batches (0 if it does not adapt);
    ``env`` (the run's, made from ``cfg`` when not given and needed) gives the action box."""
    spec = ALGORITHMS[cfg.algorithm]
    return spec.build(cfg, policy, cfg.inner.steps if spec.adapts else 0, env)


# ---------------------------------------------------------------------------- samplers
def _ray_sampler(cfg: RLConfig, seed: int) -> Any:
    """Ray actors sampling a share of the tasks each: a built-in id's fast envs, or any other id's Gymnasium
    envs (the generic sampler's), with the local backend's episodes."""
    from metarl.rl.ray_sampler import RaySampler  # the optional Ray extra, imported only here

    try:
        return RaySampler(cfg.env.id, episodes_per_task=cfg.env.episodes_per_task,
                          num_workers=cfg.sampler.num_workers, seed=seed, env_kwargs=env_kwargs(cfg),
                          address=cfg.sampler.address, start_timeout=cfg.sampler.start_timeout)
    except (ValueError, envs.TaskProtocolError) as e:  # no time limit, or not the protocol
        raise ConfigError(f"env.id: {e}") from None


def _local_sampler(cfg: RLConfig, seed: int) -> Any:
    """The fast batched sampler for a built-in id, the generic one (one Gymnasium env per episode)
    for any other id following the task protocol."""
    if not envs.is_builtin(cfg.env.id):
        try:
            return GenericSampler(cfg.env.id, episodes_per_task=cfg.env.episodes_per_task,
                                  num_workers=cfg.sampler.num_workers, seed=seed, env_kwargs=env_kwargs(cfg))
        except (ValueError, envs.TaskProtocolError) as e:  # no time limit, or not the protocol
            raise ConfigError(f"env.id: {e}") from None
    return make_sampler(cfg.env.id, episodes_per_task=cfg.env.episodes_per_task,
                        num_workers=cfg.sampler.num_workers or None, seed=seed, env_kwargs=env_kwargs(cfg),
                        latent_dim=cfg.policy.latent_dim)


#: ``sampler.backend`` -> ``(cfg, seed) -> sampler``; both give the same episodes for the same seed.
SAMPLERS: dict[str, Callable[[RLConfig, int], Any]] = {"local": _local_sampler, "ray": _ray_sampler}


def sampler_for(cfg: RLConfig, seed: int) -> Any:
    """The run's sampler, its streams seeded with ``seed``."""
    return SAMPLERS[cfg.sampler.backend](cfg, seed)
