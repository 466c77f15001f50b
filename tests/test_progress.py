"""Progress bars with an ETA on stderr (tqdm, :mod:`metarl.progress`) for evaluation and data preparation."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.cli import main
from metarl.fewshot import omniglot as og

torch.set_num_threads(1)

#: tqdm's "[elapsed<remaining" (the ETA), e.g. "[00:01<00:03".
ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")


def test_evaluate_shows_progress_with_an_eta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "sinusoid", "--set", "num_iterations=2", "--set", "meta_batch_size=2",
                 "--set", "eval.every=1", "--set", "eval.tasks=2", "--logdir", "run"]) == 0
    capfd.readouterr()
    argv = ["evaluate", "run", "--tasks", "6", "--steps", "2", "--pretrain-iterations", "5"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "evaluate" not in out  # stdout keeps the table only
    for name in ("evaluate run", "evaluate random", "evaluate pretrained", "pretrained baseline (training)"):
        assert f"{name}: 100%" in err, (name, err)
    assert re.search(r"evaluate run: 100%[^\r\n]*6/6 " + ETA.pattern, err), err
    # a handful of lines, not one per task: stderr is not a terminal here
    assert err.count("\n") < 20, err
    monkeypatch.setenv("TQDM_DISABLE", "1")  # tqdm's own switch silences them
    assert main(argv) == 0
    assert "evaluate run" not in capfd.readouterr().err


def _tiny_omniglot_zip(path: Path, name: str) -> None:
    """One alphabet, one character, its 20 drawings (105x105 one-bit PNGs)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(og.DRAWINGS_PER_CHARACTER):
            buf = io.BytesIO()
            Image.fromarray(rng.random((105, 105)) > 0.5).save(buf, format="PNG")
            zf.writestr(f"{name}/Alpha/character01/0101_{i:02d}.png", buf.getvalue())


def test_decoding_a_dataset_shows_progress(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "root" / "omniglot"
    folder.mkdir(parents=True)
    _tiny_omniglot_zip(folder / "images_background.zip", "images_background")
    data = og.load_set("images_background", tmp_path / "root")
    assert data.images.shape == (1, 20, 28, 28)
    err = capfd.readouterr().err
    assert re.search(r"decoding images_background: 100%[^\r\n]*20/20 " + ETA.pattern, err), err
    og.load_set("images_background", tmp_path / "root")  # from the cache: nothing to show
    assert "decoding" not in capfd.readouterr().err
