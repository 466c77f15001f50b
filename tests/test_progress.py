"""Progress with an ETA on stderr: tqdm bars (:mod:`metarl.progress`) for evaluation and data preparation, and
training's own line (:class:`metarl.logger.Progress`)."""

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
from metarl.logger import Progress

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


class _Clock:
    """A stand-in for ``time.perf_counter`` that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _training_line(monkeypatch: pytest.MonkeyPatch, steps: list[float], window: int = 4) -> str:
    """The last line of a training progress bar whose iterations took ``steps`` seconds each."""
    clock = _Clock()
    monkeypatch.setattr("metarl.logger.time.perf_counter", clock)
    out = io.StringIO()
    bar = Progress(100, start=10, stream=out, window=window)
    for i, dt in enumerate(steps, start=11):
        clock.t += dt
        bar.update(i, {"train/return_post": -1.0}, force=True)
    return out.getvalue().splitlines()[-1]


def test_training_speed_and_eta_come_from_the_last_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    # a 10-minute pause (a stopped process) at the second iteration, then 4 iterations of 40 s: the pause
    # has left the window, so 40 s/it and 84 iterations to go, 56m00s
    line = _training_line(monkeypatch, [40.0, 640.0, 40.0, 40.0, 40.0, 40.0])
    assert line.endswith("| 40.0 s/it ETA 56m00s"), line
    # fast iterations still read as iterations per second
    line = _training_line(monkeypatch, [0.25] * 6)
    assert line.endswith("| 4.0 it/s ETA 0m21s"), line
