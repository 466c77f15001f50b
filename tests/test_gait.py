"""experiments/gait.py: a half-cheetah's forward speed and torso pitch, read off its observations."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.rl.episodes import Episodes
from metarl.training import train
from tests.scripts import load_experiment
from tests.test_rl_baselines import tiny_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("gait")


@pytest.mark.parametrize("env_kwargs", [{}, {"exclude_current_positions_from_observation": False}],
                         ids=["gymnasium", "with-x"])
def test_the_indices_read_mujocos_pitch_and_forward_speed(script, env_kwargs) -> None:
    env = gym.make("metarl/HalfCheetahVel-v0", frame_skip=1, **env_kwargs)
    pitch_index, speed_index = script.observation_indices(env)
    env.reset(seed=0, options={"task": {"velocity": 1.0}})
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, *_ = env.step(rng.uniform(-1, 1, 6))
        assert obs[pitch_index] == env.unwrapped.data.qpos[2]
        assert obs[speed_index] == env.unwrapped.data.qvel[0]
    env.close()


def test_gait_averages_each_half_and_counts_pitched_live_states(script) -> None:
    """Against a loop over the states; padding after an episode's end counts in nothing."""
    g = torch.Generator().manual_seed(1)
    n, t, b = 2, 6, 3
    obs = torch.randn(n, t, b, 4, generator=g) * 2
    masks = torch.ones(n, t, b)
    masks[0, 4:, 1] = 0.0
    masks[1, 2:, 2] = 0.0
    zeros = torch.zeros(n, t, b)
    rows = script.gait(Episodes(obs, torch.zeros(n, t, b, 1), zeros, masks, zeros), 1, 3, 1.5)
    for i, row in enumerate(rows):
        live = [(s, e) for s in range(t) for e in range(b) if masks[i, s, e] == 1]
        first = [float(obs[i, s, e, 3]) for s, e in live if s < t // 2]
        second = [float(obs[i, s, e, 3]) for s, e in live if s >= t // 2]
        pitches = [float(obs[i, s, e, 1]) for s, e in live]
        assert row["speed_first_half"] == pytest.approx(np.mean(first), rel=1e-6)
        assert row["speed_second_half"] == pytest.approx(np.mean(second), rel=1e-6)
        assert row["pitched_share"] == pytest.approx(np.mean([abs(p) > 1.5 for p in pitches]), rel=1e-6)
        assert row["pitch_mean"] == pytest.approx(np.mean(pitches), rel=1e-6, abs=1e-7)


def test_main_reports_each_goal_and_step_and_refuses_other_envs(script, tmp_path, capsys) -> None:
    run = train(tiny_cfg("metarl/HalfCheetahVel-v0", "hc", env={"kwargs": {"frame_skip": 1}}),
                logdir=tmp_path / "hc", quiet=True)
    out = tmp_path / "gait.json"
    assert script.main([str(run), "--goals", "0.5,1.5", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["runs"][0]
    assert result["goal"] == "velocity"
    assert [(r["step"], r["goal"]) for r in result["rows"]] == [(0, 0.5), (0, 1.5), (1, 0.5), (1, 1.5)]
    assert all(0 <= r["pitched_share"] <= 1 for r in result["rows"])
    nav = train(tiny_cfg("metarl/Navigation2D-v0", "nav"), logdir=tmp_path / "nav", quiet=True)
    capsys.readouterr()
    assert script.main([str(nav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HalfCheetahVel and HalfCheetahDir runs only" in err[0]
    assert script.main([str(run), "--goals", "fast"]) == 2
    assert "expected numbers separated by commas" in capsys.readouterr().err
