"""MiniImagenet layout loader on a tiny synthetic folder made here (ImageNet is not available)."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.fewshot import miniimagenet as mi
from metarl.fewshot.download import DatasetError, DatasetNotFoundError
from tests import SHARED_DATA, needs_shared

torch.set_num_threads(1)

SPLIT_CSV = SHARED_DATA / "miniimagenet_splits"
CLASSES = {"train": ["n03", "n01", "n02", "n04", "n05", "n06"], "val": ["n10", "n11", "n12"],
           "test": ["n20", "n21", "n22", "n23", "n24"]}
PER_CLASS = 20


def _pixels(label: str, i: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng([zlib.crc32(label.encode()), i])
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def _make_folder(root: Path) -> Path:
    """<root>/miniimagenet with three CSVs and PNG/JPEG images, some not 84x84."""
    folder = root / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    for split, labels in CLASSES.items():
        rows = []
        for label in labels:
            for i in range(PER_CLASS):
                if i % 5 == 4:  # some larger JPEGs to be resized
                    name = f"{label}{i:08d}.jpg"
                    Image.fromarray(_pixels(label, i, (100, 120))).save(folder / "images" / name, quality=90)
                elif i % 5 == 3:  # some greyscale
                    name = f"{label}{i:08d}.png"
                    Image.fromarray(_pixels(label, i, (84, 84))[..., 0]).save(folder / "images" / name)
                else:
                    name = f"{label}{i:08d}.png"
                    Image.fromarray(_pixels(label, i, (84, 84))).save(folder / "images" / name)
                rows.append((name, label))
        rows.reverse()  # the loader must not rely on the CSV order
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            w.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("mini")
    _make_folder(r)
    return r


def test_loads_shapes_classes_and_pixels(root: Path) -> None:
    data = mi.load_split("train", root)
    assert data.images.shape == (6, PER_CLASS, 3, 84, 84)
    assert data.images.dtype == np.uint8
    assert data.classes == tuple(sorted(CLASSES["train"]))
    # class n01 (row 0), image 0: an 84x84 RGB PNG, stored losslessly, as CHW
    np.testing.assert_array_equal(data.images[0, 0], _pixels("n01", 0, (84, 84)).transpose(2, 0, 1))
    # greyscale -> RGB replicates the channel
    grey = _pixels("n01", 3, (84, 84))[..., 0]
    np.testing.assert_array_equal(data.images[0, 3], np.stack([grey] * 3))
    # a 120x100 JPEG is LANCZOS-resized to 84x84 (computed independently with PIL)
    with Image.open(root / "miniimagenet" / "images" / "n0100000004.jpg") as im:
        ref = np.asarray(im.convert("RGB").resize((84, 84), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    np.testing.assert_array_equal(data.images[0, 4], ref)
    assert [mi.load_split(s, root).images.shape[0] for s in ("val", "test")] == [3, 5]


def test_cache_is_memory_mapped_and_reused(root: Path) -> None:
    mi.load_split("val", root)
    npy = root / "miniimagenet" / "cache" / "val_84.npy"
    stamp = npy.stat().st_mtime_ns
    again = mi.load_split("val", root)
    assert isinstance(again.images, np.memmap)
    assert npy.stat().st_mtime_ns == stamp


def test_episodes(root: Path) -> None:
    tasks = mi.miniimagenet_tasks("test", ways=5, shots=2, query=3, root=root)
    batch = tasks.sample(4, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (4, 10, 3, 84, 84) and batch.x_query.shape == (4, 15, 3, 84, 84)
    assert batch.x_support.dtype == torch.float32
    assert 0.0 <= float(batch.x_support.min()) and float(batch.x_support.max()) <= 1.0
    assert sorted(batch.y_support[0].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # each support image is one of the split's images, scaled to [0, 1]
    data = mi.load_split("test", root)
    flat = torch.from_numpy(np.asarray(data.images, dtype=np.float32) / 255).flatten(2)
    for x in batch.x_support[0]:
        hits = (flat == x.flatten()).all(dim=-1).nonzero()
        assert len(hits) == 1
    reference = tasks.fixed_episodes(3, seed=0)
    assert torch.equal(reference.x_query, tasks.fixed_episodes(3, seed=0).x_query)
    assert mi.miniimagenet_tasks("train", ways=3, shots=1, root=root, max_classes=4).num_classes == 4


def test_missing_csv_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as e:
        mi.load_split("train", tmp_path)
    assert str(tmp_path / "miniimagenet" / "train.csv") in str(e.value)
    assert "images" in str(e.value)


def test_missing_and_corrupt_images_are_named(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    (folder / "images" / "n2000000002.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="n2000000002.png"):
        mi.load_split("test", tmp_path)
    (folder / "images" / "n1000000001.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="n1000000001.png"):
        mi.load_split("val", tmp_path)
    assert not list((folder / "cache").glob("*.npy"))  # nothing half-written


def test_unequal_classes_and_bad_csv_are_errors(tmp_path: Path) -> None:
    folder = tmp_path / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_pixels("a", i, (84, 84))).save(folder / "images" / f"{i}.png")
    (folder / "train.csv").write_text("filename,label\n0.png,a\n1.png,a\n2.png,b\n")
    with pytest.raises(DatasetError, match="same number of images"):
        mi.load_split("train", tmp_path)
    (folder / "train.csv").write_text("name;label\n0.png;a\n")
    with pytest.raises(DatasetError, match="filename,label"):
        mi.load_split("train", tmp_path)


@needs_shared(SPLIT_CSV)
def test_the_real_split_files_parse() -> None:
    counts = {s: mi.read_split_csv(SPLIT_CSV / f"{s}.csv") for s in mi.SPLITS}
    assert [len(c) for c in counts.values()] == [64, 16, 20]
    assert all(len(files) == 600 for c in counts.values() for files in c.values())
    assert not set(counts["train"]) & set(counts["test"])
