"""Checkpoints: atomic writes (temp file, fsync, rename), clear errors on load."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or unreadable; the message names the file."""


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask (``mkstemp`` gives ``0o600``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old file or the new one.

    The file gets the mode of any new file of the user's (``0o666`` less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) that a process killed inside
    :func:`atomic_write_bytes` left in ``folder``; returns them. Call it only while owning the
    folder (the training loop's run lock), so no live write loses its file."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` atomically to ``path``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (-> its ``checkpoints/last.pt``) or a checkpoint file, checked to exist."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "checkpoints" / "last.pt", p / "last.pt"):
            if cand.is_file():
                return cand
        raise CheckpointError(
            f"{str(p)!r} is a directory without checkpoints/last.pt; pass a run directory written by "
            "`metarl train` or a .pt checkpoint file"
        )
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass a run directory or a .pt file")
    return p


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (run dir or file)."""
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or not a metarl checkpoint ({e})") from None
    if not isinstance(state, dict) or "config" not in state or "iteration" not in state:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a metarl checkpoint (no config/iteration)")
    return state


def rng_state(torch_gen: torch.Generator, np_gen: np.random.Generator) -> dict[str, Any]:
    """Every random stream of a run, to restore exactly on ``--resume``."""
    return {
        "torch": torch_gen.get_state(),
        "numpy": np_gen.bit_generator.state,
        "torch_global": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any], torch_gen: torch.Generator, np_gen: np.random.Generator) -> None:
    torch_gen.set_state(state["torch"])
    np_gen.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch_global"])
