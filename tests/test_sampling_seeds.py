"""experiments/sampling_seeds.py: a run's score at several sampling seeds, each exactly `metarl evaluate`'s."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metarl.cli import main as cli_main
from metarl.evaluate import evaluate
from metarl.training import train
from tests.scripts import load_experiment
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("sampling_seeds")


def test_seeds_parse_as_a_range_or_a_list_and_refuse_bad_input(script) -> None:
    assert script.parse_seeds("1001-1004") == [1001, 1002, 1003, 1004]
    assert script.parse_seeds("3,1,7") == [3, 1, 7]
    for bad in ("x", "5", "1-", "1,a"):
        with pytest.raises(ValueError, match="--seeds"):
            script.parse_seeds(bad)


def test_spread_against_a_loop_over_seeds_and_runs(script) -> None:
    means = np.random.default_rng(0).normal(size=(4, 3, 2))  # [seeds, runs, steps]
    out = script.spread(means)
    for k in range(2):
        for r in range(3):
            assert out["run_mean"][k][r] == pytest.approx(np.mean([means[s, r, k] for s in range(4)]))
            assert out["run_std"][k][r] == pytest.approx(np.std([means[s, r, k] for s in range(4)], ddof=1))
        of_runs = [np.mean(means[s, :, k]) for s in range(4)]
        assert out["mean_of_runs"][k] == pytest.approx(of_runs)
        assert out["mean_of_runs_std"][k] == pytest.approx(np.std(of_runs, ddof=1))
        assert (out["mean_of_runs_min"][k], out["mean_of_runs_max"][k]) == (min(of_runs), max(of_runs))


def test_each_seed_is_metarl_evaluate_at_that_seed(script, tmp_path, capsys) -> None:
    """Two runs, two seeds, the paper's goals: every number is `metarl evaluate --seed S`'s mean, and the
    seeds differ (the sampling changed, the tasks did not)."""
    runs = [str(train(tiny_cfg("metarl/HalfCheetahVel-v0", f"hc{i}", seed=i, env={"kwargs": {"frame_skip": 1}}),
                      logdir=tmp_path / f"hc{i}", quiet=True)) for i in (1, 2)]
    out = tmp_path / "spread.json"
    assert script.main([*runs, "--seeds", "7,8", "--task-set", "finn2017", "--steps", "1",
                        "--set", "test_lr_after_first=0.5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for s, seed in enumerate((7, 8)):
        for r, run in enumerate(runs):
            evaluated = tmp_path / f"eval-{seed}-{r}.json"
            assert cli_main(["evaluate", run, "--task-set", "finn2017", "--steps", "1", "--seed", str(seed),
                             "--set", "test_lr_after_first=0.5", "--out", str(evaluated)]) == 0
            by_step = [step["mean"] for step in json.loads(evaluated.read_text())["by_step"]]
            assert result["by_seed"][s][r] == pytest.approx(by_step, rel=1e-6)
    assert not np.allclose(result["by_seed"][0], result["by_seed"][1], rtol=1e-3)
    assert "random" not in evaluate(runs[0], steps=0, seed=7, task_set="finn2017", random=False)["baselines"]
    capsys.readouterr()

    assert script.main([runs[0], "--seeds", "7", "--task-set", "finn2017"]) == 2
    assert script.main([runs[0], "--seeds", "7,8", "--set", "policy.hidden=[4]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("sampling_seeds: ") for line in err)
    assert "at least two seeds" in err[0] and "policy.hidden" in err[1]
