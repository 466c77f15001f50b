"""``benchmark: custom``: a supervised task family of the user's own (README, 'Your own task family').

The config names the task distribution and the model by importable reference (``tasks:
"mypkg.tasks:Quadratics"``, ``model: "mypkg.tasks:make_mlp"``, each with its kwargs), so a run
directory rebuilds them in any process: ``metarl evaluate RUN`` and ``metarl.load(RUN)`` work like
the built-in families'. Training, validation, evaluation and ``run.adapt`` are the supervised ones
(:class:`~metarl.fewshot.learner.SupervisedMAML`, :func:`~metarl.fewshot.learner.adaptation_curve`);
this module only resolves the references and checks what they give, before a run directory exists.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
import yaml
from torch import nn

from metarl.config import ConfigError, CustomConfig
from metarl.families import Family, as_float_tensor
from metarl.fewshot.build import (
    ADAPTS,
    OWN_LEARNERS,
    SupervisedEvaluation,
    seeded_module,
    supervised_adapt,
    train_pretrained_baseline,
    variant_kwargs,
)
from metarl.fewshot.learner import SupervisedMAML, TaskDistribution
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import Params
from metarl.seeding import eval_seed, validation_seed

#: The metric ``metarl evaluate`` reports for each ``loss``.
METRICS = {"mse": "mse", "ce": "accuracy"}
#: Tasks drawn (from a throwaway stream) to check the training distribution before a run starts.
CHECK_TASKS = 2


# ---------------------------------------------------------------------------- references
def reference_of(obj: Any, key: str) -> str:
    """``"module:qualname"`` that imports ``obj`` again in a fresh process (for config.yaml), or one
    ValueError naming the fix: a lambda, a local or an instance cannot be named, nor can an object of a
    script run as ``python script.py`` (its ``__main__`` is another module in the next process)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError(f"metarl.train: {key}={obj!r} is not a class or function; pass the class or factory "
                         f"itself (its arguments go in {key}_kwargs) so that config.yaml can name it")
    if "<" in qualname:
        raise ValueError(f"metarl.train: {key}={module}.{qualname} is a lambda or defined inside a function, which "
                         "`metarl.load` and `metarl evaluate` cannot import in another process; define it with def "
                         "or class at the top level of a module")
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ValueError(f"metarl.train: {key}={qualname} is defined in the script being run (__main__), which "
                             "`metarl.load` and `metarl evaluate` cannot import; move it into a module and import "
                             "it from there, or run the script as a module: python -m NAME")
        module = spec.name  # `python -m NAME`: the next process imports NAME
        resolve(f"{module}:{qualname}", key)
        return f"{module}:{qualname}"
    ref = f"{module}:{qualname}"
    if resolve(ref, key) is not obj:
        raise ValueError(f"metarl.train: {key}={ref} does not import back as the same object (renamed or "
                         "wrapped?); pass the object its module defines under that name")
    return ref


def resolve(ref: str, key: str) -> Any:
    """The object ``"module:qualname"`` names, or a ConfigError saying what did not import."""
    module_name, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}: cannot import {module_name!r} of {ref!r} ({e}); put its folder on the path "
                          "(PYTHONPATH) or install its package") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: {module_name!r} has no {qualname!r} (from {ref!r})")
        obj = getattr(obj, part)
    return obj


def _plain(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    """``kwargs`` if config.yaml keeps them as they are, else a ConfigError (a tuple or an object would come
    back as a list or not at all, and the reloaded run would build something else)."""
    try:
        same = yaml.safe_load(yaml.safe_dump(kwargs)) == kwargs
    except yaml.YAMLError:
        same = False
    if not same:
        raise ConfigError(f"{key}: {kwargs!r} must hold plain YAML values (numbers, strings, lists, mappings; a "
                          "list for a tuple) so that config.yaml rebuilds the run")
    return kwargs


def _call(factory: Any, kwargs: dict[str, Any], key: str, ref: str) -> Any:
    if not callable(factory):
        raise ConfigError(f"{key}: {ref!r} is a {type(factory).__name__}, not a class or function")
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{key}: {ref}(**{key}_kwargs) with {kwargs!r} failed ({e})") from None


# ---------------------------------------------------------------------------- the user's parts
def custom_tasks(cfg: CustomConfig, heldout: bool = False) -> TaskDistribution:
    """The task distribution: of training, or (``heldout``) of validation and evaluation."""
    if not cfg.tasks:
        raise ConfigError("tasks: not set; name the task distribution, e.g. tasks: 'mypkg.tasks:Quadratics'")
    kwargs = {**_plain(cfg.tasks_kwargs, "tasks_kwargs"), **(_plain(cfg.heldout_kwargs, "heldout_kwargs")
                                                              if heldout else {})}
    dist = _call(resolve(cfg.tasks, "tasks"), kwargs, "tasks", cfg.tasks)
    if not callable(getattr(dist, "sample", None)):
        raise ConfigError(f"tasks: {cfg.tasks}(**tasks_kwargs) gave a {type(dist).__name__} without "
                          "sample(n_tasks, generator) -> metarl.TaskBatch (the metarl.TaskDistribution protocol)")
    return dist


def custom_module(cfg: CustomConfig) -> nn.Module:
    """The model ``model(**model_kwargs)`` builds (checked to be an ``nn.Module``)."""
    if not cfg.model:
        raise ConfigError("model: not set; name the model factory, e.g. model: 'mypkg.tasks:make_mlp'")
    module = _call(resolve(cfg.model, "model"), _plain(cfg.model_kwargs, "model_kwargs"), "model", cfg.model)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model: {cfg.model}(**model_kwargs) returned a {type(module).__name__}; expected a "
                          "torch.nn.Module")
    return module


def check_batch(batch: Any, n_tasks: int, loss: str, ref: str) -> TaskBatch:
    """``batch`` if it is a TaskBatch of ``n_tasks`` tasks with the shapes and dtypes of ``loss``, else a
    ConfigError naming the first thing wrong."""
    what = f"tasks: {ref}(...).sample({n_tasks}, generator)"
    if not isinstance(batch, TaskBatch):
        raise ConfigError(f"{what} returned a {type(batch).__name__}; expected a metarl.TaskBatch(x_support, "
                          "y_support, x_query, y_query)")
    parts = {"x_support": batch.x_support, "y_support": batch.y_support, "x_query": batch.x_query,
             "y_query": batch.y_query}
    for name, t in parts.items():
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or t.shape[0] != n_tasks:
            shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"{what}: {name} is {shape}; expected a tensor [N={n_tasks}, points, ...]")
    for a, b in (("x_support", "y_support"), ("x_query", "y_query")):
        if parts[a].shape[1] != parts[b].shape[1]:
            raise ConfigError(f"{what}: {a} has {parts[a].shape[1]} points and {b} {parts[b].shape[1]}")
    for a, b in (("x_support", "x_query"), ("y_support", "y_query")):
        if parts[a].shape[2:] != parts[b].shape[2:] or parts[a].dtype != parts[b].dtype:
            raise ConfigError(f"{what}: {a} {list(parts[a].shape)} {parts[a].dtype} and {b} {list(parts[b].shape)} "
                              f"{parts[b].dtype} differ after [N, points]")
    if not batch.x_support.is_floating_point():
        raise ConfigError(f"{what}: x has dtype {batch.x_support.dtype}; expected floating point inputs")
    y = batch.y_support
    if loss == "mse" and (not y.is_floating_point() or y.dim() < 3):
        raise ConfigError(f"{what}: y is {list(y.shape)} {y.dtype}; loss mse needs float y [N, points, d] (e.g. "
                          "y.unsqueeze(-1): a [N, points] y would broadcast against [points, 1] predictions)")
    if loss == "ce" and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.dim() != 2):
        raise ConfigError(f"{what}: y is {list(y.shape)} {y.dtype}; loss ce needs integer class labels "
                          "[N, points] (e.g. y.long())")
    return batch


def check_model(module: nn.Module, batch: TaskBatch, cfg: CustomConfig) -> None:
    """The model maps one task's query inputs ``[Q, ...]`` to ``y``'s shape (mse) or logits ``[Q, classes]``
    covering every label (ce), else a ConfigError."""
    x, y = batch.x_query[0], batch.y_query[0]
    try:
        with torch.no_grad():
            out = module(x)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"model: {cfg.model} fails on one task's query inputs x {list(x.shape)} "
                          f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"model: {cfg.model} returned a {type(out).__name__}; expected a tensor")
    if cfg.loss == "mse" and out.shape != y.shape:
        raise ConfigError(f"model: {cfg.model} maps x {list(x.shape)} to {list(out.shape)}; loss mse needs y's shape "
                          f"{list(y.shape)}")
    if cfg.loss == "ce":
        labels = int(torch.cat([batch.y_support, batch.y_query], 1).max()) + 1
        if out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < labels:
            raise ConfigError(f"model: {cfg.model} maps x {list(x.shape)} to {list(out.shape)}; loss ce needs logits "
                              f"[{x.shape[0]}, classes] with classes >= {labels} (the labels seen)")


def _sample(dist: TaskDistribution, cfg: CustomConfig, n_tasks: int, seed: int) -> TaskBatch:
    return check_batch(dist.sample(n_tasks, torch.Generator().manual_seed(seed)), n_tasks, cfg.loss, cfg.tasks)


# ---------------------------------------------------------------------------- the family
def build_custom(cfg: CustomConfig) -> Any:
    """The supervised learner (``algorithm``: MAML and its variants, the pretrained baseline, Reptile) on the
    user's tasks and model, everything checked first (a failure here comes before the run directory exists)."""
    if cfg.mamlpp.bn_per_step:
        raise ConfigError("mamlpp.bn_per_step: per-step batch norm is built into the built-in conv nets only; set it "
                          "false for your own model")
    tasks = custom_tasks(cfg)
    _sample(tasks, cfg, CHECK_TASKS, validation_seed(cfg.seed) + 1)
    val = _sample(custom_tasks(cfg, heldout=True), cfg, cfg.eval.tasks, validation_seed(cfg.seed))
    module = seeded_module(lambda: custom_module(cfg), cfg.seed)
    check_model(module, val, cfg)
    if cfg.algorithm in OWN_LEARNERS:
        return OWN_LEARNERS[cfg.algorithm](cfg, module, tasks, val, cfg.loss)
    return SupervisedMAML(
        module, tasks, val, loss=cfg.loss, meta_batch_size=cfg.meta_batch_size,
        inner_lr=cfg.inner.lr, inner_steps=cfg.inner.steps, first_order=cfg.inner.first_order,
        learn_lr=cfg.inner.learn_lr, outer_lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip,
        seed=cfg.seed, device=cfg.device, adapts=ADAPTS[cfg.algorithm], checkpoint=cfg.inner.checkpoint,
        **variant_kwargs(cfg),
    )


def custom_test_batch(cfg: CustomConfig, n_tasks: int, seed: int, shots: int | None) -> TaskBatch:
    """Fresh held-out tasks for ``metarl evaluate``, fixed by ``seed`` (the stream of :func:`eval_seed`)."""
    if shots is not None:
        raise ConfigError("--shots applies to sinusoid runs; a custom task family's sample() sets its support size")
    return _sample(custom_tasks(cfg, heldout=True), cfg, n_tasks, eval_seed(seed))


def support_size(cfg: CustomConfig) -> int:
    """Support points per task (reported as ``shots``), from one held-out task."""
    return int(_sample(custom_tasks(cfg, heldout=True), cfg, 1, eval_seed(0)).x_support.shape[1])


def evaluate_custom(cfg: CustomConfig, learner_state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The supervised evaluation with the run's loss; regression adds the pretrained baseline (the paper's)."""
    evaluation = SupervisedEvaluation(cfg.loss, METRICS[cfg.loss], custom_test_batch,
                                      lambda c: lambda: custom_module(c), support_size,
                                      train_pretrained_baseline if cfg.loss == "mse" else None)
    return evaluation(cfg, learner_state, **kwargs)


def custom_data(run: Any, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``run.adapt``'s inputs as tensors shaped like one task's support set (``x [K, ...]``, ``y [K, ...]``
    float for mse, ``y [K]`` integer labels for ce) on the run's device, or a ValueError naming the shape."""
    example = custom_tasks(run.config, heldout=True).sample(1, torch.Generator().manual_seed(0))
    out = []
    for name, value, ref in (("x", x, example.x_support), ("y", y, example.y_support)):
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if t.dim() != ref.dim() - 1 or t.shape[1:] != ref.shape[2:]:
            expected = ", ".join(["K", *map(str, ref.shape[2:])])
            raise ValueError(f"run.adapt: {name} has shape {list(t.shape)}; expected [{expected}] like one task's "
                             "support set")
        if t.is_floating_point() != ref.is_floating_point():
            raise ValueError(f"run.adapt: {name} has dtype {t.dtype}; expected {ref.dtype} like the tasks'")
        out.append(t.to(device=next(iter(run.params.values())).device, dtype=ref.dtype))
    if out[0].shape[0] != out[1].shape[0]:
        raise ValueError(f"run.adapt: x has {out[0].shape[0]} points and y {out[1].shape[0]}")
    return out[0], out[1]


def adapt_custom(run: Any, *data: Any, steps: int) -> Params:
    """``run.adapt(x_support, y_support)`` with the run's loss."""
    return supervised_adapt(run.config.loss, custom_data)(run, *data, steps=steps)


CUSTOM = Family(
    build_learner=build_custom,
    evaluate=evaluate_custom,
    module=custom_module,
    transform=as_float_tensor,
    adapt=adapt_custom,
)
