"""Builds the supervised benchmarks (sinusoid, classification) from their configs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.config import ClassificationConfig, ConfigError, SinusoidConfig
from metarl.evaluate import summarize
from metarl.families import Family, as_float_tensor, family_of
from metarl.fewshot.learner import SupervisedMAML, adaptation_curve, inner_lr, inner_plan, make_loss
from metarl.fewshot.reptile import build_reptile
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import LearningRate, Params, StepRates, adapt
from metarl.nets import mlp
from metarl.progress import progress
from metarl.seeding import eval_seed, validation_seed

#: Offset that gives the baselines' random streams their own seed (validation tasks are drawn from
#: :func:`metarl.seeding.validation_seed`, as the RL side's are).
BASELINE_SEED_OFFSET = 20_011


#: The sinusoid ``algorithm`` choices and whether each adapts (``pretrain``: the paper's joint
#: regression baseline).
ADAPTS: dict[str, bool] = {"maml": True, "pretrain": False}
#: The supervised ``algorithm`` choices with a learner of their own (the others are SupervisedMAML):
#: name -> ``(cfg, module, tasks, val_batch, loss) -> learner``.
OWN_LEARNERS: dict[str, Callable[..., Any]] = {"reptile": build_reptile}


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


def variant_kwargs(cfg: SinusoidConfig | ClassificationConfig) -> dict[str, Any]:
    """The learner's MAML++ and ANIL arguments from ``cfg.mamlpp``, ``cfg.anil`` and ``cfg.optim`` (all off: MAML)."""
    m = cfg.mamlpp
    return {"anil": cfg.anil, "lslr": m.lslr, "msl_iterations": m.msl_iterations, "da_iterations": m.da_iterations,
            "cosine_iterations": cfg.num_iterations if cfg.optim.cosine else 0, "min_lr": cfg.optim.min_lr,
            "rates_lr_scale": m.rates_lr_scale}


def run_inner(cfg: Any, learned: Any) -> tuple[LearningRate | StepRates, bool]:
    """A run's (inner lr, anil) from its config and its learned rates (``lr_params``; None or a float: none
    learned, that float or ``inner.lr``); a config without the MAML++ / ANIL keys adapts as MAML. What
    evaluation and ``run.adapt`` use, as training does."""
    mamlpp = getattr(cfg, "mamlpp", None)
    default = learned if isinstance(learned, float) else cfg.inner.lr
    learned = None if isinstance(learned, float) else learned
    return inner_lr(default, learned, bool(mamlpp and mamlpp.lslr)), bool(getattr(cfg, "anil", False))


def build_sinusoid(cfg: SinusoidConfig) -> SupervisedMAML:
    if cfg.mamlpp.bn_per_step:
        raise ConfigError("mamlpp.bn_per_step: the sinusoid MLP has no batch norm; set it false")
    tasks = sinusoid_tasks(cfg)
    val = tasks.sample(cfg.eval.tasks, torch.Generator().manual_seed(validation_seed(cfg.seed)))
    module = seeded_module(lambda: sinusoid_module(cfg), cfg.seed)
    if cfg.algorithm in OWN_LEARNERS:
        return OWN_LEARNERS[cfg.algorithm](cfg, module, tasks, val, "mse")
    return SupervisedMAML(
        module, tasks, val, loss="mse", meta_batch_size=cfg.meta_batch_size,
        inner_lr=cfg.inner.lr, inner_steps=cfg.inner.steps, first_order=cfg.inner.first_order,
        learn_lr=cfg.inner.learn_lr, outer_lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip,
        seed=cfg.seed, device=cfg.device, adapts=ADAPTS[cfg.algorithm], checkpoint=cfg.inner.checkpoint,
        **variant_kwargs(cfg),
    )


# ---------------------------------------------------------------------------- classification
def classification_parts(cfg: ClassificationConfig) -> tuple[Any, Any, Any, Any]:
    """(module factory, train distribution, validation distribution, test distribution)."""
    from metarl.fewshot.datasets import classification_parts as parts

    return parts(cfg)


def build_classification(cfg: ClassificationConfig) -> SupervisedMAML:
    factory, train, val, _ = classification_parts(cfg)
    val_batch = val.sample(cfg.eval.tasks, torch.Generator().manual_seed(validation_seed(cfg.seed)))
    module = seeded_module(factory, cfg.seed)
    if cfg.algorithm in OWN_LEARNERS:
        return OWN_LEARNERS[cfg.algorithm](cfg, module, train, val_batch, "ce")
    return SupervisedMAML(
        module, train, val_batch, loss="ce", meta_batch_size=cfg.meta_batch_size,
        inner_lr=cfg.inner.lr, inner_steps=cfg.inner.steps, first_order=cfg.inner.first_order,
        learn_lr=cfg.inner.learn_lr, outer_lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip,
        seed=cfg.seed, device=cfg.device, task_chunk=cfg.task_chunk, checkpoint=cfg.inner.checkpoint,
        **variant_kwargs(cfg),
    )


# ---------------------------------------------------------------------------- evaluation
def sinusoid_test_batch(cfg: SinusoidConfig, n_tasks: int, seed: int, shots: int | None) -> TaskBatch:
    """Fresh held-out tasks for evaluation, fixed by ``seed`` so evaluations are comparable
    (drawn from a stream apart from training's, see :mod:`metarl.seeding`)."""
    return sinusoid_tasks(cfg).sample(n_tasks, torch.Generator().manual_seed(eval_seed(seed)), shots=shots)


def classification_test_batch(cfg: ClassificationConfig, n_tasks: int, seed: int, shots: int | None) -> TaskBatch:
    """As :func:`sinusoid_test_batch`, from the dataset's test classes (shots are the config's)."""
    if shots is not None:
        raise ConfigError("--shots applies to sinusoid runs; for classification use a config with dataset.shots")
    _, _, _, test = classification_parts(cfg)
    return test.sample(n_tasks, torch.Generator().manual_seed(eval_seed(seed)))


def train_pretrained_baseline(cfg: Any, iterations: int) -> nn.Module:
    """The paper's pretrained baseline: one network regressed on all tasks jointly (Adam); ``cfg`` is a
    config with ``algorithm: pretrain`` among its choices (sinusoid, custom)."""
    base = replace(cfg, algorithm="pretrain", seed=cfg.seed + BASELINE_SEED_OFFSET)
    learner = family_of(base).build_learner(base)
    for it in progress(range(iterations), desc="pretrained baseline (training)"):
        learner.train_step(it, log=False)
    return learner.module


@dataclass(frozen=True)
class SupervisedEvaluation:
    """How a supervised family evaluates: its loss (``mse``/``ce``), reported metric, held-out
    tasks, module factory, default shots and (sinusoid) the paper's pretrained baseline."""

    loss: str
    metric: str
    test_batch: Callable[[Any, int, int, int | None], TaskBatch]
    factory: Callable[[Any], Callable[[], nn.Module]]
    shots: Callable[[Any], int]
    pretrained: Callable[[Any, int], nn.Module] | None = None

    def __call__(
        self,
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
        """The DESIGN.md evaluation: the run's curve and the baselines', each adapted with the same steps
        and lr (a random initialisation, given runs, and the pretrained baseline where the family has one)."""
        factory = self.factory(cfg)
        batch = self.test_batch(cfg, n_tasks, seed, shots)

        lr, anil = run_inner(cfg, learner_state.get("lr_params"))

        def raw_curve(module: nn.Module, lr: Any, name: str) -> torch.Tensor:
            return adaptation_curve(module, dict(module.named_parameters()), batch, loss=self.loss, lr=lr, steps=steps,
                                    anil=anil, desc=f"evaluate {name}")

        def curve_of(module: nn.Module, lr: Any, name: str) -> list[dict[str, float]]:
            return summarize(raw_curve(module, lr, name))

        model = factory()
        model.load_state_dict(learner_state["model"])
        out_baselines: dict[str, Any] = {}
        random_model = seeded_module(factory, seed + BASELINE_SEED_OFFSET)
        out_baselines["random"] = {"by_step": curve_of(random_model, cfg.inner.lr, "random")}
        for name, state in baselines.items():
            m = factory()
            m.load_state_dict(state["learner"]["model"])
            out_baselines[name] = {"by_step": curve_of(m, cfg.inner.lr, name)}
        if self.pretrained is not None and "pretrained" not in baselines and pretrain_iterations > 0:
            m = self.pretrained(cfg, pretrain_iterations)
            out_baselines["pretrained"] = {"by_step": curve_of(m, cfg.inner.lr, "pretrained"),
                                         "iterations": pretrain_iterations}
        curve = raw_curve(model, lr, "run")
        return {"metric": self.metric, "by_step": summarize(curve), "baselines": out_baselines,
                "shots": shots if shots is not None else self.shots(cfg), "per_task": curve.tolist()}


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"run.adapt: {name} must be an array or tensor, got {type(value).__name__} ({e})") from None


def _linear_sizes(module: nn.Module) -> tuple[int | None, int | None]:
    """(input features of the first ``nn.Linear``, output features of the last), or None."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return (linears[0].in_features, linears[-1].out_features) if linears else (None, None)


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def regression_data(run: Any, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [K, d], y [K, 1])`` as float32 tensors on the run's device, or a ValueError naming the shape.

    A ``y`` of shape ``[K]`` is refused: against the ``[K, 1]`` predictions it would broadcast to a
    ``[K, K]`` loss, which adapts to the wrong target without any error.
    """
    x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
    d, out = _linear_sizes(run.module)
    d_text, out_text = d if d is not None else "d", out if out is not None else 1
    if x.dim() != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"run.adapt: x has shape {_shape(x)}; expected [K, {d_text}] (K support points; "
                         f"x.reshape(-1, {d_text}) for a vector of K inputs)")
    if y.dim() == 1:
        raise ValueError(f"run.adapt: y has shape {_shape(y)}; pass y of shape [K, {out_text}] "
                         f"(y.reshape(-1, {out_text})): a [K] target would broadcast against the [K, {out_text}] "
                         "predictions and adapt to the wrong loss without an error")
    if y.dim() != 2 or y.shape[0] != x.shape[0] or (out is not None and y.shape[1] != out):
        raise ValueError(f"run.adapt: y has shape {_shape(y)}; expected [K, {out_text}] with the K = {x.shape[0]} "
                         "of x")
    if x.is_complex() or y.is_complex() or x.dtype == torch.bool or y.dtype == torch.bool:
        raise ValueError(f"run.adapt: x and y must hold real numbers, got {x.dtype} and {y.dtype}")
    device = next(iter(run.params.values())).device
    return x.to(device=device, dtype=torch.float32), y.to(device=device, dtype=torch.float32)


def classification_data(run: Any, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [K, C, H, W] float32, y [K] int64 labels in 0..ways-1)`` on the run's device, or a
    ValueError naming the expected shape (``run.transform(raw)`` makes x from raw images)."""
    from metarl.fewshot.datasets import x_shape

    x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
    c, h, w = x_shape(run.config)
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise ValueError(f"run.adapt: x has shape {_shape(x)}; expected [K, {c}, {h}, {w}] (run.transform(raw) "
                         "makes it from raw images)")
    if not x.is_floating_point():
        raise ValueError(f"run.adapt: x has dtype {x.dtype}; expected float images in [0, 1] (run.transform(raw) "
                         "makes them)")
    ways = run.config.dataset.ways
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"run.adapt: y has dtype {y.dtype}; expected integer class labels [K] in 0..{ways - 1} "
                         "(e.g. y.long())")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"run.adapt: y has shape {_shape(y)}; expected integer class labels [K] with the "
                         f"K = {x.shape[0]} of x")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= ways):
        raise ValueError(f"run.adapt: y holds labels {int(y.min())}..{int(y.max())}; expected 0..{ways - 1} "
                         f"({ways}-way run)")
    device = next(iter(run.params.values())).device
    return x.to(device=device, dtype=torch.float32), y.to(device=device, dtype=torch.int64)


def supervised_adapt(loss: str, check: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
                     ) -> Callable[..., Params]:
    """``run.adapt(x_support, y_support, steps=k)``: the run's test-time inner loop (first order, no
    meta-gradient is taken through it), its inputs checked and converted first (by ``check(run, x, y)``,
    by default :func:`regression_data` / :func:`classification_data`)."""
    check = check or (regression_data if loss == "mse" else classification_data)

    def run_adapt(run: Any, *data: Any, steps: int) -> Params:
        if len(data) != 2:
            raise TypeError(f"run.adapt: a supervised run adapts on (x_support, y_support), got {len(data)} "
                            "positional argument(s)")
        x, y = check(run, *data)
        lr, anil = run_inner(run.config, run.lr)
        plan = inner_plan(run.module, anil)
        return adapt(make_loss(run.module, loss), run.params, (x, y), lr=lr, steps=steps, first_order=True,
                     adapted=plan.adapted, at_step=plan.at_step)

    return run_adapt


SINUSOID = Family(
    build_learner=build_sinusoid,
    evaluate=SupervisedEvaluation("mse", "mse", sinusoid_test_batch, lambda cfg: lambda: sinusoid_module(cfg),
                                  lambda cfg: cfg.task.shots, train_pretrained_baseline),
    module=sinusoid_module,
    transform=as_float_tensor,
    adapt=supervised_adapt("mse"),
)


def _classification_module(cfg: ClassificationConfig) -> nn.Module:
    return classification_parts(cfg)[0]()


def _transform_images(cfg: ClassificationConfig, raw: Any) -> torch.Tensor:
    from metarl.fewshot.datasets import transform_images

    return transform_images(cfg, raw)


CLASSIFICATION = Family(
    build_learner=build_classification,
    evaluate=SupervisedEvaluation("ce", "accuracy", classification_test_batch,
                                  lambda cfg: classification_parts(cfg)[0], lambda cfg: cfg.dataset.shots),
    module=_classification_module,
    transform=_transform_images,
    adapt=supervised_adapt("ce"),
)
