"""Checkpoints: atomic writes (temp file, fsync, rename), clear errors on load.

Beside each pickled ``.pt`` checkpoint the training loop writes a weights-only ``.safetensors`` export
(:func:`save_weights`): loading it (:func:`load_weights`) never unpickles anything, so it is the
file to share and to load from others.
"""

from __future__ import annotations

import io
import json
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


#: ``metadata["format"]`` of a weights export; its ``lr_params`` tensors are stored as ``lr_params/NAME``.
WEIGHTS_FORMAT = "metarl-weights-v1"
LR_PREFIX = "lr_params/"


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy sharing no memory with other tensors (safetensors refuses shared storage)."""
    return t.detach().to("cpu").contiguous().clone()


def save_weights(path: str | Path, learner_state: dict[str, Any], iteration: int, config: dict[str, Any]) -> None:
    """Write the model's tensors (``learner_state["model"]``, and any learned inner lrs) with the iteration and
    the resolved config (JSON) as metadata to ``path`` in the safetensors format, atomically."""
    from safetensors.torch import save

    tensors = {k: _cpu(v) for k, v in learner_state["model"].items()}
    for k, v in (learner_state.get("lr_params") or {}).items():
        tensors[LR_PREFIX + k] = _cpu(v)
    metadata = {"format": WEIGHTS_FORMAT, "iteration": str(int(iteration)), "config": json.dumps(config)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, int, dict]:
    """``(model tensors, lr_params or None, iteration, config dict)`` of a :func:`save_weights` file;
    nothing is unpickled."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"metadata format is {metadata.get('format')!r}, not {WEIGHTS_FORMAT!r}")
        iteration, config = int(metadata["iteration"]), json.loads(metadata["config"])
    except (SafetensorError, ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"weights file {str(p)!r} is corrupt or not a metarl weights export ({e})") from None
    model = {k: v for k, v in tensors.items() if not k.startswith(LR_PREFIX)}
    lr = {k.removeprefix(LR_PREFIX): v for k, v in tensors.items() if k.startswith(LR_PREFIX)} or None
    return model, lr, iteration, config


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
