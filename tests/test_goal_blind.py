"""experiments/goal_blind.py: one inner step per goal velocity on the same pre-update episodes."""

from __future__ import annotations

import json

import pytest
import torch

from metarl.checkpoint import load_checkpoint
from metarl.config import config_from_dict
from metarl.maml import detach_params, params_of
from metarl.rl.learner import RLLearner
from metarl.rl.policies import widened
from metarl.training import train
from tests.scripts import load_experiment
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("goal_blind")


def test_goals_above_every_sampled_speed_get_the_same_step(script, tmp_path, capsys) -> None:
    """A goal no pre-update step reaches ranks the episodes by their speed sums, whatever the goal: the
    adapted parameters then differ only through the baseline's fit (a few % of the step); a goal that a
    third of the steps overrun gets another step."""
    run = train(tiny_cfg("metarl/HalfCheetahVel-v0", "hc", env={"kwargs": {"frame_skip": 1}}),
                logdir=tmp_path / "hc", quiet=True)
    out = tmp_path / "blind.json"
    assert script.main([str(run / "checkpoints" / "last.pt"), "--goals", "0.0,1.5,1.8,2.0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["checkpoints"][0]
    assert result["same_pre_update_episodes"] is True
    e = result["pre_episode_speed"]  # episodes of equal length (no termination): their mean is the steps' mean
    assert e["mean"] == pytest.approx(result["pre_speed"], rel=1e-5) and e["min"] <= e["mean"] <= e["max"]
    assert 0 < e["sd"] < e["max"] - e["min"]
    rows = {r["goal"]: r for r in result["rows"]}
    assert [rows[g]["pre_share_faster"] for g in (1.5, 1.8, 2.0)] == [0.0, 0.0, 0.0]
    assert rows[0.0]["pre_share_faster"] > 0.1
    assert rows[2.0]["theta_distance_to_ref"] == 0.0 and rows[2.0]["mean_shift_to_ref_in_std"] == 0.0
    assert rows[1.5]["theta_distance_to_ref"] < 0.05 and rows[1.8]["theta_distance_to_ref"] < 0.05
    assert rows[0.0]["theta_distance_to_ref"] > 0.3
    assert "the same pre-update episodes for every goal: True" in capsys.readouterr().out


def test_refuses_other_envs_and_bad_goals_in_one_line(script, tmp_path, capsys) -> None:
    nav = train(tiny_cfg("metarl/Navigation2D-v0", "nav"), logdir=tmp_path / "nav", quiet=True)
    capsys.readouterr()
    assert script.main([str(nav / "checkpoints" / "last.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass a HalfCheetahVel checkpoint" in err[0]
    assert script.main([str(nav / "checkpoints" / "last.pt"), "--goals", "fast"]) == 2
    assert "expected numbers separated by commas" in capsys.readouterr().err


def test_pre_update_episodes_are_sampled_as_the_run_samples_them(script, tmp_path) -> None:
    """A run trained with ``explore_std`` samples its pre-update episodes with the widened std; the script
    must adapt on those, not on episodes of the narrower policy the run never steps from."""
    run = train(tiny_cfg("metarl/HalfCheetahVel-v0", "hc", explore_std=3.0, env={"kwargs": {"frame_skip": 1}}),
                logdir=tmp_path / "hc", quiet=True)
    path = str(run / "checkpoints" / "last.pt")
    result = script.measure(path, [1.0], seed=7)
    state = load_checkpoint(path)
    learner = RLLearner(config_from_dict(state["config"], [("sampler.num_workers", 1)]))
    try:
        learner.module.load_state_dict(state["learner"]["model"])
        theta = detach_params(params_of(learner.module))
        _, speed = script.observation_indices(learner.env)
        speeds = {}
        for factor in (3.0, 1.0):
            with learner.sampler.seeded(7):
                ep = learner._sample(widened(theta, factor), [{"velocity": 1.0}], per_task=False)
            speeds[factor] = script.live_mean(ep.observations[..., speed], ep.masks)
    finally:
        learner.close()
    assert speeds[3.0] != speeds[1.0]
    assert result["pre_speed"] == pytest.approx(speeds[3.0], rel=1e-6)
