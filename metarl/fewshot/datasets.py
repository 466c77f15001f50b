"""Few-shot classification benchmarks from a config: task distributions, model and transform.

Omniglot (paper setup): meta-train on the Vinyals et al. ``trainval`` characters (1200,
x4 by rotations), validate on ``val`` (a subset of trainval, so best.pt is selected
in-sample: evaluate ``last.pt``), test on the 423 ``test`` characters. MiniImagenet:
``train`` / ``val`` / ``test`` of Ravi & Larochelle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.config import ClassificationConfig
from metarl.fewshot.episodes import FewShotTasks
from metarl.fewshot.models import build_classifier

_CACHE: dict[tuple, FewShotTasks] = {}


def _tasks(cfg: ClassificationConfig, subset: str) -> FewShotTasks:
    d = cfg.dataset
    key = (d.name, subset, d.split, d.root, d.ways, d.shots, d.query, d.max_classes, d.cache_dir,
           d.augment_rotations, d.resample)
    if key in _CACHE:
        return _CACHE[key]
    if d.name == "omniglot":
        from metarl.fewshot.omniglot import omniglot_tasks

        if d.split == "lake":
            subset = {"trainval": "train", "val": "test"}.get(subset, subset)
        tasks = omniglot_tasks(
            subset, ways=d.ways, shots=d.shots, query=d.query, split=d.split, root=d.root,
            download=d.download, augment_rotations=None if d.augment_rotations and subset in ("train", "trainval")
            else False, max_classes=d.max_classes if subset in ("train", "trainval") else 0,
            resample=d.resample, cache_dir=d.cache_dir,
        )
    else:
        from metarl.fewshot.miniimagenet import miniimagenet_tasks

        mi_subset = {"trainval": "train"}.get(subset, subset)
        tasks = miniimagenet_tasks(
            mi_subset, ways=d.ways, shots=d.shots, query=d.query, root=d.root, cache_dir=d.cache_dir,
            max_classes=d.max_classes if mi_subset == "train" else 0,
        )
    _CACHE[key] = tasks
    return tasks


class _FixedEpisodes:
    """The fixed, seeded evaluation episodes of a task distribution, behind the ``sample`` interface."""

    def __init__(self, tasks: FewShotTasks) -> None:
        self.tasks = tasks

    def sample(self, n_tasks: int, generator: torch.Generator) -> Any:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.tasks.fixed_episodes(n_tasks, seed)


def x_shape(cfg: ClassificationConfig) -> tuple[int, int, int]:
    return (1, 28, 28) if cfg.dataset.name == "omniglot" else (3, 84, 84)


def classification_parts(cfg: ClassificationConfig) -> tuple[Callable[[], nn.Module], Any, Any, Any]:
    """(module factory, meta-train tasks, validation tasks, fixed test episodes)."""

    def factory() -> nn.Module:
        return build_classifier(cfg.model.kind, x_shape(cfg), cfg.dataset.ways, filters=cfg.model.filters,
                                downsample=cfg.model.downsample)

    train = _tasks(cfg, "trainval")
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
        if cfg.dataset.name == "omniglot":  # exactly the training-time decoding (dark pixels are ink)
            from metarl.fewshot.omniglot import RESAMPLE

            ink = (np.asarray(img.convert("L")) < 128).astype(np.uint8) * 255
            g = Image.fromarray(ink).resize((w, h), RESAMPLE[cfg.dataset.resample])
            out.append(np.asarray(g, dtype=np.float32)[None] / 255.0)
        else:
            g = img.convert("RGB").resize((w, h), Image.BILINEAR)
            out.append(np.asarray(g, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return torch.from_numpy(np.stack(out))
