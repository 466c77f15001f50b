"""Files metarl writes get the user's umask (0o666 & ~umask), like any file the user creates.

Atomic writes go through ``tempfile.mkstemp``, which creates 0o600: checkpoints, ``eval.json`` and
downloaded data files used to end up readable by their owner only.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch

from metarl.checkpoint import atomic_write_bytes, default_file_mode, save_checkpoint
from metarl.cli import main
from metarl.fewshot.download import download_file
from tests import serving

torch.set_num_threads(1)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    assert default_file_mode() == 0o666 & ~umask
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    save_checkpoint(tmp_path / "c.pt", {"config": {}, "iteration": 0})
    atomic_write_bytes(tmp_path / "a.bin", b"y")  # replacing an existing file too
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "c.pt") == 0o666 & ~umask
    assert (tmp_path / "a.bin").read_bytes() == b"y"


def test_downloads_follow_the_umask(tmp_path, umask):
    (tmp_path / "src.zip").write_bytes(b"payload")
    with serving(tmp_path) as url:
        digest = hashlib.sha256(b"payload").hexdigest()
        dest = download_file(url + "src.zip", tmp_path / "data" / "x.zip", sha256=digest)
    assert mode(dest) == 0o666 & ~umask


def test_a_run_and_its_evaluation_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert main(["train", "sinusoid", "--set", "num_iterations=2", "--set", "meta_batch_size=2",
                     "--set", "eval.every=1", "--set", "eval.tasks=2", "--logdir", "run"]) == 0
        assert main(["evaluate", "run", "--tasks", "4", "--steps", "1", "--pretrain-iterations", "0"]) == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for f in ("checkpoints/last.pt", "checkpoints/best.pt", "eval.json", "config.yaml", "metrics.csv"):
        assert mode(run / f) == 0o644, f
