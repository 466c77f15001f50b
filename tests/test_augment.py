"""Translation augmentation of training episodes (``dataset.augment_shift``).

Expected images are built independently with numpy slicing, not with the gather under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.config import ConfigError, config_from_dict
from metarl.fewshot.episodes import FewShotTasks, ShiftedTasks, shift_images

torch.set_num_threads(1)


def translated(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``img [H, W]`` moved down by ``dy`` and right by ``dx``, zeros where nothing moves in."""
    h, w = img.shape
    out = np.zeros_like(img)
    out[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = img[max(-dy, 0): h - max(dy, 0),
                                                                      max(-dx, 0): w - max(dx, 0)]
    return out


def matching_shifts(src: np.ndarray, out: np.ndarray, s: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
            if np.array_equal(translated(src, dy, dx), out)]


def test_every_image_is_a_whole_pixel_translation_within_the_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 5, 1, 12, 10, generator=g) + 0.5  # no zeros: each translation is unique
    s = 3
    y = shift_images(x, s, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    src, out = x.reshape(-1, 12, 10).numpy(), y.reshape(-1, 12, 10).numpy()
    seen = set()
    for a, b in zip(src, out, strict=True):
        found = matching_shifts(a, b, s)
        assert len(found) == 1, found
        seen.add(found[0])
    assert len(seen) > 10  # 30 images over 49 offsets: the shift varies per image


def test_shifts_cover_the_range_and_no_more():
    x = torch.ones(4000, 7, 7)
    y = shift_images(x, 2, torch.Generator().manual_seed(3))
    # All-ones images: the zero rows/columns left behind tell the shift's size along each axis.
    rows_kept = y.amax(dim=2).sum(dim=1)
    cols_kept = y.amax(dim=1).sum(dim=1)
    assert set(rows_kept.long().tolist()) == {5, 6, 7}
    assert set(cols_kept.long().tolist()) == {5, 6, 7}
    # Uniform over -2..2: |shift| = 0 for 1/5 of the draws.
    assert abs(float((rows_kept == 7).float().mean()) - 0.2) < 0.03


def test_zero_shift_is_the_identity_and_negative_is_refused():
    x = torch.rand(3, 4, 4)
    assert shift_images(x, 0, torch.Generator()) is x
    with pytest.raises(ValueError, match="max_shift=-1"):
        shift_images(x, -1, torch.Generator())


def _tasks() -> FewShotTasks:
    rng = np.random.default_rng(0)
    return FewShotTasks(rng.integers(1, 256, size=(8, 6, 1, 9, 9), dtype=np.uint8), ways=3, shots=1, query=2)


@pytest.mark.parametrize("sets", ["query", "both"])
def test_shifted_tasks_move_only_the_chosen_sets(sets):
    base = _tasks()
    plain = base.sample(4, torch.Generator().manual_seed(5))
    aug = ShiftedTasks(base, 2, sets).sample(4, torch.Generator().manual_seed(5))
    # The episode draw comes first from the generator: same classes, examples and labels.
    assert torch.equal(aug.y_support, plain.y_support) and torch.equal(aug.y_query, plain.y_query)
    for x_aug, x_plain, moved in ((aug.x_support, plain.x_support, sets == "both"), (aug.x_query, plain.x_query, True)):
        pairs = zip(x_plain.reshape(-1, 9, 9).numpy(), x_aug.reshape(-1, 9, 9).numpy(), strict=True)
        shifts = [matching_shifts(a, b, 2) for a, b in pairs]
        assert all(len(f) == 1 for f in shifts)
        assert any(f[0] != (0, 0) for f in shifts) == moved
        if not moved:
            assert torch.equal(x_aug, x_plain)


def test_shifted_tasks_are_reproducible_per_seed():
    t = ShiftedTasks(_tasks(), 2, "both")
    a, b = (t.sample(3, torch.Generator().manual_seed(9)) for _ in range(2))
    assert torch.equal(a.x_query, b.x_query) and torch.equal(a.x_support, b.x_support)
    with pytest.raises(ValueError, match="sets='support'"):
        ShiftedTasks(_tasks(), 2, "support")


@pytest.mark.parametrize("key, value, pattern", [
    ("dataset.augment_shift", -1, r"dataset.augment_shift: got -1"),
    ("dataset.augment_sets", "support", r"dataset.augment_sets: got 'support'; allowed: one of \['query', 'both'\]"),
])
def test_config_names_the_bad_value(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict({"benchmark": "classification"}, [(key, value)])


def test_only_meta_training_episodes_are_shifted(monkeypatch):
    from metarl.fewshot import datasets

    base = _tasks()
    monkeypatch.setattr(datasets, "_tasks", lambda cfg, subset: base)
    cfg = config_from_dict({"benchmark": "classification"}, [("dataset.augment_shift", 2)])
    _, train, val, test = datasets.classification_parts(cfg)
    assert isinstance(train, ShiftedTasks) and train.tasks is base and train.max_shift == 2
    assert val.tasks is base and test.tasks is base
    off = config_from_dict({"benchmark": "classification"}, [])
    assert datasets.classification_parts(off)[1] is base
