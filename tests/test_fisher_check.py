"""experiments/fisher_check.py: the same meta-step under several Fisher strategies, on one meta-batch."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from metarl.cli import main
from tests.scripts import load_experiment
from tests.test_rl_average import TINY_NAV

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("fisher_check")


def test_strategies_on_one_meta_batch(tmp_path, script):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_NAV, "num_iterations": 2, "meta_batch_size": 4}))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--logdir", str(run)]) == 0
    out = tmp_path / "f.json"
    strategies = ["exact:meta:0:0", "all 4:meta:4:0", "1 task:meta:1:0", "post:post:0:0:0.1"]
    flags = ["--strategy", strategies[0], "--strategy", *strategies[1:]]  # the flag repeated, or several values
    assert script.main([str(run), "--seed", "3", "--out", str(out), *flags]) == 0
    result = json.loads(out.read_text())
    assert result["iteration"] == 2
    rows = {r["strategy"]: r for r in result["strategies"]}
    exact = rows["exact"]
    assert exact["gain"] > 0 and 0 < exact["kl"] <= 0.01
    # a subsample of all the tasks is the exact product: the same step
    assert rows["all 4"]["gain"] == exact["gain"] and rows["all 4"]["kl"] == exact["kl"]
    # one task of four is another direction; the damping override reaches CG
    assert rows["1 task"]["step_norm"] != exact["step_norm"]
    assert rows["post"]["cg_damping"] == 0.1 and rows["exact"]["cg_damping"] == TINY_NAV.get("trpo", {}).get(
        "cg_damping", 1e-5)


def test_bad_input_is_one_line(tmp_path, script, capsys):
    assert script.main([str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert script.main([str(tmp_path), "--strategy", "exact:meta"]) == 2
    assert "NAME:KIND:TASKS:EPISODES" in capsys.readouterr().err
