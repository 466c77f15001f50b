"""``metarl.load``: a trained run as a few plain functions, for notebooks and scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.checkpoint import load_checkpoint, load_weights
from metarl.config import CommonConfig, config_from_dict
from metarl.families import family_of
from metarl.maml import LearningRate, Params, detach_params, functional_forward


@dataclass
class Run:
    """A loaded run: its module, meta-learned parameters, config and test-time inner loop."""

    module: nn.Module
    params: Params
    config: CommonConfig
    lr: LearningRate
    iteration: int

    def transform(self, raw: Any) -> torch.Tensor:
        """The run's input preprocessing (identity for sinusoids; image runs: to 28x28/84x84 tensors)."""
        return family_of(self.config).transform(self.config, raw)

    def adapt(self, *data: Any, steps: int | None = None) -> Params:
        """Params after the run's test-time inner loop: ``adapt(x_support, y_support)`` for supervised
        runs, ``adapt(episodes)`` (pre-update ``Episodes``) for RL runs.

        Supervised inputs may be numpy arrays or tensors of any real dtype (converted to float32):
        regression takes ``x [K, d]`` and ``y [K, 1]`` (a ``y [K]`` is refused: it would broadcast
        silently), classification ``x [K, C, H, W]`` (``transform``'s output) and integer labels
        ``y [K]``; other shapes raise a ValueError naming the expected one."""
        steps = self.config.inner.test_steps if steps is None else steps
        return family_of(self.config).adapt(self, *data, steps=steps)

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Outputs (regression) or logits (classification) of the model with ``params``."""
        if not isinstance(x, torch.Tensor) or x.dtype == torch.float64:
            x = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            return functional_forward(self.module, params, x)

    def adapt_to(self, task: dict[str, Any], steps: int | None = None, seed: int = 0) -> list[Params]:
        """RL runs: params after 0..``steps`` steps (default ``inner.test_steps``) of the run's inner loop
        on ``task`` (e.g. ``{"goal": (0.3, -0.2)}``), resampling its own episodes after each step with a
        sampler built from the run's config (streams named by ``seed``); the task space is checked."""
        from metarl.rl.watch import adapt_to

        return adapt_to(self, task, steps=steps, seed=seed).params

    def act(self, params: Params, obs: Any, deterministic: bool = False) -> Any:
        """RL runs: a numpy action for the numpy ``obs``: the mean/mode if ``deterministic``, else a sample."""
        from metarl.rl.watch import act

        return act(self.module, params, obs, deterministic=deterministic)

    def policy(self, params: Params | None = None, deterministic: bool = True) -> Any:
        """RL runs: ``policy(obs) -> action`` (numpy in and out) for a plain Gymnasium loop, with
        ``params`` (default the meta-learned ones); ``policy.distribution(obs)`` is the action distribution."""
        from metarl.rl.watch import PolicyFn

        return PolicyFn(self.module, self.params if params is None else params, deterministic)


def load(path: str | Path) -> Run:
    """Load a run directory (its ``checkpoints/last.pt``), a ``.pt`` checkpoint file, or a weights-only
    ``.safetensors`` export (``checkpoints/last.safetensors``; nothing is unpickled: safe for others' files)."""
    if Path(path).suffix == ".safetensors":
        model, lr_params, iteration, config = load_weights(path)
        state = {"config": config, "iteration": iteration, "learner": {"model": model, "lr_params": lr_params}}
    else:
        state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    learner = state["learner"]
    module = family_of(cfg).module(cfg)
    module.load_state_dict(learner["model"])
    module.eval()
    lr: LearningRate = cfg.inner.lr
    if learner.get("lr_params") is not None:
        lr = {k.replace("-", "."): v.detach() for k, v in learner["lr_params"].items()}
    return Run(module, detach_params(dict(module.named_parameters())), cfg, lr, int(state["iteration"]))
