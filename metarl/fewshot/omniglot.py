"""Omniglot (Lake et al. 2015, Science 350:1332) for few-shot classification.

Files, in the official layout, under ``<root>/omniglot/`` (``root`` from
:func:`metarl.fewshot.download.resolve_root`): ``images_background.zip`` (964 characters
of 30 alphabets) and ``images_evaluation.zip`` (659 characters of 20 alphabets), or the
folders they extract to; each holds ``images_<set>/<Alphabet>/characterNN/<id>_<drawer>.png``,
20 drawings per character, 105x105 one-bit PNGs with the ink black (``False``). The
official small subsets ``images_background_small{1,2}`` are read the same way.

Preprocessing, as in Santoro et al. 2016 (arXiv 1605.06065) and Finn et al. 2017 (arXiv
1703.03400, sec. 5.2): invert so that ink is 1.0 and paper 0.0, resize 105x105 -> 28x28,
float32. Resampling filters (``resample``):

- ``"lanczos"`` (default): PIL's LANCZOS on the 8-bit ink image, anti-aliased grey levels
  (PIL clips them to [0, 1]); what most PyTorch reimplementations feed the network.
- ``"box"``: area averaging; smoother, no ringing, values exactly in [0, 1].
- ``"nearest"``: binary 28x28 images. This is what the MAML reference code actually
  trained on: its resize script asks PIL for LANCZOS on the one-bit PNGs, and PIL
  silently uses NEAREST for one-bit images. Choose it to match that code bit for bit.

A set is decoded once (about 4 s for the 19,280 background drawings on one core) and
cached as a memory-mapped ``.npy`` ``[characters, 20, size, size]`` (uint8, see
:class:`OmniglotSet`) with a JSON of character names beside it, under
``<root>/omniglot/cache/`` (or ``cache_dir``, or ``$METARL_CACHE/omniglot``); later
loads map the file (milliseconds). The cache is rebuilt when the source zip/folder
changes (size and modification time) or the preprocessing differs.

Splits of characters into meta-train / meta-val / meta-test:

- ``"vinyals"`` (Vinyals et al. 2016, arXiv 1606.04080; the split of the MAML paper's
  Omniglot table): 1028 train + 172 val characters (together the paper's 1200
  meta-training characters) and 423 test characters, drawn from both official sets. The
  lists ship with this package (``metarl/fewshot/splits/*.json``, MIT, LICENSE beside them).
- ``"lake"``: the background set for meta-training, the evaluation set for testing (no
  validation set).

Meta-training classes are augmented with rotations by 90/180/270 degrees (4x the classes;
Santoro et al. 2016), test classes are not; see :mod:`metarl.fewshot.episodes`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from metarl.fewshot.download import (
    DatasetError,
    DatasetNotFoundError,
    cache_folder,
    download_omniglot,
    ensure_writable_dir,
    resolve_root,
)
from metarl.fewshot.episodes import FewShotTasks, rotate_classes
from metarl.progress import progress

OFFICIAL_SETS = ("images_background", "images_evaluation")
SMALL_SETS = ("images_background_small1", "images_background_small2")
DRAWINGS_PER_CHARACTER = 20
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
            "nearest": Image.Resampling.NEAREST}
SPLITS = ("vinyals", "lake")
SUBSETS = ("train", "val", "trainval", "test")
_CACHE_VERSION = 2


@dataclass(frozen=True, eq=False)
class OmniglotSet:
    """The decoded drawings of one official set (or several characters of them).

    Attributes:
        images: ``[characters, 20, size, size]`` uint8, ink 255, paper 0 (usually a
            read-only ``np.memmap`` of the cache). PIL resizes 8-bit images, so the
            preprocessed values are exactly multiples of 1/255 and uint8 stores them
            losslessly in a quarter of the space; divide by 255 for the float32 inputs
            (ink 1.0) the models see, as :class:`~metarl.fewshot.episodes.FewShotTasks` does.
        characters: ``"<set>/<Alphabet>/characterNN"`` for each row, sorted.
    """

    images: np.ndarray
    characters: tuple[str, ...]


# ---------------------------------------------------------------------------- decoding
def _decode_u8(file: IO[bytes] | bytes, size: int | None, resample: str) -> np.ndarray:
    if isinstance(file, bytes):
        file = io.BytesIO(file)
    with Image.open(file) as im:
        ink = (np.asarray(im.convert("L")) < 128).astype(np.uint8) * 255
    if size is None:
        return ink
    return np.asarray(Image.fromarray(ink).resize((size, size), RESAMPLE[resample]))


def decode_drawing(file: IO[bytes] | bytes, size: int | None = 28, resample: str = "lanczos") -> np.ndarray:
    """One Omniglot PNG -> float32 ``[size, size]`` with ink 1.0 (``[105, 105]`` when ``size=None``).

    Without resizing the result is exactly 0/1. Ink is any pixel darker than mid-grey, so
    one-bit (the official files), greyscale and RGB drawings all work. Equal to the cached
    arrays divided by 255.
    """
    return _decode_u8(file, size, resample).astype(np.float32) / 255.0


def omniglot_folder(root: str | os.PathLike[str] | None) -> Path:
    """``<resolved root>/omniglot``, where the zips, extracted folders and cache live."""
    return resolve_root(root) / "omniglot"


def _how_to_get(name: str) -> str:
    return (f"get {name}.zip from https://github.com/brendenlake/omniglot (python/), or pass "
            "download=True (config dataset.download: true), or point root / $METARL_DATA at a folder "
            f"holding omniglot/{name}.zip")


def _find_source(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.zip", folder / name):
        if candidate.exists():
            return candidate
    return None


def _source_signature(source: Path) -> dict[str, object]:
    if source.is_file():
        st = source.stat()
        return {"path": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = [p.stat() for p in source.rglob("*.png")]
    return {"path": str(source.resolve()), "files": len(files),
            "bytes": sum(s.st_size for s in files), "mtime_ns": max((s.st_mtime_ns for s in files), default=0)}


def _list_drawings(source: Path, name: str) -> tuple[list[str], dict[str, list[str]]]:
    """Characters (sorted ``Alphabet/characterNN``) and their 20 drawing paths (sorted)."""
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as zf:
                members = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{source} is not a readable zip archive ({e}); delete it and download "
                               "it again") from e
        rels = [m[len(name) + 1:] for m in members if m.startswith(name + "/") and m.endswith(".png")]
    else:
        rels = [p.relative_to(source).as_posix() for p in source.rglob("*.png")]
    by_char: dict[str, list[str]] = {}
    for rel in rels:
        parts = rel.split("/")
        if len(parts) != 3:
            raise DatasetError(f"{source}: unexpected entry {name}/{rel}; expected "
                               f"{name}/<Alphabet>/characterNN/<id>_<drawer>.png")
        by_char.setdefault(f"{parts[0]}/{parts[1]}", []).append(rel)
    if not by_char:
        raise DatasetError(f"{source} holds no drawings under {name}/<Alphabet>/characterNN/")
    for char, files in by_char.items():
        if len(files) != DRAWINGS_PER_CHARACTER:
            raise DatasetError(f"{source}: {name}/{char} has {len(files)} drawings, expected "
                               f"{DRAWINGS_PER_CHARACTER}")
        files.sort()
    return sorted(by_char), by_char


def _iter_drawing_bytes(source: Path, name: str, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    if source.is_file():
        with zipfile.ZipFile(source) as zf:
            for rel in rels:
                try:
                    data = zf.read(f"{name}/{rel}")
                except (zipfile.BadZipFile, OSError, ValueError) as e:  # CRC / decompression errors
                    raise DatasetError(f"{source}: cannot read {name}/{rel} ({e}); the archive is "
                                       "corrupt, delete it and download it again") from e
                yield f"{source}:{name}/{rel}", data
    else:
        for rel in rels:
            path = source / rel
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DatasetError(f"cannot read {path} ({e})") from e
            yield str(path), data


def _decode_to_cache(source: Path, name: str, npy: Path, meta: Path, size: int, resample: str,
                     signature: dict[str, object]) -> None:
    characters, by_char = _list_drawings(source, name)
    rels = [rel for c in characters for rel in by_char[c]]
    ensure_writable_dir(npy.parent)
    meta.unlink(missing_ok=True)  # the meta file marks a complete cache: drop it first
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp.npy")
    try:
        shape = (len(characters), DRAWINGS_PER_CHARACTER, size, size)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        flat = out.reshape(-1, size, size)
        drawings = _iter_drawing_bytes(source, name, rels)
        with progress(drawings, total=len(rels), desc=f"decoding {name}", unit="img") as bar:
            for i, (label, data) in enumerate(bar):
                try:
                    flat[i] = _decode_u8(data, size, resample)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                    raise DatasetError(f"{label} is not a readable PNG image ({e})") from e
        out.flush()
        del out, flat
        os.replace(tmp, npy)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {"version": _CACHE_VERSION, "set": name, "size": size, "resample": resample,
            "source": signature, "characters": characters}
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(info))
    os.replace(tmp_meta, meta)


def load_set(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    size: int = 28,
    resample: str = "lanczos",
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
) -> OmniglotSet:
    """Load one official set (``images_background``, ``images_evaluation`` or a small one).

    Looks for ``<root>/omniglot/<name>.zip``, then the extracted ``<root>/omniglot/<name>/``.
    Decodes it into the cache on first use (see the module docstring), then maps the cache.

    Args:
        name: one of :data:`OFFICIAL_SETS` or :data:`SMALL_SETS`.
        root: data root (else ``$METARL_DATA``, else ``~/.cache/metarl``).
        download: fetch the official zip into ``<root>/omniglot/`` when it is missing
            (verified by SHA-256, see :mod:`metarl.fewshot.download`).
        size: output side length (28 in the paper).
        resample: ``"lanczos"``, ``"box"`` or ``"nearest"`` (see the module docstring).
        cache_dir: where the decoded arrays go (default ``$METARL_CACHE/omniglot``, else
            ``<root>/omniglot/cache``); set it when the data root is read-only.
        base_url: override of the download URL folder (mirrors, tests).

    Raises:
        DatasetNotFoundError: no zip or folder (and ``download=False``); says where it looked.
        DatasetError: a corrupt archive or image, or an unexpected layout; names the file.
    """
    if name not in OFFICIAL_SETS + SMALL_SETS:
        raise ValueError(f"unknown Omniglot set {name!r}; expected one of {OFFICIAL_SETS + SMALL_SETS}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample={resample!r}; expected one of {sorted(RESAMPLE)}")
    folder = omniglot_folder(root)
    cache = cache_folder(folder, "omniglot", cache_dir)
    npy = cache / f"{name}_{size}_{resample}.npy"
    meta = cache / f"{name}_{size}_{resample}.json"

    source = _find_source(folder, name)
    if source is None and download:
        source = download_omniglot(folder, (f"{name}.zip",), base_url=base_url)[0]
    info = json.loads(meta.read_text()) if meta.exists() and npy.exists() else None
    if source is None:
        if info is not None and info.get("version") == _CACHE_VERSION:
            return OmniglotSet(np.load(npy, mmap_mode="r"), tuple(f"{name}/{c}" for c in info["characters"]))
        raise DatasetNotFoundError(f"Omniglot set {name!r} not found: looked for {folder / (name + '.zip')} "
                                   f"and the folder {folder / name}; {_how_to_get(name)}")
    signature = _source_signature(source)
    fresh = (info is not None and info.get("version") == _CACHE_VERSION
             and info.get("source") == signature and info.get("size") == size)
    if not fresh:
        _decode_to_cache(source, name, npy, meta, size, resample, signature)
        info = json.loads(meta.read_text())
    images = np.load(npy, mmap_mode="r")
    return OmniglotSet(images, tuple(f"{name}/{c}" for c in info["characters"]))


# ---------------------------------------------------------------------------- splits
def vinyals_split(subset: str) -> dict[str, dict[str, list[str]]]:
    """The Vinyals et al. 2016 character lists shipped with the package.

    ``subset`` is ``"train"`` (1028), ``"val"`` (172) or ``"test"`` (423). Returns
    ``{"background"|"evaluation": {alphabet: [characterNN, ...]}}``.
    """
    if subset not in ("train", "val", "test"):
        raise ValueError(f"vinyals subsets are train, val, test; got {subset!r}")
    text = resources.files("metarl.fewshot").joinpath("splits", f"{subset}.json").read_text()
    return json.loads(text)


def vinyals_characters(subset: str) -> list[tuple[str, str]]:
    """The characters of a ``vinyals`` subset as ``(set, "Alphabet/characterNN")`` pairs, sorted.

    ``subset`` is ``"train"`` (1028), ``"val"`` (172), ``"trainval"`` (train + val: the
    paper's 1200 meta-training characters) or ``"test"`` (423).
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    out = []
    for part in (("train", "val") if subset == "trainval" else (subset,)):
        for set_key, alphabets in vinyals_split(part).items():
            for alphabet, chars in alphabets.items():
                out += [(f"images_{set_key}", f"{alphabet}/{c}") for c in chars]
    return sorted(out)


def load_split(
    split: str = "vinyals",
    subset: str = "trainval",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    size: int = 28,
    resample: str = "lanczos",
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    max_classes: int = 0,
) -> OmniglotSet:
    """The drawings of one subset of a split, in memory: ``[characters, 20, size, size]`` uint8.

    ``split="vinyals"``: ``subset`` as in :func:`vinyals_characters`; characters come from
    both official sets. ``split="lake"``: ``"train"``/``"trainval"`` is the background set,
    ``"test"`` the evaluation set, and there is no ``"val"``. ``max_classes > 0`` keeps only
    the first that many characters (sorted order; for quick runs). Other arguments as in
    :func:`load_set`, which loads and caches each official set used.

    Raises:
        DatasetError: a character named by the split is missing from the data (names it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; expected one of {SPLITS}")
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    kwargs = dict(download=download, size=size, resample=resample, cache_dir=cache_dir, base_url=base_url)
    if split == "lake":
        if subset == "val":
            raise ValueError("the lake split has no validation set (background = train, evaluation = "
                             "test); use split='vinyals' for one")
        chosen = load_set("images_evaluation" if subset == "test" else "images_background", root, **kwargs)
        images, names = chosen.images, chosen.characters
    else:
        wanted = vinyals_characters(subset)
        loaded = {s: load_set(s, root, **kwargs) for s in sorted({s for s, _ in wanted})}
        index = {c: i for s in loaded for i, c in enumerate(loaded[s].characters)}
        names = tuple(f"{s}/{c}" for s, c in wanted)
        missing = [n for n in names if n not in index]
        if missing:
            raise DatasetError(f"the vinyals split names {len(missing)} characters missing from the data, "
                               f"e.g. {missing[:3]}")
        images = np.stack([loaded[n.split("/", 1)[0]].images[index[n]] for n in names])
    if max_classes > 0:
        images, names = images[:max_classes], names[:max_classes]
    return OmniglotSet(np.array(images) if isinstance(images, np.memmap) else images, tuple(names))


def omniglot_tasks(
    subset: str,
    *,
    ways: int,
    shots: int,
    query: int = 15,
    split: str = "vinyals",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    augment_rotations: bool | None = None,
    max_classes: int = 0,
    size: int = 28,
    resample: str = "lanczos",
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
) -> FewShotTasks:
    """N-way K-shot Omniglot episodes over one subset, inputs ``[1, size, size]``.

    ``augment_rotations=None`` means: rotations for the meta-training subsets (``train``,
    ``trainval``), none for ``val`` and ``test``, as in Santoro et al. 2016 / Finn et al.
    2017. For the paper's Omniglot setup use ``subset="trainval"`` for meta-training (1200
    characters, 4800 classes with rotations) and ``"test"`` (423) for evaluation.
    """
    data = load_split(split, subset, root, download=download, size=size, resample=resample,
                      cache_dir=cache_dir, base_url=base_url, max_classes=max_classes)
    rotations = subset in ("train", "trainval") if augment_rotations is None else augment_rotations
    images, names = data.images[:, :, None], data.characters
    if rotations:
        images, names = rotate_classes(images, names)
    return FewShotTasks(images, ways=ways, shots=shots, query=query, names=names)
