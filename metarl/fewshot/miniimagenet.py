"""MiniImagenet (Vinyals et al. 2016, arXiv 1606.04080) in the split of Ravi & Larochelle
2017 (64 / 16 / 20 classes of 600 images), as used by Finn et al. 2017 (arXiv 1703.03400,
sec. 5.2).

The images are ImageNet's and cannot be downloaded by this package: point ``root`` at a
folder you have, laid out as the standard split,

    <root>/miniimagenet/{train,val,test}.csv      rows ``filename,label`` (a header line first)
    <root>/miniimagenet/images/<filename>         any format PIL reads, RGB or not

(``root`` from :func:`metarl.fewshot.download.resolve_root`; the three CSV files of the
split are also in ``shared/data/miniimagenet_splits`` of this project). Images are
converted to RGB and, when they are not already ``size x size`` (84 in the paper),
resized with PIL's LANCZOS filter (what the reference code's preprocessing script used).

Each split is decoded once into a memory-mapped ``.npy`` cache
``<root>/miniimagenet/cache/<split>_<size>.npy`` (or under ``cache_dir`` /
``$METARL_CACHE``) of shape ``[classes, images per class, 3, size, size]`` uint8 (the
38,400 training images take 813 MB as uint8, 3.3 GB as float32;
:class:`~metarl.fewshot.episodes.FewShotTasks` gathers an episode's images from the map and
scales them to [0, 1] float32), with a JSON of class names and a signature of the CSV and
the image files; the cache is rebuilt when they change. Classes are sorted by label,
images within a class by file name; every class must have the same number of images.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metarl.fewshot.download import (
    DatasetError,
    DatasetNotFoundError,
    cache_folder,
    ensure_writable_dir,
    resolve_root,
)
from metarl.fewshot.episodes import FewShotTasks
from metarl.progress import progress

SPLITS = ("train", "val", "test")
_CACHE_VERSION = 1


@dataclass(frozen=True, eq=False)
class MiniImagenetSet:
    """The decoded images of one split.

    Attributes:
        images: ``[classes, images per class, 3, size, size]`` uint8 RGB (usually a read-only
            ``np.memmap`` of the cache).
        classes: the label (e.g. WordNet id ``n01532829``) of each row, sorted.
    """

    images: np.ndarray
    classes: tuple[str, ...]


def miniimagenet_folder(root: str | os.PathLike[str] | None) -> Path:
    """``<resolved root>/miniimagenet``, where the CSVs, ``images/`` and the cache live."""
    return resolve_root(root) / "miniimagenet"


def read_split_csv(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """``label -> sorted file names`` from a ``filename,label`` CSV (with a header line)."""
    path = Path(path)
    by_label: dict[str, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None or [h.strip() for h in header] != ["filename", "label"]:
                raise DatasetError(f"{path}: expected a header line 'filename,label', got {header}")
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                if len(row) != 2:
                    raise DatasetError(f"{path}:{line}: expected 'filename,label', got {row}")
                by_label.setdefault(row[1].strip(), []).append(row[0].strip())
    except (UnicodeDecodeError, csv.Error) as e:  # a binary or corrupt file under the CSV's name
        raise DatasetError(f"{path} is not a UTF-8 CSV file ({type(e).__name__} {e}); put the split's "
                           "filename,label CSV there") from None
    if not by_label:
        raise DatasetError(f"{path} lists no images")
    return {label: sorted(files) for label, files in sorted(by_label.items())}


def _signature(csv_path: Path, image_dir: Path, files: list[str]) -> dict[str, object]:
    stats = []
    for name in files:
        try:
            stats.append((image_dir / name).stat())
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{csv_path.name} lists {name}, but {image_dir / name} does not "
                                       "exist") from None
    return {"csv_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(), "images": len(stats),
            "bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def decode_image(path: str | os.PathLike[str], size: int = 84) -> np.ndarray:
    """One image -> ``[3, size, size]`` uint8 RGB (LANCZOS-resized when not already that size)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path} is not a readable image ({e})") from e


def _decode_to_cache(by_label: dict[str, list[str]], image_dir: Path, npy: Path, meta: Path, size: int,
                     signature: dict[str, object]) -> None:
    ensure_writable_dir(npy.parent)
    meta.unlink(missing_ok=True)  # the meta file marks a complete cache: drop it first
    classes = list(by_label)
    per_class = len(by_label[classes[0]])
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(classes), per_class, 3, size, size))
        with progress(total=len(classes) * per_class, desc=f"decoding MiniImagenet {npy.stem}", unit="img") as bar:
            for c, label in enumerate(classes):
                for i, name in enumerate(by_label[label]):
                    out[c, i] = decode_image(image_dir / name, size)
                bar.update(len(by_label[label]))
        out.flush()
        del out
        os.replace(tmp, npy)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps({"version": _CACHE_VERSION, "size": size, "classes": classes,
                                    "signature": signature}))
    os.replace(tmp_meta, meta)


def load_split(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    size: int = 84,
    cache_dir: str | os.PathLike[str] | None = None,
) -> MiniImagenetSet:
    """Load (decoding and caching on first use) one split: ``"train"``, ``"val"`` or ``"test"``.

    Args:
        split: which CSV, ``<root>/miniimagenet/<split>.csv``.
        root: data root (else ``$METARL_DATA``, else ``~/.cache/metarl``).
        size: image side (84 in the paper).
        cache_dir: where the decoded arrays go (default ``$METARL_CACHE/miniimagenet``,
            else ``<root>/miniimagenet/cache``).

    Raises:
        DatasetNotFoundError: the CSV or an image it lists is missing (names the path).
        DatasetError: an unreadable image (names it), a malformed CSV, or classes with
            different numbers of images.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MiniImagenet split {split!r}; expected one of {SPLITS}")
    folder = miniimagenet_folder(root)
    csv_path = folder / f"{split}.csv"
    image_dir = folder / "images"
    if not csv_path.exists():
        raise DatasetNotFoundError(
            f"MiniImagenet split file not found: looked for {csv_path}. MiniImagenet cannot be "
            f"downloaded automatically: put the Ravi & Larochelle split (train.csv, val.csv, test.csv) "
            f"in {folder} and the images in {image_dir}/, or point root / $METARL_DATA at the folder "
            "holding miniimagenet/")
    by_label = read_split_csv(csv_path)
    counts = {label: len(files) for label, files in by_label.items()}
    if len(set(counts.values())) != 1:
        raise DatasetError(f"{csv_path}: every class needs the same number of images, got {counts}")
    signature = _signature(csv_path, image_dir, [f for files in by_label.values() for f in files])

    cache = cache_folder(folder, "miniimagenet", cache_dir)
    npy, meta = cache / f"{split}_{size}.npy", cache / f"{split}_{size}.json"
    info = json.loads(meta.read_text()) if meta.exists() and npy.exists() else None
    if not (info and info.get("version") == _CACHE_VERSION and info.get("signature") == signature
            and info.get("size") == size):
        _decode_to_cache(by_label, image_dir, npy, meta, size, signature)
        info = json.loads(meta.read_text())
    return MiniImagenetSet(np.load(npy, mmap_mode="r"), tuple(info["classes"]))


def miniimagenet_tasks(
    split: str,
    *,
    ways: int,
    shots: int,
    query: int = 15,
    root: str | os.PathLike[str] | None = None,
    size: int = 84,
    cache_dir: str | os.PathLike[str] | None = None,
    max_classes: int = 0,
) -> FewShotTasks:
    """N-way K-shot MiniImagenet episodes over one split; inputs ``[3, size, size]`` in [0, 1].

    The images stay memory-mapped (uint8); each :meth:`~FewShotTasks.sample` reads only the
    episode's images. No rotation augmentation (the paper used none for MiniImagenet).
    ``max_classes > 0`` keeps the first that many classes (for quick runs).
    """
    data = load_split(split, root, size=size, cache_dir=cache_dir)
    images, classes = data.images, data.classes
    if max_classes > 0:
        images, classes = images[:max_classes], classes[:max_classes]
    return FewShotTasks(images, ways=ways, shots=shots, query=query, names=classes)
