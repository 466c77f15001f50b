"""experiments/run_cost.py: env steps, wall time summed over resumed segments, and the per-iteration split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_experiment

HEADER = "iteration,time/sample_s,time/update_s,train/env_steps,time/elapsed_s,val/return_post\n"


@pytest.fixture(scope="module")
def script():
    return load_experiment("run_cost")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Four iterations; the run was resumed before iteration 3, so the clock restarted there."""
    d = tmp_path / "task" / "maml"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text(HEADER + "1,2,3,100,6,\n2,4,5,200,16,-3\n3,1,1,300,3,\n4,1,3,400,8,-2\n")
    return d


def test_wall_time_adds_the_segments_and_the_split_is_a_mean_per_iteration(script, run):
    c = script.cost(run)
    assert c["iteration"] == 4 and c["env_steps"] == 400
    assert c["wall_s"] == pytest.approx(16 + 8)  # the first segment ends at 16 s, the second at 8 s
    assert c["sample_s"] == pytest.approx((2 + 4 + 1 + 1) / 4)
    assert c["update_s"] == pytest.approx((3 + 5 + 1 + 3) / 4)
    assert c["other_s"] == pytest.approx(24 / 4 - 2 - 3)
    upto2 = script.cost(run, 2)
    assert (upto2["iteration"], upto2["env_steps"], upto2["wall_s"]) == (2, 200, pytest.approx(16))


def test_an_evaluation_json_costs_the_iteration_it_evaluated(script, run, capsys):
    (run / "eval-best.json").write_text(json.dumps({"iteration": 3, "by_step": []}))
    assert script.main([str(run / "eval-best.json"), f"{run}@1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| task/maml/eval-best.json | 3 | 0.0M | 0.01 h | 2.3 / 3.0 / 1.0 |"
    assert out[3].startswith("| task/maml@1 | 1 | 0.0M |")


def test_bad_input_is_one_line(script, run, capsys):
    assert script.main([f"{run}@last"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "@last" in err and "whole number" in err
    assert script.main([str(run.parent / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert script.main([f"{run}@0"]) == 2
    assert "no logged iteration up to 0" in capsys.readouterr().err
