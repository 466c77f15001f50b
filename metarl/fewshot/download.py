"""Where the data lives, and fetching the official Omniglot files safely (through :mod:`pooch`).

Root resolution (one rule for every dataset): an explicit ``root`` (config
``dataset.root``), else the ``$METARL_DATA`` environment variable, else
``~/.cache/metarl``. Datasets keep their own folder below it (``<root>/omniglot``,
``<root>/miniimagenet``). Decoded arrays are cached in ``<root>/<dataset>/cache`` unless
a ``cache_dir`` (config ``dataset.cache_dir``) or ``$METARL_CACHE`` says otherwise, which
is needed when the data root is read-only.

Downloads are pooch's: streamed into a temporary file in the destination folder, retried
(:data:`RETRIES`), checked against the SHA-256 of :data:`OMNIGLOT_FILES`, and only then moved
into place (a rename on one filesystem, atomic); a failed or interrupted download leaves nothing
under the expected name. What is left here is the contract around it: the checksum table,
``http(s)`` URLs only (pooch has no ``file://``; local zips go straight into the folder),
a mirror through ``base_url`` or ``$METARL_OMNIGLOT_URL``, the user's umask on the placed file,
and one-line errors that name both digests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarl.checkpoint import default_file_mode

DATA_ENV = "METARL_DATA"
"""Environment variable naming the data root when no explicit root is given."""

CACHE_ENV = "METARL_CACHE"
"""Environment variable naming a folder for decoded-array caches (else under the data root)."""

OMNIGLOT_URL_ENV = "METARL_OMNIGLOT_URL"
"""Environment variable overriding :data:`OMNIGLOT_URL_BASE` (a mirror; a loopback server in tests)."""

OMNIGLOT_URL_BASE = "https://github.com/brendenlake/omniglot/raw/master/python/"
"""Brenden Lake's official Omniglot repository (Lake et al. 2015, Science 350:1332)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``<base_url><name>`` with its expected size and SHA-256 (``None`` when no
    trustworthy value is known: the download is then refused unless ``verify=False`` is passed)."""

    name: str
    sha256: str | None
    size: int | None


# Checksums of the official zips. Provenance, stated honestly:
# - images_background_small{1,2}.zip: computed here from the shared copies, which are the
#   official files byte for byte (the data README says so); TensorFlow Datasets' published
#   url_checksums/omniglot.txt lists the same sizes and digests.
# - images_background.zip / images_evaluation.zip: the shared copies here were rebuilt
#   (same pixels and names, different PNG bytes), so these digests could NOT be checked on
#   this machine. They are the values TensorFlow Datasets publishes for the official URLs
#   (the same list whose small-zip entries match the verified files above). If the
#   upstream files ever change, the download fails loudly with both digests in the message.
OMNIGLOT_FILES: dict[str, RemoteFile] = {f.name: f for f in (
    RemoteFile("images_background.zip", "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640", 9464212),
    RemoteFile("images_evaluation.zip", "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee", 6462886),
    RemoteFile("images_background_small1.zip", "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
               1319022),
    RemoteFile("images_background_small2.zip", "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
               1580917),
)}


MAX_MESSAGE_CHARS = 400
"""Longest message of the errors below: a binary file read as text must not print 10 KB of escapes."""


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed) of at most about ``limit`` characters.

    A longer message loses its middle (typically the escaped bytes of a corrupt file quoted
    in it), so the file name at its start and the advice at its end both remain.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = 2 * limit // 3
    tail = limit - head
    return f"{text[:head]} [...{len(text) - limit} characters cut...] {text[-tail:]}"


class OneLineError(RuntimeError):
    """An error whose message prints as one short line (see :func:`one_line`)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class DatasetError(OneLineError):
    """Data that cannot be used (corrupt archive or image, unexpected layout); names the file."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Data that is not where it was looked for; the message says where and how to get it."""


class ChecksumError(OneLineError):
    """A downloaded file whose size or SHA-256 differs from the expected one."""


class DownloadError(OneLineError):
    """A download that could not be completed (network, missing URL, write failure)."""


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: ``root`` if given, else ``$METARL_DATA``, else ``~/.cache/metarl``.

    ``~`` is expanded; the folder is not created (loaders create what they write).
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/metarl").expanduser()


def cache_folder(dataset_folder: Path, dataset: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where decoded arrays are cached: ``cache_dir`` if given, else ``$METARL_CACHE/<dataset>``,
    else ``<dataset_folder>/cache`` (e.g. ``<root>/omniglot/cache``)."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / dataset
    return dataset_folder / "cache"


def ensure_writable_dir(folder: Path) -> None:
    """Create ``folder`` if needed; raise :class:`DatasetError` (saying what to do) if it is not writable.

    A folder whose permission bits deny writing counts as read-only even for the
    superuser (who could write anyway), so a shared read-only data folder is never
    written into.
    """
    advice = (f"pass cache_dir (config dataset.cache_dir) or set ${CACHE_ENV} to a writable folder")
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK) or not existing.stat().st_mode & 0o200:
        raise DatasetError(f"cannot write the cache folder {folder}: {existing} is read-only; {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {folder} ({e}); {advice}") from e


def sha256_of(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


RETRIES = 2
"""Download attempts after the first (pooch waits 1 s, then 2 s): flaky networks and truncated transfers."""

URL_SCHEMES = ("https://", "http://")
"""What is downloaded from (pooch's HTTP downloader)."""


class _Fetch:
    """pooch's HTTP downloader with a fresh progress bar per attempt, remembering the size and SHA-256
    of the last attempt so that a checksum error can name both digests."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.got: tuple[int, str] | None = None

    def __call__(self, url: str, output_file: str, pup: Any) -> None:
        import pooch

        from metarl.progress import progress

        self.got = None
        # total=1 until pooch sets the Content-Length: pooch tests the bar's truth, which a total of None lacks
        with progress(total=1, desc=url.rsplit("/", 1)[-1], unit="B", unit_scale=True) as bar:
            pooch.HTTPDownloader(progressbar=bar, timeout=self.timeout)(url, output_file, pup)
        self.got = (os.path.getsize(output_file), sha256_of(output_file))


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    size: int | None = None,
    verify: bool = True,
    timeout: float = 60.0,
    retries: int | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically through pooch, checking its SHA-256, with retries.

    On a digest mismatch (after the retries) :class:`ChecksumError`, on any other failure
    :class:`DownloadError`; ``dest`` is then untouched (absent if it was) and no temporary file
    remains. A ``dest`` already holding the expected bytes is kept without downloading.

    Args:
        url: an ``https://`` or ``http://`` URL.
        dest: final path of the file; its parent folder is created.
        sha256: expected hex digest; ``None`` is only allowed with ``verify=False``.
        size: expected size in bytes, quoted in the error on a mismatch.
        verify: set ``False`` to accept a file without a known digest (not recommended).
        timeout: socket timeout in seconds.
        retries: attempts after the first (default :data:`RETRIES`).
    """
    import pooch
    import requests

    dest = Path(dest)
    if verify and sha256 is None:
        raise ChecksumError(f"no known SHA-256 for {url}; refusing to download it unverified "
                            "(pass verify=False to accept it anyway)")
    if not url.startswith(URL_SCHEMES):
        raise DownloadError(f"cannot download {url}: only {', '.join(URL_SCHEMES)} URLs are fetched; "
                            f"copy a local file to {dest} instead")
    for handler in pooch.get_logger().handlers:  # its "Downloading ..." and retry lines go to today's stderr, not
        if isinstance(handler, logging.StreamHandler):  # the one at import (maybe closed since: not setStream)
            handler.stream = sys.stderr
    known = f"sha256:{sha256}" if verify else None
    pup = pooch.create(path=dest.parent, base_url="", registry={dest.name: known}, urls={dest.name: url},
                       retry_if_failed=RETRIES if retries is None else retries)
    fetch = _Fetch(timeout)
    try:
        pup.fetch(dest.name, downloader=fetch)
    except ValueError as e:
        if fetch.got is None or fetch.got[1] == sha256:
            raise DownloadError(f"could not download {url} to {dest}: {e}") from e
        n, digest = fetch.got
        expected = f"{sha256} ({size} bytes)" if size is not None else sha256
        raise ChecksumError(
            f"{url}: SHA-256 {digest} ({n} bytes) does not match the expected {expected}; nothing was kept. "
            f"Retry, use a mirror (${OMNIGLOT_URL_ENV}), or if the file changed upstream update OMNIGLOT_FILES in "
            "metarl/fewshot/download.py") from e
    except (requests.RequestException, OSError) as e:
        raise DownloadError(f"could not download {url} to {dest}: {e}") from e
    os.chmod(dest, default_file_mode())  # the user's umask, not the 0600 of pooch's temporary file
    return dest


def omniglot_base_url(base_url: str | None = None) -> str:
    """The URL folder the Omniglot zips are fetched from (argument, env var, official)."""
    base = base_url or os.environ.get(OMNIGLOT_URL_ENV) or OMNIGLOT_URL_BASE
    return base if base.endswith("/") else base + "/"


def download_omniglot(
    folder: str | os.PathLike[str],
    names: tuple[str, ...] = ("images_background.zip", "images_evaluation.zip"),
    *,
    base_url: str | None = None,
    files: dict[str, RemoteFile] | None = None,
) -> list[Path]:
    """Download the named Omniglot zips into ``folder`` unless already there.

    A zip already present under its final name is kept as it is (not re-hashed: the
    download is the only step that writes it, and it verifies). Each fetched file is
    verified against :data:`OMNIGLOT_FILES` (or ``files``, for tests).

    Returns:
        The paths of the zips, in the order of ``names``.
    """
    table = OMNIGLOT_FILES if files is None else files
    folder = Path(folder)
    base = omniglot_base_url(base_url)
    out = []
    for name in names:
        if name not in table:
            raise KeyError(f"unknown Omniglot file {name!r}; known: {sorted(table)}")
        dest = folder / name
        if not dest.exists():
            spec = table[name]
            download_file(base + name, dest, sha256=spec.sha256, size=spec.size)
        out.append(dest)
    return out
