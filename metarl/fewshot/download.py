"""Where the data lives, and fetching the official Omniglot files safely.

Root resolution (one rule for every dataset): an explicit ``root`` (config
``dataset.root``), else the ``$METARL_DATA`` environment variable, else
``~/.cache/metarl``. Datasets keep their own folder below it (``<root>/omniglot``,
``<root>/miniimagenet``). Decoded arrays are cached in ``<root>/<dataset>/cache`` unless
a ``cache_dir`` (config ``dataset.cache_dir``) or ``$METARL_CACHE`` says otherwise, which
is needed when the data root is read-only.

Downloads use :mod:`urllib`, so ``file://`` URLs work as well as ``https://`` (the tests
serve files from a temporary folder or a loopback ``http.server``; nothing here needs
the internet to be tested). The URL base can be overridden with the ``base_url``
argument or the ``$METARL_OMNIGLOT_URL`` environment variable (e.g. a mirror).

A download is streamed into a temporary file in the destination folder while its
SHA-256 is computed; only a file whose size and digest match is renamed into place
(``os.replace``, atomic on one filesystem). On any mismatch or error the temporary file
is deleted and an error is raised, so a failed or interrupted download never leaves a
half-written file under the expected name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from metarl.checkpoint import default_file_mode

DATA_ENV = "METARL_DATA"
"""Environment variable naming the data root when no explicit root is given."""

CACHE_ENV = "METARL_CACHE"
"""Environment variable naming a folder for decoded-array caches (else under the data root)."""

OMNIGLOT_URL_ENV = "METARL_OMNIGLOT_URL"
"""Environment variable overriding :data:`OMNIGLOT_URL_BASE` (a mirror, or ``file://`` in tests)."""

OMNIGLOT_URL_BASE = "https://github.com/brendenlake/omniglot/raw/master/python/"
"""Brenden Lake's official Omniglot repository (Lake et al. 2015, Science 350:1332)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``<base_url><name>`` with its expected size and SHA-256.

    ``sha256``/``size`` may be ``None`` when no trustworthy value is known; the download is
    then refused unless the caller passes ``verify=False`` explicitly.
    """

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
OMNIGLOT_FILES: dict[str, RemoteFile] = {
    f.name: f
    for f in (
        RemoteFile(
            "images_background.zip",
            "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
            9464212,
        ),
        RemoteFile(
            "images_evaluation.zip",
            "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
            6462886,
        ),
        RemoteFile(
            "images_background_small1.zip",
            "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
            1319022,
        ),
        RemoteFile(
            "images_background_small2.zip",
            "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
            1580917,
        ),
    )
}


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


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    size: int | None = None,
    verify: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically, checking its size and SHA-256.

    The bytes go to a temporary file next to ``dest`` (same filesystem, so the final
    ``os.replace`` is atomic). On a size or digest mismatch, or any error while reading
    or writing, the temporary file is removed and :class:`ChecksumError` or
    :class:`DownloadError` is raised; ``dest`` is then untouched (absent if it was).

    Args:
        url: any URL :func:`urllib.request.urlopen` accepts (``https://``, ``file://``).
        dest: final path of the file; its parent folder is created.
        sha256: expected hex digest; ``None`` is only allowed with ``verify=False``.
        size: expected size in bytes, checked too when given.
        verify: set ``False`` to accept a file without a known digest (not recommended).
        timeout: socket timeout in seconds.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.
    """
    dest = Path(dest)
    if verify and sha256 is None:
        raise ChecksumError(f"no known SHA-256 for {url}; refusing to download it unverified "
                            "(pass verify=False to accept it anyway)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, default_file_mode())  # the user's umask, not mkstemp's 0600
        h = hashlib.sha256()
        n = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while block := resp.read(chunk_size):
                    out.write(block)
                    h.update(block)
                    n += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(f"could not download {url} to {dest}: {e}") from e
        digest = h.hexdigest()
        if verify:
            if size is not None and n != size:
                raise ChecksumError(f"{url}: got {n} bytes, expected {size}; "
                                    f"the file was discarded and {dest} not written")
            if digest != sha256:
                raise ChecksumError(f"{url}: SHA-256 {digest} does not match the expected {sha256}; "
                                    f"the file was discarded and {dest} not written")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
