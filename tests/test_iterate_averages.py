"""experiments/iterate_averages.py: the recorded iterates give what ``ema: d`` trains, and the score is
``metarl evaluate``'s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from tests.scripts import load_experiment
from tests.test_rl_average import TINY_NAV

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("iterate_averages")


def write_cfg(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**TINY_NAV, "seed": 5, "num_iterations": 3, **over}))
    return path


def test_recorded_iterates_give_the_ema_run_and_the_score_is_evaluates(tmp_path, script):
    cfg = write_cfg(tmp_path / "c.yaml")
    run = tmp_path / "rec"
    assert script.cli(["record", str(run), "--", str(cfg)]) == 0
    iterates = torch.load(run / "iterates.pt")
    assert sorted(iterates) == [1, 2, 3]
    model = load_checkpoint(run)["learner"]["model"]
    for k, v in iterates[3].items():
        torch.testing.assert_close(model[k], v, rtol=0, atol=0)
    # the same run trained with ema: 0.5 ends with the average of these iterates
    ema_run = tmp_path / "ema"
    assert main(["train", str(write_cfg(tmp_path / "e.yaml", ema=0.5)), "--logdir", str(ema_run)]) == 0
    expected = script.averaged(iterates, 0.5)
    for k, v in load_checkpoint(ema_run)["learner"]["model"].items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)
    # the score of decay 0 (the last iterate) is metarl evaluate's 1-step mean on the same tasks
    out = tmp_path / "s.json"
    assert script.cli(["score", "--goals", "7", "--decays", "0,0.5", "--tasks", "4", str(out), str(run)]) == 0
    scored = json.loads(out.read_text())["by_decay"]
    assert main(["evaluate", str(run), "--tasks", "4", "--steps", "1", "--seed", "7",
                 "--out", str(tmp_path / "ev.json")]) == 0
    evaluated = json.loads((tmp_path / "ev.json").read_text())["by_step"][1]["mean"]
    assert scored["0.0"]["runs"][0] == pytest.approx(evaluated, rel=1e-6)
    assert scored["0.5"]["runs"][0] != scored["0.0"]["runs"][0]
