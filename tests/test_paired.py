"""experiments/paired.py: two evaluations on the same tasks, compared goal for goal."""

from __future__ import annotations

import json
import math

import pytest

from tests.scripts import load_experiment


@pytest.fixture(scope="module")
def script():
    return load_experiment("paired")


TASKS = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}, {"direction": -1.0}]
A = [[0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]]
B = [[1.0, 1.0, 1.0, 1.0], [12.0, 21.0, 33.0, 40.0]]


def _write(path, per_task, tasks=TASKS, **extra):
    path.write_text(json.dumps({"benchmark": "ant_dir", "tasks": tasks, "per_task": per_task, **extra}))
    return str(path)


def test_paired_difference_against_a_hand_computation(tmp_path, script, capsys):
    a, b = _write(tmp_path / "a.json", A), _write(tmp_path / "b.json", B)
    rows = script.compare(json.load(open(a)), json.load(open(b)))
    # step 1: differences 2, 1, 3, 0 -> mean 1.5, sample std sqrt(5/3), ci 1.96 * std / 2
    assert rows[1]["a"] == 25.0 and rows[1]["b"] == 26.5
    assert rows[1]["diff"] == pytest.approx(1.5)
    assert rows[1]["ci95"] == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert rows[1]["b_ahead"] == 3 and rows[1]["tasks"] == 4
    # step 0: differences 1, 0, -1, -2
    assert rows[0]["diff"] == pytest.approx(-0.5) and rows[0]["b_ahead"] == 1
    assert script.main([a, b]) == 0
    assert "+1.5 ±" in capsys.readouterr().out


def test_a_pooled_file_is_its_runs_mean_per_task(tmp_path, script):
    pooled = {"benchmark": "ant_dir", "tasks": TASKS, "per_run": [{"per_task": A}, {"per_task": B}]}
    rows = script.compare({"per_task": A}, pooled)
    # the pooled curve is (A + B) / 2, so its difference from A is (B - A) / 2
    assert rows[1]["diff"] == pytest.approx(0.75)


def test_other_tasks_or_files_are_one_line(tmp_path, script, capsys):
    a = _write(tmp_path / "a.json", A)
    b = _write(tmp_path / "b.json", B, tasks=TASKS[::-1])
    assert script.main([a, b]) == 2
    assert "not scored on the same tasks" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("{}")
    assert script.main([a, str(tmp_path / "c.json")]) == 2
    assert "no per-task results" in capsys.readouterr().err
    assert script.main([a]) == 2
