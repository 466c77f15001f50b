"""``metarl evaluate --figure``: the sinusoid fit, navigation paths and cheetah velocity figures draw
what the run's own adaptation gives, and a run without a figure is one error line."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import metarl
import metarl.rl.build  # noqa: F401  (registers the environments)
from metarl import figures
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.rl import watch
from metarl.training import train

torch.set_num_threads(1)


def rl_cfg(env_id: str, name: str, iterations: int):
    return config_from_dict({
        "benchmark": "rl", "name": name, "seed": 2, "num_iterations": iterations, "meta_batch_size": 2,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 100, "tasks": 2, "test_tasks": 2},
        "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
        "env": {"id": env_id, "episodes_per_task": 2},
        "policy": {"hidden": [8], "activation": "tanh"},
        "sampler": {"num_workers": 1},
    })


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    cfg = config_from_dict({
        "benchmark": "sinusoid", "name": "sine", "seed": 3, "num_iterations": 5, "meta_batch_size": 5,
        "log_every": 5, "checkpoint_every": 5, "eval": {"every": 5, "tasks": 5, "test_tasks": 5},
        "inner": {"test_steps": 3},
    })
    return train(cfg, logdir=tmp_path_factory.mktemp("f") / "sine", quiet=True)


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    return train(rl_cfg("metarl/Navigation2D-v0", "nav", 2), logdir=tmp_path_factory.mktemp("f") / "nav", quiet=True)


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory):
    return train(rl_cfg("metarl/HalfCheetahVel-v0", "hc", 1), logdir=tmp_path_factory.mktemp("f") / "hc",
                 quiet=True)


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("metarl: error")]


# ---------------------------------------------------------------------------- sinusoid
def test_sine_fit_plots_the_runs_own_predictions_after_0_1_and_k_steps(sine_run, tmp_path):
    run = metarl.load(sine_run)
    out = tmp_path / "fit.png"
    got = figures.sine_fit(run, out, seed=4, shots=5)
    assert image_size(out)[0] > 600  # three panels side by side
    assert got["steps"] == [0, 1, 3]  # inner.test_steps of the run
    assert got["x_support"].shape == (figures.PANELS, 5) and got["x"].shape == (figures.PANELS, figures.CURVE_POINTS)
    assert (np.diff(got["x"], axis=1) >= 0).all()
    for i in range(figures.PANELS):
        xs = torch.as_tensor(got["x_support"][i]).unsqueeze(-1)
        ys = torch.as_tensor(got["y_support"][i]).unsqueeze(-1)
        x = torch.as_tensor(got["x"][i]).unsqueeze(-1)
        for k in got["steps"]:
            want = run.predict(run.adapt(xs, ys, steps=k), x)[:, 0].numpy()
            np.testing.assert_allclose(got["predictions"][k][i], want, rtol=1e-5, atol=1e-6)
        # the true curve is one sinusoid A sin(x - phi), and the support points lie on it
        basis = np.stack([np.sin(got["x"][i]), np.cos(got["x"][i])], axis=1)
        coef, *_ = np.linalg.lstsq(basis, got["true"][i], rcond=None)
        np.testing.assert_allclose(basis @ coef, got["true"][i], atol=1e-4)
        on_curve = np.stack([np.sin(got["x_support"][i]), np.cos(got["x_support"][i])], axis=1) @ coef
        np.testing.assert_allclose(on_curve, got["y_support"][i], atol=1e-4)
    assert not np.allclose(got["predictions"][0], got["predictions"][3])
    # the same seed draws the same tasks; another seed others
    again = figures.sine_fit(run, tmp_path / "again.png", seed=4, shots=5)
    np.testing.assert_array_equal(again["x_support"], got["x_support"])
    assert not np.allclose(figures.sine_fit(run, tmp_path / "other.png", seed=5, shots=5)["x_support"],
                           got["x_support"])


def test_evaluate_figure_writes_the_sine_fit_beside_the_json(sine_run, tmp_path, capsys):
    fig, out = tmp_path / "figs" / "fit.png", tmp_path / "e.json"
    assert main(["evaluate", str(sine_run), "--tasks", "3", "--steps", "2", "--pretrain-iterations", "0",
                 "--out", str(out), "--figure", str(fig)]) == 0
    assert json.loads(out.read_text())["metric"] == "mse"
    image_size(fig)
    assert f"wrote {fig}" in capsys.readouterr().err


def test_a_figure_path_that_is_no_image_is_one_error_line_before_evaluating(sine_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["evaluate", str(sine_run), "--tasks", "2", "--out", str(out),
                 "--figure", str(tmp_path / "f.txt")]) == 2
    (line,) = error_lines(capsys)
    assert "--figure" in line and ".png" in line
    assert not out.exists()


# ---------------------------------------------------------------------------- navigation
def test_navigation_paths_are_the_observations_of_the_episodes_adapted_on(nav_run, tmp_path):
    run = metarl.load(nav_run)
    task = {"goal": (0.3, -0.2)}
    out = tmp_path / "paths.png"
    got = figures.navigation_paths(run, out, tasks=[task], steps=2, seed=1)
    image_size(out)
    episodes: list = []
    want = watch.adapt_to(run, task, steps=2, seed=1, episodes_out=episodes)
    assert got["tasks"] == [want.task] and got["returns"] == [want.returns]
    (by_step,) = got["paths"]
    assert len(by_step) == len(episodes) == 3
    for paths, e in zip(by_step, episodes):
        assert len(paths) == 2  # env.episodes_per_task, fewer than PATHS_PER_STEP
        for b, xy in enumerate(paths):
            length = int(e.masks[:, b].sum())
            np.testing.assert_array_equal(xy, e.observations[:length, b].numpy())
            np.testing.assert_array_equal(xy[0], [0.0, 0.0])  # every episode starts at the origin
    # the bold paths: the mean action after each step, in a plain Gymnasium loop written here
    (mean_paths,) = got["mean_paths"]
    for params, mean in zip(want.params, mean_paths, strict=True):
        env = gym.make("metarl/Navigation2D-v0")
        policy, obs, done, seen = run.policy(params, deterministic=True), None, False, []
        obs, _ = env.reset(seed=1, options={"task": task})
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            seen.append(obs)
            done = terminated or truncated
        env.close()
        np.testing.assert_array_equal(mean, np.asarray(seen))
    held_out = figures.navigation_paths(run, tmp_path / "held_out.png", steps=1, seed=3)
    assert len(held_out["tasks"]) == figures.PANELS and all(len(p) == 2 for p in held_out["paths"])


def test_evaluate_task_figure_draws_the_given_goal(nav_run, tmp_path, monkeypatch, capsys):
    fig, out = tmp_path / "nav.png", tmp_path / "t.json"
    assert main(["evaluate", str(nav_run), "--task", "goal=0.3,-0.2", "--steps", "1", "--out", str(out),
                 "--figure", str(fig)]) == 0
    assert json.loads(out.read_text())["tasks"][0]["task"] == {"goal": [0.3, -0.2]}
    image_size(fig)
    seen = []
    real = figures.navigation_paths
    monkeypatch.setitem(figures.FIGURES, "metarl/Navigation2D-v0",
                        lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    assert main(["evaluate", str(nav_run), "--task", "goal=-0.1,0.4", "--steps", "1", "--out", str(out),
                 "--figure", str(fig)]) == 0
    assert seen == [{"tasks": [{"goal": (-0.1, 0.4)}], "steps": 1, "seed": 1}]


def test_a_run_without_a_figure_is_one_error_line_before_evaluating(nav_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(figures.FIGURES, "metarl/Navigation2D-v0")
    fig, out = tmp_path / "nav.png", tmp_path / "e.json"
    assert main(["evaluate", str(nav_run), "--tasks", "2", "--out", str(out), "--figure", str(fig)]) == 2
    (line,) = error_lines(capsys)
    assert "no figure for metarl/Navigation2D-v0" in line and "sinusoid" in line and "--plot" in line
    assert not out.exists() and not fig.exists()


# ---------------------------------------------------------------------------- cheetah
def test_cheetah_velocity_is_the_velocity_the_task_rewards(cheetah_run, tmp_path):
    run = metarl.load(cheetah_run)
    task = {"velocity": 1.0}
    out = tmp_path / "vel.png"
    got = figures.velocity_tracking(run, out, tasks=[task], steps=1, seed=1)
    image_size(out)
    assert got["targets"] == [1.0]
    (by_step,) = got["velocities"]
    params = run.adapt_to(task, steps=1, seed=1)
    assert len(by_step) == len(params) == 2
    for v, p in zip(by_step, params):
        assert v.shape == (200,)  # the registered horizon
        np.testing.assert_array_equal(v, figures.rollout_velocity(run, p, task, seed=1))
    # in a plain loop, the plotted velocity is the one the task's reward term measures: -|v - target|
    env = gym.make("metarl/HalfCheetahVel-v0")
    policy = run.policy(params[1])
    obs, _ = env.reset(seed=1, options={"task": task})
    for t in range(20):
        obs, _, _, _, info = env.step(policy(obs))
        assert info["x_velocity"] == pytest.approx(by_step[1][t])
        assert info["reward_task"] == pytest.approx(-abs(by_step[1][t] - 1.0))
    env.close()


def test_evaluate_figure_on_cheetah_with_task(cheetah_run, tmp_path):
    fig = tmp_path / "hc.png"
    assert main(["evaluate", str(cheetah_run), "--task", "velocity=1.5", "--steps", "1",
                 "--out", str(tmp_path / "t.json"), "--figure", str(fig)]) == 0
    image_size(fig)
