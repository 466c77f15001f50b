"""Builds the supervised benchmarks (sinusoid, classification) from their configs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metarl.config import ClassificationConfig, SinusoidConfig
from metarl.fewshot.learner import SupervisedMAML, adaptation_curve
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.fewshot.tasks import TaskBatch
from metarl.nets import mlp
from metarl.seeding import eval_seed

#: Offsets that give each random stream of a run its own seed.
VAL_SEED_OFFSET = 10_007
BASELINE_SEED_OFFSET = 20_011


def seeded_module(factory: Any, seed: int) -> nn.Module:
    """Build a module with its initialisation drawn from ``seed`` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


# ---------------------------------------------------------------------------- sinusoid
def sinusoid_module(cfg: SinusoidConfig) -> nn.Module:
    """The paper's regressor: MLP 1-40-40-1 with ReLU by default."""
    return mlp([1, *cfg.model.hidden, 1], cfg.model.activation)


def sinusoid_tasks(cfg: SinusoidConfig) -> SinusoidTasks:
    t = cfg.task
    return SinusoidTasks(tuple(t.amplitude), tuple(t.phase), tuple(t.x_range), t.shots, t.query)


def build_sinusoid(cfg: SinusoidConfig) -> SupervisedMAML:
    tasks = sinusoid_tasks(cfg)
    val = tasks.sample(cfg.eval.tasks, torch.Generator().manual_seed(cfg.seed + VAL_SEED_OFFSET))
    module = seeded_module(lambda: sinusoid_module(cfg), cfg.seed)
    return SupervisedMAML(
        module, tasks, val, loss="mse", meta_batch_size=cfg.meta_batch_size,
        inner_lr=cfg.inner.lr, inner_steps=cfg.inner.steps, first_order=cfg.inner.first_order,
        learn_lr=cfg.inner.learn_lr, outer_lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip,
        seed=cfg.seed, device=cfg.device, algorithm=cfg.algorithm,
    )


# ---------------------------------------------------------------------------- classification
def classification_parts(cfg: ClassificationConfig) -> tuple[Any, Any, Any, Any]:
    """(module factory, train distribution, validation distribution, test distribution)."""
    from metarl.fewshot.datasets import classification_parts as parts

    return parts(cfg)


def build_classification(cfg: ClassificationConfig) -> SupervisedMAML:
    factory, train, val, _ = classification_parts(cfg)
    val_batch = val.sample(cfg.eval.tasks, torch.Generator().manual_seed(cfg.seed + VAL_SEED_OFFSET))
    module = seeded_module(factory, cfg.seed)
    return SupervisedMAML(
        module, train, val_batch, loss="ce", meta_batch_size=cfg.meta_batch_size,
        inner_lr=cfg.inner.lr, inner_steps=cfg.inner.steps, first_order=cfg.inner.first_order,
        learn_lr=cfg.inner.learn_lr, outer_lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip,
        seed=cfg.seed, device=cfg.device, task_chunk=cfg.task_chunk,
    )


# ---------------------------------------------------------------------------- evaluation
def summarize(curve: torch.Tensor) -> list[dict[str, float]]:
    """Mean and 95% confidence half-width (1.96 standard errors) per step of a ``[K+1, N]`` curve."""
    n = curve.shape[1]
    std = curve.std(dim=1, unbiased=True) if n > 1 else torch.zeros(curve.shape[0])
    return [
        {"step": k, "mean": float(curve[k].mean()), "ci95": float(1.96 * std[k] / n**0.5)}
        for k in range(curve.shape[0])
    ]


def test_batch(cfg: Any, n_tasks: int, seed: int, shots: int | None) -> TaskBatch:
    """Fresh held-out tasks for evaluation, fixed by ``seed`` so evaluations are comparable
    (drawn from a stream apart from training's, see :mod:`metarl.seeding`)."""
    g = torch.Generator().manual_seed(eval_seed(seed))
    if cfg.benchmark == "sinusoid":
        return sinusoid_tasks(cfg).sample(n_tasks, g, shots=shots)
    _, _, _, test = classification_parts(cfg)
    return test.sample(n_tasks, g)


def module_factory(cfg: Any) -> Any:
    if cfg.benchmark == "sinusoid":
        return lambda: sinusoid_module(cfg)
    return classification_parts(cfg)[0]


def train_pretrained_baseline(cfg: SinusoidConfig, iterations: int) -> nn.Module:
    """The paper's pretrained baseline: one network regressed on all tasks jointly (Adam)."""
    base = SinusoidConfig(**{**cfg.__dict__, "algorithm": "pretrain", "seed": cfg.seed + BASELINE_SEED_OFFSET})
    learner = build_sinusoid(base)
    for it in range(iterations):
        learner.train_step(it, log=False)
    return learner.module


def evaluate_supervised(
    cfg: Any,
    learner_state: dict[str, Any],
    *,
    n_tasks: int,
    steps: int,
    seed: int,
    shots: int | None,
    baselines: dict[str, dict[str, Any]],
    pretrain_iterations: int,
) -> dict[str, Any]:
    """The DESIGN.md evaluation: MAML's curve and the baselines', each adapted with the same steps and lr."""
    loss = "mse" if cfg.benchmark == "sinusoid" else "ce"
    factory = module_factory(cfg)
    batch = test_batch(cfg, n_tasks, seed, shots)

    def curve_of(module: nn.Module, lr: Any) -> list[dict[str, float]]:
        c = adaptation_curve(module, dict(module.named_parameters()), batch, loss=loss, lr=lr, steps=steps)
        return summarize(c)

    model = factory()
    model.load_state_dict(learner_state["model"])
    lr: Any = cfg.inner.lr
    if learner_state.get("lr_params") is not None:
        lr = {k.replace("-", "."): v for k, v in learner_state["lr_params"].items()}
    out_baselines: dict[str, Any] = {}
    random_model = seeded_module(factory, seed + BASELINE_SEED_OFFSET)
    out_baselines["random"] = {"by_step": curve_of(random_model, cfg.inner.lr)}
    for name, state in baselines.items():
        m = factory()
        m.load_state_dict(state["learner"]["model"])
        out_baselines[name] = {"by_step": curve_of(m, cfg.inner.lr)}
    if cfg.benchmark == "sinusoid" and "pretrained" not in baselines and pretrain_iterations > 0:
        m = train_pretrained_baseline(cfg, pretrain_iterations)
        out_baselines["pretrained"] = {"by_step": curve_of(m, cfg.inner.lr), "iterations": pretrain_iterations}
    return {
        "metric": "mse" if loss == "mse" else "accuracy",
        "by_step": curve_of(model, lr),
        "baselines": out_baselines,
        "shots": shots if shots is not None else (cfg.task.shots if cfg.benchmark == "sinusoid" else cfg.dataset.shots),
    }
