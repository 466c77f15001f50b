"""Configs: dataclasses loaded from YAML, dotted ``--set`` overrides, validation up front.

One home per hyperparameter: every key is a dataclass field with a one-line ``help`` and,
where it has one, its allowed range. Loading rejects an unknown key, a wrong type or an
out-of-range value with a :class:`ConfigError` naming the key, the value and what is
allowed, before any work starts (the CLI turns it into exit code 2).

The ``benchmark`` key picks the config class (and the learner): ``sinusoid``,
``classification``, ``rl`` or ``custom`` (a supervised task family of the user's own).

Configs ship in the package (``metarl/configs``, ``metarl train NAME``). A file may say
``base: NAME`` (a shipped config, or a path relative to it) and then holds only what departs from
that base: sections merge key by key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config (file, override or value) that cannot be used; the message says how to fix it."""


# ---------------------------------------------------------------------------- field helpers
Check = Callable[[Any], bool]


def _f(default: Any, help: str, check: Check | None = None, allowed: str = "", factory: bool = False,
       whole: bool = False) -> Any:
    """A field with its help text and check; a list's items are checked one by one unless ``whole``."""
    meta = {"help": help, "check": check, "allowed": allowed, "whole": whole}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def positive(default: Any, help: str) -> Any:
    """A number > 0; ``.inf`` and ``.nan`` are refused (a step size of inf trains nothing)."""
    return _f(default, help, lambda v: math.isfinite(v) and v > 0, "a number > 0 (finite)")


def nonneg(default: Any, help: str) -> Any:
    """A number >= 0, finite."""
    return _f(default, help, lambda v: math.isfinite(v) and v >= 0, "a number >= 0 (finite)")


def sizes(default: Callable[[], list[int]], help: str) -> Any:
    """A list of layer sizes, each > 0 (a size of 0 or less would build an empty or failing layer)."""
    return _f(default, help, lambda v: v > 0, "a list of integers > 0", factory=True)


def span(default: Callable[[], list[float]], help: str) -> Any:
    """A range ``[low, high]``: exactly two finite numbers with low <= high."""
    return _f(default, help, lambda v: len(v) == 2 and all(math.isfinite(x) for x in v) and v[0] <= v[1],
              "a range [low, high] of two finite numbers with low <= high", factory=True, whole=True)


def choice(default: Any, help: str, options: Sequence[Any]) -> Any:
    opts = list(options)
    return _f(default, help, lambda v: v in opts, f"one of {opts}")


def unit(default: float, help: str) -> Any:
    return _f(default, help, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def section(cls: type, help: str) -> Any:
    return _f(cls, help, factory=True)


# ---------------------------------------------------------------------------- shared sections
@dataclass
class InnerConfig:
    """The inner (adaptation) loop, Finn et al. 2017 eq. (1)."""

    lr: float = positive(0.01, "inner learning rate alpha (initial value when learn_lr)")
    steps: int = nonneg(1, "inner gradient steps during meta-training")
    first_order: bool = _f(False, "drop second-order terms (FOMAML)")
    learn_lr: bool = _f(False, "learn a per-parameter inner lr with the outer optimiser (Meta-SGD)")
    test_steps: int = nonneg(10, "gradient steps at evaluation (metrics after 0..test_steps)")
    checkpoint: bool = _f(False, "recompute each inner step in the meta-gradient's backward pass instead of storing "
                          "its activations (gradient checkpointing, Chen et al. 2016 arXiv 1604.06174), and back-"
                          "propagate each chunk of tasks (task_chunk) as soon as it is computed: the same numbers, "
                          "less memory, more time (`metarl bench memory`; supervised families)")


@dataclass
class EvalConfig:
    """Validation during training and the defaults of ``metarl evaluate``."""

    every: int = positive(500, "validate (and maybe write best.pt) every N iterations")
    tasks: int = positive(100, "held-out validation tasks at each validation")
    test_tasks: int = positive(600, "fresh tasks used by `metarl evaluate` by default")


@dataclass
class CommonConfig:
    """Keys every benchmark shares (DESIGN.md)."""

    benchmark: str = choice("sinusoid", "benchmark family", ["sinusoid", "classification", "rl", "custom"])
    name: str = _f("run", "run name (log dir defaults to runs/<name>-<time>)", lambda v: bool(v), "non-empty")
    seed: int = nonneg(0, "seed of every random stream of the run")
    num_iterations: int = positive(1000, "meta-iterations (outer updates)")
    meta_batch_size: int = positive(25, "tasks per meta-iteration")
    inner: InnerConfig = section(InnerConfig, "inner loop")
    device: str = choice("cpu", "device for the meta-update", ["cpu", "cuda"])
    log_every: int = positive(100, "write metrics every N iterations")
    checkpoint_every: int = positive(1000, "write checkpoints/last.pt every N iterations")
    eval: EvalConfig = section(EvalConfig, "validation and evaluation")


# ---------------------------------------------------------------------------- sinusoid
@dataclass
class SinusoidTaskConfig:
    """Sinusoid regression tasks, Finn et al. 2017 sec. 5.1."""

    amplitude: list[float] = span(lambda: [0.1, 5.0], "amplitude range [low, high]")
    phase: list[float] = span(lambda: [0.0, 3.141592653589793], "phase range [low, high]")
    x_range: list[float] = span(lambda: [-5.0, 5.0], "input range [low, high]")
    shots: int = positive(10, "K support points per task")
    query: int = positive(10, "query points per task")


@dataclass
class MLPConfig:
    """A fully connected regression network."""

    hidden: list[int] = sizes(lambda: [40, 40], "hidden layer sizes")
    activation: str = choice("relu", "hidden activation", ["relu", "tanh"])


@dataclass
class OptimConfig:
    """The outer optimiser (Adam)."""

    lr: float = positive(1e-3, "Adam learning rate beta")
    grad_clip: float = nonneg(0.0, "clip the meta-gradient norm (0 disables)")
    cosine: bool = _f(False, "anneal the Adam step size from lr to min_lr over num_iterations along a half cosine "
                      "(MAML++'s CA, Antoniou et al. 2019 arXiv 1810.09502 sec. 4; false: constant lr)")
    min_lr: float = nonneg(1e-5, "final step size of the cosine annealing (MAML++ code: 1e-5)")


@dataclass
class ReptileConfig:
    """Reptile (Nichol et al. 2018, arXiv 1803.02999, Algorithm 2): k = ``inner.steps`` SGD steps at ``inner.lr``
    on minibatches of each task's support and query points pooled, then theta += eps * mean(phi_i - theta)."""

    outer_lr: float = positive(1.0, "outer step size eps at the first iteration (paper's few-shot runs: 1.0)")
    outer_lr_final: float = nonneg(0.0, "eps at the end: annealed linearly from outer_lr (paper's few-shot runs: 0)")
    inner_batch: int = nonneg(0, "points per inner minibatch, without replacement within a pass (0: a task's "
                              "whole pool at every step)")


@dataclass
class MAMLPPConfig:
    """MAML++ (Antoniou et al. 2019, arXiv 1810.09502 sec. 4), each switch usable alone; all off is MAML.
    The outer step size's cosine annealing is ``optim.cosine``."""

    msl_iterations: int = nonneg(0, "multi-step loss (MSL): for this many iterations the meta-loss is a weighted sum "
                                 "of the query losses after every inner step, the weights annealed from uniform "
                                 "towards the last step; then (and with 0) the last step's only, as MAML")
    lslr: bool = _f(False, "learn an inner lr per parameter tensor and per step, starting at inner.lr (LSLR)")
    da_iterations: int = nonneg(0, "derivative-order annealing (DA): first order for the first N iterations, then "
                                "as inner.first_order (0: off)")
    bn_per_step: bool = _f(False, "per-step batch-norm scales and shifts (BNWB), meta-learned, not adapted; "
                           "normalisation uses each step's batch statistics (BNRS has nothing left to add)")
    rates_lr_scale: float = positive(1.0, "Adam step size of the learned inner rates (lslr, inner.learn_lr) "
                                     "relative to optim.lr; 1 as MAML++'s code; below 1 where inner.lr is small "
                                     "next to optim.lr")


@dataclass
class SinusoidConfig(CommonConfig):
    """Sinusoid regression (Finn et al. 2017 sec. 5.1)."""

    task: SinusoidTaskConfig = section(SinusoidTaskConfig, "task distribution")
    model: MLPConfig = section(MLPConfig, "network")
    optim: OptimConfig = section(OptimConfig, "outer optimiser")
    algorithm: str = choice("maml", "maml, pretrain (joint regression, the paper's baseline), or reptile "
                            "(Nichol et al. 2018, arXiv 1803.02999; the reptile section)",
                            ["maml", "pretrain", "reptile"])
    reptile: ReptileConfig = section(ReptileConfig, "Reptile's outer update and inner minibatches (algorithm: reptile)")
    mamlpp: MAMLPPConfig = section(MAMLPPConfig, "MAML++ switches (all off: MAML)")
    anil: bool = _f(False, "ANIL (Raghu et al. 2020, arXiv 1909.09157): the inner loop adapts only the head (the "
                    "last linear layer); the body is meta-learned only")


# ---------------------------------------------------------------------------- classification
#: The episode sets ``dataset.augment_shift`` may move (:class:`metarl.fewshot.episodes.ShiftedTasks`).
SHIFT_SETS = ("query", "both")


@dataclass
class DatasetConfig:
    """An N-way K-shot image dataset."""

    name: str = choice("omniglot", "dataset", ["omniglot", "miniimagenet"])
    root: str | None = _f(None, "data root (else $METARL_DATA, else ~/.cache/metarl)")
    download: bool = _f(False, "download the official files if missing (verified by SHA-256)")
    split: str = choice("vinyals", "omniglot split: vinyals (the paper's) or lake", ["vinyals", "lake"])
    ways: int = _f(5, "N classes per episode", lambda v: v >= 2, "an integer >= 2")
    shots: int = positive(1, "K support examples per class")
    query: int = positive(15, "query examples per class")
    augment_rotations: bool = _f(True, "new meta-training classes from 90/180/270 degree rotations")
    augment_shift: int = nonneg(0, "meta-training only: move images by up to N whole pixels each way (0: off)")
    augment_sets: str = choice("query", "images augment_shift moves: query (Ni et al. 2021) or both sets",
                               SHIFT_SETS)
    max_classes: int = nonneg(0, "use only the first N meta-training classes (0: all; for quick tests)")
    cache_dir: str | None = _f(None, "decoded-array cache (else $METARL_CACHE, else <root>/<dataset>/cache)")
    resample: str = choice("lanczos", "Omniglot resize filter", ["lanczos", "box", "nearest"])


@dataclass
class ConvConfig:
    """The paper's conv net (4 blocks) or its fully connected net."""

    kind: str = choice("conv4", "architecture", ["conv4", "fc"])
    filters: int = positive(64, "conv filters (64 Omniglot, 32 MiniImagenet)")
    downsample: str = choice("stride", "2x2 downsampling: strided conv or max pool", ["stride", "maxpool"])


@dataclass
class ClassificationConfig(CommonConfig):
    """Few-shot classification (Finn et al. 2017 sec. 5.2, Table 1)."""

    dataset: DatasetConfig = section(DatasetConfig, "dataset and episodes")
    model: ConvConfig = section(ConvConfig, "network")
    optim: OptimConfig = section(OptimConfig, "outer optimiser")
    task_chunk: int = nonneg(0, "tasks per vmap call in the meta-update (0: all at once; 1: a loop)")
    algorithm: str = choice("maml", "maml, or reptile (Nichol et al. 2018, arXiv 1803.02999; the reptile section)",
                            ["maml", "reptile"])
    reptile: ReptileConfig = section(ReptileConfig, "Reptile's outer update and inner minibatches (algorithm: reptile)")
    mamlpp: MAMLPPConfig = section(MAMLPPConfig, "MAML++ switches (all off: MAML)")
    anil: bool = _f(False, "ANIL (Raghu et al. 2020, arXiv 1909.09157): the inner loop adapts only the head (the "
                    "last linear layer); the body is meta-learned only")


# ---------------------------------------------------------------------------- your own task family
def is_reference(value: str) -> bool:
    """``"module:qualname"``: dotted identifiers on both sides of one colon."""
    module, colon, qualname = value.partition(":")
    return bool(colon) and all(p.isidentifier() for p in (*module.split("."), *qualname.split(".")))


def reference(help: str) -> Any:
    return _f("", help, is_reference, "'module:qualname' of an importable class or function")


@dataclass
class CustomConfig(CommonConfig):
    """A supervised task family of your own (README, 'Your own task family'): the task distribution and the
    model are named by importable reference, so a run directory rebuilds them in any process."""

    tasks: str = reference("task distribution: a class or factory called with tasks_kwargs whose result has "
                           "sample(n_tasks, generator) -> metarl.TaskBatch (metarl.TaskDistribution)")
    tasks_kwargs: dict = _f(dict, "keyword arguments of tasks (plain YAML values)", factory=True)
    heldout_kwargs: dict = _f(dict, "tasks_kwargs updated with these for validation and `metarl evaluate` (e.g. "
                              "{split: test}); empty: the training distribution, other random streams", factory=True)
    model: str = reference("model: an nn.Module class or a function called with model_kwargs returning one "
                           "(outputs y's shape for mse, logits [Q, classes] for ce)")
    model_kwargs: dict = _f(dict, "keyword arguments of model (plain YAML values)", factory=True)
    loss: str = choice("mse", "mse: regression, float y [.., d]; ce: classification, integer labels y, logits out",
                       ["mse", "ce"])
    optim: OptimConfig = section(OptimConfig, "outer optimiser")
    algorithm: str = choice("maml", "maml, pretrain (joint training on every task's points, no adaptation), or "
                            "reptile (Nichol et al. 2018, arXiv 1803.02999; the reptile section)",
                            ["maml", "pretrain", "reptile"])
    reptile: ReptileConfig = section(ReptileConfig, "Reptile's outer update and inner minibatches (algorithm: reptile)")
    mamlpp: MAMLPPConfig = section(MAMLPPConfig, "MAML++ switches (all off: MAML; bn_per_step needs built-in models)")
    anil: bool = _f(False, "ANIL (Raghu et al. 2020, arXiv 1909.09157): the inner loop adapts only the head (the "
                    "last linear layer); the body is meta-learned only")


# ---------------------------------------------------------------------------- meta-RL
@dataclass
class EnvConfig:
    """The task-parameterised environment and how much is sampled per task."""

    id: str = _f("metarl/Navigation2D-v0", "Gymnasium id (see `metarl envs`), or any registered id following "
                 "metarl.envs.protocol ('module:Id' imports module first)")
    episodes_per_task: int = positive(20, "episodes per task per sampling (paper: 20)")
    oracle: bool = _f(False, "append the task to the observation (the paper's oracle baseline)")
    kwargs: dict = _f(dict, "extra keyword arguments of the env", factory=True)

    def __post_init__(self) -> None:
        if "oracle" in self.kwargs:
            raise ConfigError(f"env.kwargs: got {self.kwargs!r}; set env.oracle instead of env.kwargs.oracle")


@dataclass
class PolicyConfig:
    """A Gaussian (or categorical) MLP policy."""

    hidden: list[int] = sizes(lambda: [64, 64], "hidden sizes (paper: [100, 100])")
    activation: str = choice("tanh", "hidden activation (paper: relu)", ["tanh", "relu"])
    init_std: float = positive(1.0, "initial action standard deviation")
    init: str = choice("torch", "weight init: torch (nn.Linear's default) or xavier (Glorot-uniform weights, zero "
                       "biases: rllab's MLP, which the paper's code used, and the reference PyTorch implementation; "
                       "navigation2d_lvc uses it)", ["torch", "xavier"])
    latent_dim: int = nonneg(0, "per-episode latent exploration (MAESN-style, Gupta et al. 2018): each episode "
                             "draws z ~ N(mu_z, sigma_z) of this many dimensions with its first action and the "
                             "policy acts on it throughout; the inner step adapts mu_z and sigma_z with the "
                             "rest (0: off, the paper's policy; built-in envs and the local sampler only)")
    latent_step: float = positive(1.0, "with latent_dim: the inner step on the latent's mean as a multiple of a "
                                  "REINFORCE step on z at inner.lr, averaged over the episodes (its parameter is "
                                  "scaled by sqrt(horizon * latent_step)); the log-std takes 1")


@dataclass
class TRPOConfig:
    """The TRPO meta-update (Schulman et al. 2015, arXiv 1502.05477)."""

    max_kl: float = positive(0.01, "KL trust region delta")
    cg_iters: int = positive(10, "conjugate-gradient iterations")
    cg_damping: float = nonneg(1e-5, "damping added to the Fisher-vector product")
    ls_ratio: float = _f(0.8, "backtracking ratio", lambda v: 0 < v < 1, "a number in (0, 1)")
    ls_max_steps: int = positive(15, "backtracking steps")
    ls_rescale: bool = _f(False, "after a candidate over the KL bound, shrink the step to where the measured KL "
                          "puts the bound (min(ls_ratio, 0.95 sqrt(max_kl / kl))) instead of by ls_ratio: fewer "
                          "evaluations with an approximate Fisher; false: plain backtracking (the paper's)")
    fisher_tasks: int = nonneg(0, "Fisher-vector products on this many random tasks (0: all, exact)")
    fisher_episodes: int = nonneg(0, "Fisher-vector products on this many random episodes of each task "
                                  "(0: all); with fisher_tasks, of each chosen task")
    fisher: str = choice("meta", "meta: the Fisher of the KL through the inner adaptation (exact, the paper's); "
                         "post: the post-update policies' own Fisher (d theta'/d theta taken as I: far "
                         "cheaper products, approximate; the line search still checks the exact KL)",
                         ["meta", "post"])
    task_chunk: int = nonneg(4, "tasks per vmap call in the meta-update (0: all at once, for a GPU; 4 measured "
                             "fastest on a 2-core CPU); the numbers are the same for any value")


@dataclass
class ProMPConfig:
    """The ProMP meta-update (Rothfuss et al. 2019, arXiv 1810.06784); used with ``algorithm: promp``."""

    lr: float = positive(1e-3, "Adam step size on theta (the ProMP paper's runs: 1e-3)")
    steps: int = positive(5, "Adam steps per sampled meta-batch (paper: 5)")
    clip_eps: float = _f(0.3, "clipping range eps of the likelihood ratio (paper: 0.3)", lambda v: 0 < v < 1,
                         "a number in (0, 1)")
    kl_coeff: float = nonneg(5e-4, "initial coefficient eta of the pre-update KL penalty (paper: 5e-4)")
    target_kl: float = positive(0.01, "target pre-update KL of the adaptive coefficient (paper: 0.01)")
    adaptive_kl: bool = _f(False, "halve / double eta when the KL is below / above target / 1.5, 1.5 target "
                           "(off in the paper's runs)")


@dataclass
class SamplerConfig:
    """Rollout collection."""

    backend: str = choice("local", "local: threads / worker processes on this machine; ray: Ray actors "
                          "(pip install -e .[ray]), the same episodes for the same seed", ["local", "ray"])
    num_workers: int = nonneg(0, "local: physics threads / workers (0: number of cores); "
                                 "ray: actors, one CPU each (0: the cluster's CPUs)")
    address: str | None = _f(None, "ray: null starts a local Ray; 'auto' or 'host:port' / 'ray://host:port' "
                                   "joins a running cluster")
    start_timeout: float = positive(120.0, "ray: seconds to wait for the actors to start, and for a lost "
                                           "worker's replacement, before the run stops with a checkpoint "
                                           "(raise it on an autoscaling cluster)")

    def __post_init__(self) -> None:
        if self.address is not None and self.backend != "ray":
            raise ConfigError(f"sampler.address: got {self.address!r} with sampler.backend {self.backend!r}; "
                              "an address needs sampler.backend: ray")


@dataclass
class RLConfig(CommonConfig):
    """MAML-TRPO meta-RL (Finn et al. 2017 sec. 5.3)."""

    env: EnvConfig = section(EnvConfig, "environment")
    policy: PolicyConfig = section(PolicyConfig, "policy network")
    trpo: TRPOConfig = section(TRPOConfig, "meta-update")
    promp: ProMPConfig = section(ProMPConfig, "ProMP meta-update (algorithm: promp)")
    sampler: SamplerConfig = section(SamplerConfig, "sampling")
    gamma: float = unit(0.99, "discount")
    gae_lambda: float = unit(1.0, "GAE lambda (1.0: Monte-Carlo returns minus baseline)")
    normalize_advantages: bool = _f(True, "normalise advantages per task")
    inner_estimator: str = choice("reinforce", "inner-loss estimator: reinforce (log pi * A, the paper's) or lvc "
                                  "(pi / pi_sampling * A: the same inner step, and a meta-gradient that keeps the "
                                  "curvature term of the pre-update sampling distribution; Rothfuss et al. 2019)",
                                  ["reinforce", "lvc"])
    test_lr_decay: float = positive(1.0, "evaluation: multiply the inner lr by this after each step (0.5 halves)")
    test_lr_after_first: float = positive(1.0, "evaluation: the inner lr's factor on every step after the first "
                                          "(0.5: Finn et al.'s test scripts, lr then lr / 2 for each further step)")
    ema: float = _f(0.0, "average of the meta-parameters kept after each meta-step, theta_avg <- ema * theta_avg + "
                    "(1 - ema) * theta, and used by validation, best.pt and evaluation (training goes on from theta); "
                    "0: off (the paper)", lambda v: 0 <= v < 1, "a number in [0, 1)")
    action_box_penalty: float = nonneg(0.0, "coefficient of a penalty on the adapted Gaussian policies' mean actions "
                                       "outside the env's action box, in standard deviations, added to the "
                                       "meta-objective (metarl.rl.objective.ActionBoxPenalty); 0: off (the paper)")
    train_goal_skew: float = nonneg(0.0, "training only: draw the meta-batch's goal velocities with density "
                                    "proportional to (v - low) ** k, more of the fast goals (goal-velocity envs "
                                    "only; validation and evaluation keep the uniform draw); 0: uniform (the paper)")
    explore_std: float = positive(1.0, "the pre-update episodes (the first inner step's data, in training, validation "
                                  "and evaluation) are sampled with the Gaussian policy's std times this; the inner "
                                  "step (with the policy's own log-probs) and the adapted policies keep their own "
                                  "std; 1: the paper")
    update_threads: int = nonneg(0, "torch threads for the meta-update (0: all cores; sampling is idle then)")
    algorithm: str = choice("maml", "maml (MAML-TRPO), promp (ProMP), or pretrain (TRPO on mixed tasks, no "
                            "adaptation: the paper's baseline)", ["maml", "promp", "pretrain"])


CONFIG_CLASSES: dict[str, type[CommonConfig]] = {
    "rl": RLConfig,
    "sinusoid": SinusoidConfig,
    "classification": ClassificationConfig,
    "custom": CustomConfig,
}


# ---------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: got {value!r}; expected a list of {_type_name(item)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: got {value!r}; expected a section with keys "
                              f"{[f.name for f in dataclasses.fields(tp)]}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string: a number all the same
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: got {value!r}; expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: got {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}; expected a string")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields_:
            raise ConfigError(f"unknown key '{prefix}{k}' (allowed here: {', '.join(sorted(fields_))})")
    kwargs = {}
    for name, f in fields_.items():
        if name not in data:
            continue
        key = prefix + name
        value = _coerce(data[name], hints[name], key)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            values = value if isinstance(value, list) and not f.metadata.get("whole") else [value]
            if not all(check(v) for v in values):
                raise ConfigError(f"{key}: got {data[name]!r}; allowed: {f.metadata['allowed']}")
        kwargs[name] = value
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``["inner.lr=0.1", ...]`` -> ``[("inner.lr", 0.1), ...]`` (values parsed as YAML)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set inner.lr=0.1")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem}); quote a string, "
                              "close brackets, e.g. --set model.hidden=[40,40]") from None
        out.append((key.strip(), value))
    return out


def with_overrides(data: Mapping[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of the config dict ``data`` with the dotted ``overrides`` set; ``data`` is left as it was."""
    data = copy.deepcopy(dict(data or {}))
    for key, value in overrides:
        _set_dotted(data, key, value)
    return data


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[tuple[str, Any]] = ()) -> CommonConfig:
    """Validate ``data`` (plus dotted overrides) into the benchmark's config dataclass."""
    data = with_overrides(data, overrides)
    benchmark = data.get("benchmark", "sinusoid")
    if benchmark not in CONFIG_CLASSES:
        raise ConfigError(f"benchmark: got {benchmark!r}; allowed: one of {sorted(CONFIG_CLASSES)}")
    return _build(CONFIG_CLASSES[benchmark], data)


#: the configs shipped in the package: ``metarl train NAME`` reads ``CONFIG_DIR / "NAME.yaml"``; a name
#: starting with ``_`` is a shared base (``base: _NAME``), not a config of its own
CONFIG_DIR = Path(__file__).resolve().with_name("configs")


def shipped_configs() -> dict[str, str]:
    """Name -> one-line description (the file's first comment line) of every shipped config, bases left out."""
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        if path.stem.startswith("_"):
            continue
        first = next((ln for ln in path.read_text().splitlines() if ln.strip()), "")
        out[path.stem] = first.lstrip("#").strip() if first.lstrip().startswith("#") else ""
    return out


def config_path(name_or_path: str | Path) -> Path:
    """An existing config file, or the file of the shipped config named ``name_or_path`` (``sinusoid``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    shipped = CONFIG_DIR / f"{name}.yaml"
    if "/" not in name and "\\" not in name and shipped.is_file():
        return shipped
    names = shipped_configs()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"config {name!r} does not exist: neither a file nor one of the {len(names)} shipped "
                      f"configs; {hint}`metarl configs` lists them")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top; a mapping (a section) merges key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys of a YAML config file with its ``base:`` chain merged in (a file's own keys win).

    ``base: NAME`` names a shipped config; a value with a ``/`` or ending in ``.yaml`` / ``.yml`` is a path,
    relative to the file that names it. Sections merge key by key: a file sets only what departs from its base.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"config file {str(path)!r} is empty (no keys); start from a shipped config, "
                          "e.g. `benchmark: sinusoid` and the keys you change")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: got {base!r}; expected a shipped config name or a relative path")
    if "/" in base or base.endswith((".yaml", ".yml")):
        base_path = path.parent / base
    elif (CONFIG_DIR / f"{base}.yaml").is_file():
        base_path = CONFIG_DIR / f"{base}.yaml"
    else:
        raise ConfigError(f"{path}: base: got {base!r}, which is not a shipped config (shipped: "
                          f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))}) nor a path")
    chain = (*_chain, path.resolve())
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: base: {base!r} makes a cycle ({cycle})")
    return _merge(read_config_data(base_path, chain), data)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> CommonConfig:
    """Read a YAML config file or a shipped config by name (with its ``base:`` chain), apply overrides, validate."""
    return config_from_dict(read_config_data(config_path(path)), parse_overrides(overrides))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain YAML-able data."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _yaml_value(value: Any) -> str:
    """One value as a YAML flow scalar / list / mapping on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def format_config(cfg: Any, indent: str = "") -> str:
    """The resolved config as YAML, every key followed by its help text (the field's ``help``) as a comment."""
    lines = []
    for f in dataclasses.fields(cfg):
        value, help_ = getattr(cfg, f.name), f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:".ljust(28) + f" # {help_}")
            lines.append(format_config(value, indent + "  "))
        else:
            lines.append(f"{indent}{f.name}: {_yaml_value(value)}".ljust(28) + f" # {help_}")
    return "\n".join(lines)
