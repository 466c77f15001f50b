"""Omniglot loading, caching, splits, downloads, and N-way K-shot episodes.

Real data: the project's ``../shared/data/omniglot`` (the official small zips byte for
byte; the full sets rebuilt with identical pixels and names). Expected values are
computed independently from the zips with ``zipfile`` and PIL, not with the loader.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.fewshot import download as dl
from metarl.fewshot import omniglot as og
from metarl.fewshot.episodes import FewShotTasks, rotate_classes
from tests import SHARED_DATA, needs_shared, require_shared, serving

torch.set_num_threads(1)

DATA = SHARED_DATA
OMNIGLOT = DATA / "omniglot"
SMALL = "images_background_small1"
needs_data = needs_shared(OMNIGLOT)


def _link_root(tmp_path: Path, *names: str) -> Path:
    """A data root whose omniglot/ folder links to the shared zips (the shared folder is read-only)."""
    folder = tmp_path / "root" / "omniglot"
    folder.mkdir(parents=True)
    for name in names:
        (folder / f"{name}.zip").symlink_to(OMNIGLOT / f"{name}.zip")
    return tmp_path / "root"


def _characters_in_zip(path: Path, name: str) -> dict[str, list[str]]:
    """Independent listing: ``Alphabet/characterNN -> sorted member names``."""
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(path) as zf:
        for m in zf.namelist():
            parts = m.split("/")
            if m.endswith(".png") and parts[0] == name:
                out.setdefault(f"{parts[1]}/{parts[2]}", []).append(m)
    return {k: sorted(v) for k, v in sorted(out.items())}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, og.OmniglotSet]:
    require_shared(OMNIGLOT / f"{SMALL}.zip")
    root = _link_root(tmp_path_factory.mktemp("small"), SMALL)
    return root, og.load_set(SMALL, root)


# ---------------------------------------------------------------------------- root
def test_resolve_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dl.DATA_ENV, str(tmp_path / "env"))
    assert dl.resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert dl.resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv(dl.DATA_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.resolve_root(None) == tmp_path / "home" / ".cache" / "metarl"
    assert dl.resolve_root("~/x") == tmp_path / "home" / "x"


def test_cache_location_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.CACHE_ENV, raising=False)
    folder = tmp_path / "root" / "omniglot"
    assert dl.cache_folder(folder, "omniglot", None) == folder / "cache"
    assert dl.cache_folder(folder, "omniglot", tmp_path / "c") == tmp_path / "c"
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "env"))
    assert dl.cache_folder(folder, "omniglot", None) == tmp_path / "env" / "omniglot"


@needs_data
def test_a_read_only_data_root_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # like the shared data folder: permission bits deny writing (refused even when running as root)
    monkeypatch.delenv(dl.CACHE_ENV, raising=False)
    root = _link_root(tmp_path, SMALL)
    (root / "omniglot").chmod(0o555)
    try:
        with pytest.raises(dl.DatasetError, match="read-only.*cache_dir"):
            og.load_set(SMALL, root)
        assert not (root / "omniglot" / "cache").exists()
        data = og.load_set(SMALL, root, cache_dir=tmp_path / "cache")  # the way out
        assert data.images.shape[0] == 136
    finally:
        (root / "omniglot").chmod(0o755)


# ---------------------------------------------------------------------------- loading the small set
@needs_data
def test_small_set_counts_shapes_and_names(small_set: tuple[Path, og.OmniglotSet]) -> None:
    _, data = small_set
    expected = _characters_in_zip(OMNIGLOT / f"{SMALL}.zip", SMALL)
    assert len(expected) == 136  # the official small1 subset: 5 alphabets
    assert data.images.shape == (136, 20, 28, 28)
    assert data.images.dtype == np.uint8
    assert data.characters == tuple(f"{SMALL}/{c}" for c in expected)
    assert all(len(v) == 20 for v in expected.values())


@needs_data
def test_pixels_inverted_binary_and_resized(small_set: tuple[Path, og.OmniglotSet]) -> None:
    _, data = small_set
    chars = _characters_in_zip(OMNIGLOT / f"{SMALL}.zip", SMALL)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(OMNIGLOT / f"{SMALL}.zip") as zf:
        for _ in range(5):
            c = int(rng.integers(len(chars)))
            k = int(rng.integers(20))
            raw = zf.read(chars[list(chars)[c]][k])
            with Image.open(io.BytesIO(raw)) as im:
                assert im.mode == "1" and im.size == (105, 105)
                paper = np.asarray(im)  # True = white paper
            full = og.decode_drawing(raw, size=None)
            assert full.dtype == np.float32 and full.shape == (105, 105)
            assert set(np.unique(full)) <= {0.0, 1.0}
            np.testing.assert_array_equal(full, (~paper).astype(np.float32))  # ink is 1
            assert 0.01 < full.mean() < 0.3  # strokes cover a few percent of the page
            # resized: an independent PIL LANCZOS of the inverted image, equal to the cache / 255
            ref = Image.fromarray((~paper).astype(np.uint8) * 255).resize((28, 28), Image.Resampling.LANCZOS)
            ref = np.asarray(ref, dtype=np.float32) / 255
            np.testing.assert_array_equal(og.decode_drawing(raw), ref)
            np.testing.assert_array_equal(data.images[c, k].astype(np.float32) / 255, ref)
    x = data.images.astype(np.float32) / 255
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.02 < x.mean() < 0.3


@needs_data
def test_nearest_matches_the_reference_codes_resize() -> None:
    # PIL resizes one-bit images with NEAREST whatever filter is asked: what the MAML code trained on.
    chars = _characters_in_zip(OMNIGLOT / f"{SMALL}.zip", SMALL)
    with zipfile.ZipFile(OMNIGLOT / f"{SMALL}.zip") as zf:
        raw = zf.read(next(iter(chars.values()))[0])
    with Image.open(io.BytesIO(raw)) as im:
        reference = ~np.asarray(im.resize((28, 28), resample=Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(og.decode_drawing(raw, resample="nearest"), reference.astype(np.float32))
    box = og.decode_drawing(raw, resample="box")
    assert 0.0 <= box.min() and box.max() <= 1.0


@needs_data
def test_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    zip_path = folder / f"{SMALL}.zip"
    zip_path.write_bytes((OMNIGLOT / f"{SMALL}.zip").read_bytes())
    first = og.load_set(SMALL, tmp_path)
    npy = folder / "cache" / f"{SMALL}_28_lanczos.npy"
    stamp = npy.stat().st_mtime_ns
    t0 = time.perf_counter()
    second = og.load_set(SMALL, tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(second.images, np.memmap)
    assert npy.stat().st_mtime_ns == stamp  # not decoded again
    np.testing.assert_array_equal(first.images, second.images)
    os.utime(zip_path, ns=(stamp + 10**9, stamp + 10**9))  # "a new download"
    og.load_set(SMALL, tmp_path)
    assert npy.stat().st_mtime_ns != stamp
    # an extracted folder works too, and gives the same arrays
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "extracted" / "omniglot")
    from_dir = og.load_set(SMALL, tmp_path / "extracted", cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(from_dir.images, first.images)
    assert from_dir.characters == first.characters


@needs_data
def test_rotation_classes_are_rot90_of_the_arrays(small_set: tuple[Path, og.OmniglotSet]) -> None:
    _, data = small_set
    base = data.images[:, :, None]
    images, names = rotate_classes(base, data.characters)
    c = base.shape[0]
    assert images.shape == (4 * c, 20, 1, 28, 28)
    tasks = FewShotTasks(images, ways=5, shots=1, names=names)
    for k in range(4):
        for cls in (0, 17, c - 1):
            expected = np.rot90(data.images[cls], k, axes=(-2, -1)).astype(np.float32) / 255
            np.testing.assert_array_equal(tasks.class_images(k * c + cls)[:, 0].numpy(), expected)
    assert names[c + 3] == data.characters[3] + "/rot90"
    # a rotated drawing is a different image (Omniglot strokes are not rotation-symmetric)
    assert not np.array_equal(images[0], images[c])


# ---------------------------------------------------------------------------- errors
def test_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(dl.DatasetNotFoundError) as e:
        og.load_set("images_background", tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "omniglot" / "images_background.zip") in msg
    assert "download=True" in msg and "METARL_DATA" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_corrupt_zip_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    bad = folder / "images_background.zip"
    bad.write_bytes(b"this is not a zip file" * 100)
    with pytest.raises(dl.DatasetError, match="images_background.zip"):
        og.load_set("images_background", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["images_background.zip"]  # no cache written


def test_damaged_zip_member_names_the_member(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    rng = np.random.default_rng(0)
    path = folder / "images_evaluation.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for d in range(1, 21):
            zf.writestr(f"images_evaluation/Test/character01/0001_{d:02d}.png", _png(rng.random((105, 105)) < 0.1))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("images_evaluation/Test/character01/0001_05.png")
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 100  # inside the stored PNG bytes
    blob[start:start + 50] = bytes(50)
    path.write_bytes(bytes(blob))
    with pytest.raises(dl.DatasetError, match="0001_05.png"):
        og.load_set("images_evaluation", tmp_path)


def _png(ink: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def test_corrupt_image_names_the_member_and_leaves_no_cache(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(folder / "images_evaluation.zip", "w") as zf:
        for d in range(1, 21):
            data = b"garbage, not a PNG" if d == 7 else _png(rng.random((105, 105)) < 0.1)
            zf.writestr(f"images_evaluation/Test/character01/0001_{d:02d}.png", data)
    with pytest.raises(dl.DatasetError, match="images_evaluation/Test/character01/0001_07.png"):
        og.load_set("images_evaluation", tmp_path)
    cache = folder / "cache"
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_layout_errors_name_the_character(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(folder / "images_evaluation.zip", "w") as zf:
        for d in range(1, 20):  # 19 drawings, not 20
            zf.writestr(f"images_evaluation/Test/character01/0001_{d:02d}.png", _png(rng.random((105, 105)) < 0.1))
    with pytest.raises(dl.DatasetError, match="Test/character01 has 19 drawings"):
        og.load_set("images_evaluation", tmp_path)


# ---------------------------------------------------------------------------- splits
def test_vinyals_lists_parse_with_the_papers_counts() -> None:
    train, val, test = (set(og.vinyals_characters(s)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1028, 172, 423)
    assert not (train & val) and not (train & test) and not (val & test)
    assert set(og.vinyals_characters("trainval")) == train | val  # the paper's 1200
    assert {s for s, _ in test} == {"images_evaluation"}
    with pytest.raises(ValueError, match="no validation set"):
        og.load_split("lake", "val")


@needs_data
def test_vinyals_split_matches_the_full_data(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = _link_root(tmp_path_factory.mktemp("full"), *og.OFFICIAL_SETS)
    everything = {(s, c) for s in og.OFFICIAL_SETS for c in _characters_in_zip(OMNIGLOT / f"{s}.zip", s)}
    assert len(everything) == 1623
    named = set().union(*(og.vinyals_characters(s) for s in ("train", "val", "test")))
    assert named == everything  # the split covers every character exactly once
    train = og.omniglot_tasks("trainval", ways=5, shots=1, root=root)
    test = og.omniglot_tasks("test", ways=5, shots=1, root=root)
    assert train.num_classes == 4 * 1200  # rotations for meta-training classes
    assert test.num_classes == 423  # none for test classes
    assert not set(train.names) & set(test.names)
    # rows hold the named characters: compare one with an independent decode
    name = test.names[100]
    s, char = name.split("/", 1)
    with zipfile.ZipFile(OMNIGLOT / f"{s}.zip") as zf:
        raw = zf.read(_characters_in_zip(OMNIGLOT / f"{s}.zip", s)[char][3])
    np.testing.assert_array_equal(test.class_images(100)[3, 0].numpy(), og.decode_drawing(raw))
    lake = og.omniglot_tasks("test", ways=5, shots=1, split="lake", root=root)
    assert lake.num_classes == 659
    quick = og.omniglot_tasks("train", ways=5, shots=1, root=root, max_classes=10)
    assert quick.num_classes == 40


# ---------------------------------------------------------------------------- download
def _serve(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@needs_data
def test_download_over_http_verifies_the_official_checksum(tmp_path: Path) -> None:
    served = tmp_path / "mirror"
    served.mkdir()
    (served / f"{SMALL}.zip").write_bytes((OMNIGLOT / f"{SMALL}.zip").read_bytes())
    server, url = _serve(served)
    try:
        data = og.load_set(SMALL, tmp_path / "root", download=True, base_url=url)
    finally:
        server.shutdown()
    dest = tmp_path / "root" / "omniglot" / f"{SMALL}.zip"
    assert dl.sha256_of(dest) == dl.OMNIGLOT_FILES[f"{SMALL}.zip"].sha256
    assert data.images.shape == (136, 20, 28, 28)
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


@needs_data
def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    served = tmp_path / "mirror"
    served.mkdir()
    # the wrong bytes under the right name (small2 served as small1)
    (served / f"{SMALL}.zip").write_bytes((OMNIGLOT / "images_background_small2.zip").read_bytes())
    server, url = _serve(served)
    try:
        with pytest.raises(dl.ChecksumError, match="does not match|expected"):
            og.load_set(SMALL, tmp_path / "root", download=True, base_url=url)
    finally:
        server.shutdown()
    folder = tmp_path / "root" / "omniglot"
    assert list(folder.iterdir()) == []  # neither the zip nor a temporary file


def test_download_env_override_checksum_and_missing_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(5000)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.zip").write_bytes(payload)
    table = {"x.zip": dl.RemoteFile("x.zip", hashlib.sha256(payload).hexdigest(), len(payload))}
    with serving(tmp_path / "src") as url:
        monkeypatch.setenv(dl.OMNIGLOT_URL_ENV, url)
        [got] = dl.download_omniglot(tmp_path / "dst", ("x.zip",), files=table)
        assert got.read_bytes() == payload
        # a wrong digest: a one-line error naming both digests, and the destination stays absent
        bad = {"x.zip": dl.RemoteFile("x.zip", "0" * 64, len(payload))}
        with pytest.raises(dl.ChecksumError) as e:
            dl.download_file(url + "x.zip", tmp_path / "dst2" / "x.zip", sha256="0" * 64, size=5000, retries=0)
        assert "0" * 64 in str(e.value) and table["x.zip"].sha256 in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(dl.ChecksumError):
            dl.download_omniglot(tmp_path / "dst2", ("x.zip",), files=bad)
        assert list((tmp_path / "dst2").iterdir()) == []
        # a missing URL is a DownloadError, also without leftovers
        with pytest.raises(dl.DownloadError, match="nothere.zip"):
            dl.download_file(url + "nothere.zip", tmp_path / "dst3" / "n.zip", sha256="0" * 64, retries=0)
        assert list((tmp_path / "dst3").iterdir()) == []
    with pytest.raises(dl.DownloadError, match="only https://, http://"):  # pooch has no file://
        dl.download_file((tmp_path / "src" / "x.zip").as_uri(), tmp_path / "dst4" / "x.zip", sha256="0" * 64)


def test_download_retries_a_failing_server(tmp_path: Path) -> None:
    payload = os.urandom(3000)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.zip").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    with serving(tmp_path / "src", fail_first=1) as url:  # one 503, then the file
        got = dl.download_file(url + "x.zip", tmp_path / "dst" / "x.zip", sha256=digest, retries=1)
    assert got.read_bytes() == payload
    with serving(tmp_path / "src", fail_first=5) as url, pytest.raises(dl.DownloadError, match="503"):
        dl.download_file(url + "x.zip", tmp_path / "dst2" / "x.zip", sha256=digest, retries=1)
    assert list((tmp_path / "dst2").iterdir()) == []


# ---------------------------------------------------------------------------- episodes
def _coded_images(classes: int, per_class: int) -> np.ndarray:
    """Image ``[c, m]`` holds c in pixel (0, 0) and m in pixel (0, 1): outputs say where they came from."""
    images = np.zeros((classes, per_class, 1, 4, 4), np.float32)
    images[:, :, 0, 0, 0] = np.arange(classes)[:, None]
    images[:, :, 0, 0, 1] = np.arange(per_class)[None, :]
    return images


@pytest.mark.parametrize("ways,shots,query", [(5, 1, 15), (20, 5, 5), (3, 2, 0)])
def test_episodes_structure(ways: int, shots: int, query: int) -> None:
    tasks = FewShotTasks(_coded_images(50, 20), ways=ways, shots=shots, query=query)
    batch = tasks.sample(64, torch.Generator().manual_seed(1))
    assert batch.x_support.shape == (64, ways * shots, 1, 4, 4)
    assert batch.x_query.shape == (64, ways * query, 1, 4, 4)
    assert batch.y_support.dtype == torch.int64 and batch.y_query.dtype == torch.int64
    for t in range(64):
        cs, ms = batch.x_support[t, :, 0, 0, 0].long(), batch.x_support[t, :, 0, 0, 1].long()
        cq, mq = batch.x_query[t, :, 0, 0, 0].long(), batch.x_query[t, :, 0, 0, 1].long()
        assert sorted(batch.y_support[t].tolist()) == sorted(list(range(ways)) * shots)
        assert sorted(batch.y_query[t].tolist()) == sorted(list(range(ways)) * query)
        label_of = {}
        for c, y in zip(torch.cat([cs, cq]).tolist(), torch.cat([batch.y_support[t], batch.y_query[t]]).tolist()):
            assert label_of.setdefault(c, y) == y  # one label per class, consistently
        assert len(label_of) == ways  # N distinct classes
        assert len(set(label_of.values())) == ways
        support = set(zip(cs.tolist(), ms.tolist()))
        query_set = set(zip(cq.tolist(), mq.tolist()))
        assert len(support) == ways * shots and len(query_set) == ways * query  # no repeats
        assert not support & query_set  # disjoint support and query


def test_episodes_labels_are_permuted_and_reproducible() -> None:
    tasks = FewShotTasks(_coded_images(30, 20), ways=5, shots=1, query=2)
    a = tasks.sample(400, torch.Generator().manual_seed(7))
    b = tasks.sample(400, torch.Generator().manual_seed(7))
    c = tasks.sample(400, torch.Generator().manual_seed(8))
    for f in ("x_support", "y_support", "x_query", "y_query"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.x_support, c.x_support)
    # the label of a class is not tied to its index: the smallest class id gets every label
    smallest = a.x_support[:, :, 0, 0, 0].argmin(dim=1)
    labels = a.y_support.gather(1, smallest[:, None]).squeeze(1)
    counts = torch.bincount(labels, minlength=5)
    assert counts.min() > 40  # ~80 each of 400
    # positions do not give the label away either
    assert len(set(a.y_support[:, 0].tolist())) == 5
    # the global RNG is not used
    torch.manual_seed(0)
    x = tasks.sample(3, torch.Generator().manual_seed(1)).x_support
    torch.manual_seed(1)
    assert torch.equal(x, tasks.sample(3, torch.Generator().manual_seed(1)).x_support)


def test_fixed_episodes_do_not_depend_on_chunking() -> None:
    tasks = FewShotTasks(_coded_images(30, 20), ways=5, shots=1, query=3)
    whole = tasks.fixed_episodes(10, seed=3)
    parts = [tasks.fixed_episodes(4, seed=3, start=0), tasks.fixed_episodes(6, seed=3, start=4)]
    for f in ("x_support", "y_support", "x_query", "y_query"):
        assert torch.equal(getattr(whole, f), torch.cat([getattr(p, f) for p in parts]))
    assert not torch.equal(whole.x_support, tasks.fixed_episodes(10, seed=4).x_support)


def test_episode_validation_and_uint8_scaling() -> None:
    with pytest.raises(ValueError, match="need at least 6 classes"):
        FewShotTasks(_coded_images(5, 20), ways=6, shots=1)
    with pytest.raises(ValueError, match="exceeds the 20 examples"):
        FewShotTasks(_coded_images(5, 20), ways=5, shots=6, query=15)
    u8 = np.full((6, 20, 1, 2, 2), 255, np.uint8)
    batch = FewShotTasks(u8, ways=5, shots=1, query=1).sample(2, torch.Generator().manual_seed(0))
    assert batch.x_support.dtype == torch.float32 and torch.all(batch.x_support == 1.0)


@needs_data
def test_sampling_real_omniglot_is_fast(small_set: tuple[Path, og.OmniglotSet]) -> None:
    _, data = small_set
    images, names = rotate_classes(data.images[:, :, None], data.characters)
    tasks = FewShotTasks(images, ways=5, shots=1, query=15, names=names)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(10):
        batch = tasks.sample(32, g)
    assert (time.perf_counter() - t0) / 10 < 0.1
    assert batch.x_support.shape == (32, 5, 1, 28, 28) and batch.x_query.shape == (32, 75, 1, 28, 28)
    assert 0.0 <= float(batch.x_query.min()) and float(batch.x_query.max()) <= 1.0


def test_split_files_ship_with_the_package() -> None:
    folder = Path(og.__file__).parent / "splits"
    assert (folder / "LICENSE").exists()
    for s in ("train", "val", "test"):
        json.loads((folder / f"{s}.json").read_text())
