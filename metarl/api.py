"""``metarl.load``: a trained run as a few plain functions, for notebooks and scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.checkpoint import load_checkpoint
from metarl.config import CommonConfig, config_from_dict
from metarl.maml import LearningRate, Params, adapt, detach_params, functional_forward


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
        if self.config.benchmark == "classification":
            from metarl.fewshot.datasets import transform_images

            return transform_images(self.config, raw)
        return torch.as_tensor(raw, dtype=torch.float32)

    def adapt(self, *data: Any, steps: int | None = None) -> Params:
        """Params after the run's test-time inner loop: ``adapt(x_support, y_support)`` for supervised
        runs, ``adapt(episodes)`` (pre-update ``Episodes``) for RL runs."""
        steps = self.config.inner.test_steps if steps is None else steps
        if self.config.benchmark == "rl":
            from metarl.rl.build import adapt_policy

            return adapt_policy(self, data[0], steps=steps)
        from metarl.fewshot.learner import make_loss

        loss = make_loss(self.module, "mse" if self.config.benchmark == "sinusoid" else "ce")
        return adapt(loss, self.params, (data[0], data[1]), lr=self.lr, steps=steps, first_order=True)

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Outputs (regression) or logits (classification) of the model with ``params``."""
        with torch.no_grad():
            return functional_forward(self.module, params, x)

    def policy(self, params: Params | None = None) -> Any:
        """RL runs: a callable ``obs -> torch.distributions.Distribution`` for ``params``."""
        p = self.params if params is None else params
        return lambda obs: functional_forward(self.module, p, torch.as_tensor(obs, dtype=torch.float32))


def load(path: str | Path) -> Run:
    """Load a run directory (its ``checkpoints/last.pt``) or a checkpoint file."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    learner = state["learner"]
    if cfg.benchmark == "rl":
        from metarl.rl.build import policy_module

        module = policy_module(cfg)
    else:
        from metarl.fewshot.build import module_factory

        module = module_factory(cfg)()
    module.load_state_dict(learner["model"])
    module.eval()
    lr: LearningRate = cfg.inner.lr
    if learner.get("lr_params") is not None:
        lr = {k.replace("-", "."): v.detach() for k, v in learner["lr_params"].items()}
    return Run(module, detach_params(dict(module.named_parameters())), cfg, lr, int(state["iteration"]))
