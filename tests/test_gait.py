"""experiments/gait.py: a half-cheetah's forward speed and torso pitch, read off its observations."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.cli import main as cli_main
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import finn2017_test_tasks
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


@pytest.mark.parametrize("clip", [False, True], ids=["raw", "clipped"])
def test_control_costs_are_what_the_env_charged(script, clip) -> None:
    """Against the env's own ``reward_ctrl``, with actions beyond the box (charged raw, or clipped first)."""
    env = gym.make("metarl/HalfCheetahVel-v0", frame_skip=1, clip_ctrl_cost=clip)
    env.reset(seed=0, options={"task": {"velocity": 1.0}})
    actions = np.random.default_rng(0).uniform(-2, 2, (10, 6))
    charged = [-env.step(a)[4]["reward_ctrl"] for a in actions]
    env.close()
    assert script.control_costs(env, torch.as_tensor(actions)).numpy() == pytest.approx(charged, rel=1e-12)
    assert (max(charged) > 0.05 * 6) is not clip  # the raw samples cost more than the box allows


def test_gait_splits_each_return_into_control_cost_and_the_rest(script) -> None:
    g = torch.Generator().manual_seed(2)
    n, t, b = 2, 5, 3
    masks = torch.ones(n, t, b)
    masks[1, 3:, 0] = 0.0
    rewards, control = torch.randn(n, t, b, generator=g), torch.rand(n, t, b, generator=g)
    zeros = torch.zeros(n, t, b)
    episodes = Episodes(torch.zeros(n, t, b, 4), torch.zeros(n, t, b, 1), rewards, masks, zeros)
    for i, row in enumerate(script.gait(episodes, 1, 3, 1.5, control)):
        cost = np.mean([sum(float(control[i, s, e]) for s in range(t) if masks[i, s, e]) for e in range(b)])
        ret = np.mean([sum(float(rewards[i, s, e]) for s in range(t) if masks[i, s, e]) for e in range(b)])
        assert row["control_cost"] == pytest.approx(cost, rel=1e-9)
        assert row["task_return"] == pytest.approx(ret + cost, rel=1e-6)


def test_main_reports_each_goal_and_step_and_refuses_other_envs(script, tmp_path, capsys) -> None:
    run = train(tiny_cfg("metarl/HalfCheetahVel-v0", "hc", env={"kwargs": {"frame_skip": 1}}),
                logdir=tmp_path / "hc", quiet=True)
    out = tmp_path / "gait.json"
    assert script.main([str(run), "--goals", "0.5,1.5", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["runs"][0]
    assert result["goal"] == "velocity"
    assert [(r["step"], r["goal"]) for r in result["rows"]] == [(0, 0.5), (0, 1.5), (1, 0.5), (1, 1.5)]
    assert all(0 <= r["pitched_share"] <= 1 for r in result["rows"])
    assert all(r["control_cost"] > 0 and r["task_return"] - r["control_cost"] == pytest.approx(r["return"], abs=1e-3)
               for r in result["rows"])
    # --goals finn2017 at evaluate's --seed reproduces `metarl evaluate --task-set finn2017` goal for goal
    evaluated, again = tmp_path / "eval.json", tmp_path / "gait-finn2017.json"
    assert cli_main(["evaluate", str(run), "--task-set", "finn2017", "--steps", "1", "--seed", "7",
                     "--out", str(evaluated)]) == 0
    assert script.main([str(run), "--goals", "finn2017", "--steps", "1", "--seed", "7", "--out", str(again)]) == 0
    rows = json.loads(again.read_text())["runs"][0]["rows"]
    per_task = json.loads(evaluated.read_text())["per_task"]
    for k in (0, 1):
        assert [r["return"] for r in rows if r["step"] == k] == pytest.approx(per_task[k], rel=1e-5)
    assert [r["goal"] for r in rows if r["step"] == 0] == [t["velocity"] for t in finn2017_test_tasks(
        "metarl/HalfCheetahVel-v0")]
    nav = train(tiny_cfg("metarl/Navigation2D-v0", "nav"), logdir=tmp_path / "nav", quiet=True)
    capsys.readouterr()
    assert script.main([str(nav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HalfCheetahVel and HalfCheetahDir runs only" in err[0]
    assert script.main([str(run), "--goals", "fast"]) == 2
    assert "expected numbers separated by commas" in capsys.readouterr().err
    assert script.main([str(nav), "--goals", "finn2017"]) == 2
