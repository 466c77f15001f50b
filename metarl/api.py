"""``metarl.load``: a trained run as a few plain functions; ``metarl.train``: a run from Python, with a task
family of one's own passed as objects. For notebooks and scripts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.checkpoint import load_checkpoint, load_weights
from metarl.config import CommonConfig, _merge, config_from_dict, config_path, config_to_dict, read_config_data
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
        runs, ``adapt(episodes)`` (pre-update ``Episodes``) for RL runs. An RL run trained with
        ``explore_std: c`` learned from pre-update episodes sampled with its std times c:
        ``run.policy(metarl.rl.policies.widened(run.params, c), deterministic=False)`` samples them.

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
        ``params`` (default the meta-learned ones); ``policy.distribution(obs)`` is the action distribution.
        A run with a per-episode latent (``policy.latent_dim``) draws it at the first call: call
        ``policy.reset()`` at the start of every further episode."""
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


#: Config keys that :func:`train` also takes as the object itself (recorded as ``"module:qualname"``).
OBJECT_KEYS = ("tasks", "model")


def _config_data(config: CommonConfig | Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """The keys of ``config``: a config object, a mapping, or a YAML file / shipped config name."""
    if config is None:
        return {}
    if isinstance(config, CommonConfig):
        return config_to_dict(config)
    if isinstance(config, Mapping):
        return dict(config)
    return read_config_data(config_path(config))


def train(
    config: CommonConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    logdir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    time_limit_s: float | None = None,
    **keys: Any,
) -> Path:
    """Meta-train as ``metarl train`` does and return the run directory (``config.yaml``, TensorBoard
    events, ``metrics.csv``, ``checkpoints/``), which ``metarl.load`` and ``metarl evaluate`` read.

    ``config`` is a config object, a mapping of keys, or a YAML file / shipped config name; ``keys`` are
    config keys on top of it (a section given as a mapping merges key by key). ``tasks`` and ``model``
    may be the task distribution class (or factory) and the model factory themselves: config.yaml
    records them as ``"module:qualname"``, so they must import again in a fresh process (a lambda, a
    local or an object of a script run as ``python script.py`` is refused with a ValueError). Given
    ``tasks``, the benchmark is ``custom`` unless set. Everything is checked (the tasks' ``sample``, the
    batch shapes, the model's outputs) before the run directory is created. ``resume=RUN_DIR`` continues
    a run, ``keys`` then override its saved config.

    Example::

        run_dir = metarl.train(tasks=Quadratics, model=make_mlp, loss="mse", num_iterations=500,
                               inner={"lr": 0.01}, logdir="runs/quadratics")
    """
    from metarl.fewshot.custom import reference_of
    from metarl.training import train as train_run

    keys = {k: reference_of(v, k) if k in OBJECT_KEYS and not isinstance(v, str) else v for k, v in keys.items()}
    if resume is not None:
        if config is not None:
            raise ValueError("metarl.train: resume continues a run with its saved config; pass keys to change "
                             "some of it, not a config")
        return train_run(resume=resume, overrides=list(keys.items()), quiet=quiet, time_limit_s=time_limit_s)
    data = _merge(_config_data(config), keys)
    if "tasks" in keys and "benchmark" not in data:
        data["benchmark"] = "custom"
    return train_run(config_from_dict(data), logdir=logdir, overwrite=overwrite, quiet=quiet,
                     time_limit_s=time_limit_s)
