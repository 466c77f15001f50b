"""The meta-RL training driver behind ``metarl train``: sample, adapt, meta-step, validate.

One meta-iteration (Finn et al. 2017, Algorithm 3): draw ``meta_batch_size`` tasks; for each
inner step sample pre-update episodes with the current (per-task) parameters and adapt;
sample post-update episodes with the adapted policies; take one meta-step of the run's
algorithm (:data:`metarl.rl.build.ALGORITHMS`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import gymnasium
import numpy as np
import torch

from metarl.checkpoint import rng_state, set_rng_state
from metarl.config import RLConfig
from metarl.maml import Params, detach_params, params_of
from metarl.rl.adapt import adapt_on_episodes
from metarl.rl.build import ALGORITHMS, make_algorithm, make_env, sampler_for, seeded_policy, training_tasks
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import adaptation_returns
from metarl.rl.losses import box_saturation
from metarl.rl.policies import GaussianMLPPolicy, widened
from metarl.seeding import validation_seed


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


def update_average(average: dict[str, torch.Tensor], theta: Mapping[str, torch.Tensor], decay: float) -> None:
    """``average <- decay * average + (1 - decay) * theta`` in place, for the floating-point entries (the
    others are copied): the ``ema`` of :class:`RLLearner`."""
    for k, v in theta.items():
        if v.is_floating_point():
            average[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
        else:
            average[k].copy_(v)


def success_metrics(prefix: str, pre: Episodes, post: Episodes) -> dict[str, float]:
    """``{prefix}/success_pre`` and ``{prefix}/success_post``: the fraction of episodes that succeeded before
    and after adapting, where the env reports ``info["success"]`` (Meta-World); empty otherwise."""
    rates = {"pre": pre.success_rate(), "post": post.success_rate()}
    return {f"{prefix}/success_{k}": v for k, v in rates.items() if v is not None}


def _gaussian_box(env: Any, policy: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The env's action box for ``train/mean_outside_box``: a Gaussian policy on bounded ``Box`` actions."""
    space = env.action_space
    if not isinstance(policy, GaussianMLPPolicy) or not isinstance(space, gymnasium.spaces.Box):
        return None
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        return None
    return torch.as_tensor(space.low, dtype=torch.float32), torch.as_tensor(space.high, dtype=torch.float32)


class RLLearner:
    """Meta-trains a policy with the run's meta-algorithm.

    Best checkpoint: by the mean return after ``inner.steps`` adaptation steps on ``eval.tasks``
    fixed validation tasks (drawn from a stream apart from training's and from ``metarl
    evaluate``'s, and sampled with the same seeds at every validation, so successive values
    differ by the policy only), checked every ``eval.every`` iterations. Validation samples on
    the training sampler's own workers. A run that does not adapt (the pretrained and oracle
    baselines) is judged by its return before adaptation.

    With ``ema > 0`` the learner also keeps an exponential moving average of the meta-parameters
    (Polyak averaging of the iterates), updated after every meta-step. Validation, ``best.pt`` and
    everything that reads a checkpoint's ``model`` (``metarl evaluate``, ``metarl watch``, the
    ``.safetensors`` export, ``metarl.load``) get the average; training goes on from the last
    iterate, kept as ``model_train``, so the sampled episodes and meta-steps are the same as
    without it.
    """

    best_mode = "max"

    def __init__(self, cfg: RLConfig) -> None:
        self.cfg = cfg
        self.best_key = "val/return_post" if ALGORITHMS[cfg.algorithm].adapts else "val/return_pre"
        self.env = make_env(cfg)
        self.device = torch.device(cfg.device)
        self.module = seeded_policy(cfg, cfg.seed, self.env).to(self.device)
        self.algo = make_algorithm(cfg, self.module, self.env)
        self.sample_tasks = training_tasks(cfg, self.env)
        self.sampler = sampler_for(cfg, cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # kept for symmetry of RNG state
        self._val_tasks: list[dict] | None = None
        self.env_steps = 0  # environment steps sampled for training so far (the samples axis of a curve)
        self.average: dict[str, torch.Tensor] | None = None  # the meta-parameters' average (cfg.ema > 0)
        self._box = _gaussian_box(self.env, self.module)  # train/mean_outside_box, where it applies

    def _threads(self) -> contextlib.AbstractContextManager[None]:
        return torch_threads(self.cfg.update_threads or os.cpu_count() or 1)  # the physics waits

    def _sample(self, params: Params, tasks: list[dict], per_task: bool) -> Episodes:
        """Sampling runs on the CPU (parameters cross once per call); the episodes go to the
        device of the meta-update (``--device cuda``)."""
        cpu = {k: v.detach().cpu() for k, v in params.items()}
        return Episodes.stack(self.sampler.sample(self.module, cpu, tasks, per_task=per_task)).to(self.device)

    def sample_adapted(self, tasks: list[dict]) -> tuple[list[Episodes], Episodes]:
        """Pre-update episodes for each inner step (the first with the std times ``explore_std``), then
        post-update episodes of the adapted policies."""
        theta = detach_params(params_of(self.module))
        train: list[Episodes] = []
        params, per_task = theta, False
        for _ in range(self.algo.inner_batches):
            train.append(self._sample(params if per_task else widened(params, self.cfg.explore_std), tasks, per_task))
            with self._threads():
                params = adapt_on_episodes(self.module, theta, train, self.algo.inner, self.algo.advantages)
            per_task = True
        return train, self._sample(params, tasks, per_task)

    def train_step(self, iteration: int, log: bool) -> dict[str, float]:
        tasks = self.sample_tasks(self.cfg.meta_batch_size, self.np_rng)
        t0 = time.perf_counter()
        train, valid = self.sample_adapted(tasks)
        t1 = time.perf_counter()
        saturation = self._box is not None and bool(train)
        theta = {k: v.detach().clone() for k, v in params_of(self.module).items()} if saturation else {}
        with self._threads():
            metrics = dict(self.algo.step(train, valid))
        self._update_average()
        t2 = time.perf_counter()
        if saturation:  # on theta, the sampling policy, before the update changed it
            with torch.no_grad(), self._threads():
                metrics["mean_outside_box"] = float(box_saturation(self.module, theta, train[0], *self._box))
        steps = sum(float(e.masks.sum()) for e in [*train, valid])
        self.env_steps += int(steps)
        ns = {"inner_loss": "train", "adapt_kl": "train", "entropy": "train", "logp_gap": "train",
              "mean_outside_box": "train"}
        out = {f"{ns.get(k, self.algo.namespace)}/{k}": float(v) for k, v in metrics.items()}
        out["train/return_post"] = float(valid.returns().mean())
        out["train/return_pre"] = float(train[0].returns().mean()) if train else out["train/return_post"]
        out["time/sample_s"] = t1 - t0
        out["time/update_s"] = t2 - t1
        out["time/env_steps_per_s"] = steps / max(t1 - t0, 1e-9)
        out["train/env_steps"] = float(self.env_steps)
        out["train/episode_length"] = float(valid.masks.sum(-2).mean())
        out.update(success_metrics("train", train[0] if train else valid, valid))
        return out

    def _update_average(self) -> None:
        """``average <- ema * average + (1 - ema) * theta`` (the first step starts it at theta)."""
        if not self.cfg.ema:
            return
        theta = self.module.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in theta.items()}
        else:
            update_average(self.average, theta, self.cfg.ema)

    def evaluated_policy(self) -> torch.nn.Module:
        """The policy that validation scores, on the CPU: the average of the meta-parameters when one is
        kept, else the module itself."""
        if self.average is None:
            return self.module if self.device.type == "cpu" else copy.deepcopy(self.module).cpu()
        policy = copy.deepcopy(self.module).cpu()
        policy.load_state_dict(self.average)
        return policy

    def validate(self) -> dict[str, float]:
        """``val/return_pre`` and ``val/return_post``: mean return on the validation tasks before
        and after ``inner.steps`` steps (resampling after each), on the training sampler; and
        ``val/success_pre`` / ``val/success_post`` where the env reports success (Meta-World)."""
        seed = validation_seed(self.cfg.seed)
        if self._val_tasks is None:
            self._val_tasks = self.env.unwrapped.sample_tasks(self.cfg.eval.tasks, np.random.default_rng(seed))
        episodes: list[Episodes] = []
        returns = adaptation_returns(self.cfg, self.evaluated_policy(), self._val_tasks, steps=self.cfg.inner.steps,
                                     sampler=self.sampler, seed=seed, episodes_out=episodes)
        means = returns.mean(-1)
        out = {"val/return_pre": float(means[0]), "val/return_post": float(means[-1])}
        return out | success_metrics("val", episodes[0], episodes[-1])

    def state_dict(self) -> dict[str, Any]:
        """``model`` is the policy to use (the average when one is kept; then ``model_train`` is the
        last iterate, which training resumes from)."""
        models = {"model": self.module.state_dict()}
        if self.average is not None:
            models = {"model": self.average, "model_train": self.module.state_dict()}
        return {
            **models,
            "rng": rng_state(self.generator, self.np_rng),
            "sampler": self.sampler.state_dict(),
            "algorithm": self.algo.state_dict(),
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        averaged = state.get("model_train") is not None
        self.module.load_state_dict(state["model_train"] if averaged else state["model"])
        # an average goes on only while ema is on (a resume with --set ema=0 drops it)
        self.average = ({k: v.detach().to(self.device, copy=True) for k, v in state["model"].items()}
                        if averaged and self.cfg.ema else None)
        set_rng_state(state["rng"], self.generator, self.np_rng)
        algo_state = state.get("algorithm") or {"fisher_rng": state.get("fisher_rng")}  # older checkpoints
        self.algo.load_state_dict(algo_state)
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.env_steps = int(state.get("env_steps", 0))

    def close(self) -> None:
        self.sampler.close()
        self.env.close()
