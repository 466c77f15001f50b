"""Few-shot classification benchmarks from a config: task distributions, model and transform.

Omniglot (paper setup): meta-train on the Vinyals et al. ``trainval`` characters (1200,
x4 by rotations), validate on ``val`` (a subset of trainval, so best.pt is selected
in-sample: evaluate ``last.pt``), test on the 423 ``test`` characters. MiniImagenet:
``train`` / ``val`` / ``test`` of Ravi & Larochelle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from metarl.config import ClassificationConfig
from metarl.fewshot.episodes import FewShotTasks, ShiftedTasks
from metarl.fewshot.models import build_classifier

_CACHE: dict[tuple, FewShotTasks] = {}


def _omniglot_tasks(cfg: ClassificationConfig, subset: str) -> FewShotTasks:
    from metarl.fewshot.omniglot import omniglot_tasks

    d = cfg.dataset
    if d.split == "lake":
        subset = {"trainval": "train", "val": "test"}.get(subset, subset)
    training = subset in ("train", "trainval")
    return omniglot_tasks(
        subset, ways=d.ways, shots=d.shots, query=d.query, split=d.split, root=d.root, download=d.download,
        augment_rotations=None if d.augment_rotations and training else False,
        max_classes=d.max_classes if training else 0, resample=d.resample, cache_dir=d.cache_dir,
    )


def _miniimagenet_tasks(cfg: ClassificationConfig, subset: str) -> FewShotTasks:
    from metarl.fewshot.miniimagenet import miniimagenet_tasks

    d = cfg.dataset
    subset = {"trainval": "train"}.get(subset, subset)
    return miniimagenet_tasks(subset, ways=d.ways, shots=d.shots, query=d.query, root=d.root, cache_dir=d.cache_dir,
                              max_classes=d.max_classes if subset == "train" else 0)


def _omniglot_image(cfg: ClassificationConfig, img: Any, h: int, w: int) -> np.ndarray:
    """Exactly the training-time decoding: dark pixels are ink (1.0), resized with the run's filter."""
    from PIL import Image

    from metarl.fewshot.omniglot import RESAMPLE

    ink = (np.asarray(img.convert("L")) < 128).astype(np.uint8) * 255
    return np.asarray(Image.fromarray(ink).resize((w, h), RESAMPLE[cfg.dataset.resample]), dtype=np.float32)[None] / 255


def _rgb_image(cfg: ClassificationConfig, img: Any, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255


class Dataset(NamedTuple):
    """A registered image dataset: its tasks by subset, input shape and raw-image decoding."""

    tasks: Callable[[ClassificationConfig, str], FewShotTasks]
    x_shape: tuple[int, int, int]
    decode: Callable[[ClassificationConfig, Any, int, int], np.ndarray]


#: ``dataset.name`` -> :class:`Dataset`.
DATASETS: dict[str, Dataset] = {
    "omniglot": Dataset(_omniglot_tasks, (1, 28, 28), _omniglot_image),
    "miniimagenet": Dataset(_miniimagenet_tasks, (3, 84, 84), _rgb_image),
}


def _tasks(cfg: ClassificationConfig, subset: str) -> FewShotTasks:
    d = cfg.dataset
    key = (d.name, subset, d.split, d.root, d.ways, d.shots, d.query, d.max_classes, d.cache_dir,
           d.augment_rotations, d.resample)
    if key not in _CACHE:
        _CACHE[key] = DATASETS[d.name].tasks(cfg, subset)
    return _CACHE[key]


class _FixedEpisodes:
    """The fixed, seeded evaluation episodes of a task distribution, behind the ``sample`` interface."""

    def __init__(self, tasks: FewShotTasks) -> None:
        self.tasks = tasks

    def sample(self, n_tasks: int, generator: torch.Generator) -> Any:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.tasks.fixed_episodes(n_tasks, seed)


def x_shape(cfg: ClassificationConfig) -> tuple[int, int, int]:
    return DATASETS[cfg.dataset.name].x_shape


def classification_parts(cfg: ClassificationConfig) -> tuple[Callable[[], nn.Module], Any, Any, Any]:
    """(module factory, meta-train tasks, validation tasks, fixed test episodes)."""

    def factory() -> nn.Module:
        return build_classifier(cfg.model.kind, x_shape(cfg), cfg.dataset.ways, filters=cfg.model.filters,
                                downsample=cfg.model.downsample,
                                bn_steps=cfg.inner.steps if cfg.mamlpp.bn_per_step else 0)

    train: Any = _tasks(cfg, "trainval")
    if cfg.dataset.augment_shift:
        train = ShiftedTasks(train, cfg.dataset.augment_shift, cfg.dataset.augment_sets)
    val = _FixedEpisodes(_tasks(cfg, "val"))
    test = _FixedEpisodes(_tasks(cfg, "test"))
    return factory, train, val, test


def transform_images(cfg: ClassificationConfig, raw: Any) -> torch.Tensor:
    """Raw drawings/images -> model inputs ``[B, C, H, W]`` float32 in [0, 1] (Omniglot: ink = 1).

    Accepts a tensor/array already at the model's size, or a list of PIL images / arrays
    (Omniglot: 105x105 one-bit drawings, black ink), which are resized as at training time.
    """
    c, h, w = x_shape(cfg)
    if isinstance(raw, torch.Tensor | np.ndarray) and tuple(raw.shape[-3:]) == (c, h, w):
        return torch.as_tensor(raw, dtype=torch.float32)
    from PIL import Image

    out = []
    for item in raw:
        img = item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item))
        out.append(DATASETS[cfg.dataset.name].decode(cfg, img, h, w))
    return torch.from_numpy(np.stack(out))
