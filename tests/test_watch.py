"""Adapting a trained RL run to a task you choose, acting with it in plain Gymnasium, and watching it:
``metarl evaluate RUN --task``, ``Run.adapt_to`` / ``act`` / ``policy``, ``metarl record``, and the renderers."""

from __future__ import annotations

import json
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import metarl
import metarl.rl.build  # noqa: F401  (registers the environments)
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict
from metarl.rl import watch
from metarl.training import train

torch.set_num_threads(1)


def tiny_cfg(env_id: str, name: str, iterations: int):
    return config_from_dict({
        "benchmark": "rl", "name": name, "seed": 2, "num_iterations": iterations, "meta_batch_size": 2,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 100, "tasks": 2, "test_tasks": 3},
        "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
        "env": {"id": env_id, "episodes_per_task": 2},
        "policy": {"hidden": [8], "activation": "tanh"},
        "sampler": {"num_workers": 1},
    })


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    return train(tiny_cfg("metarl/Navigation2D-v0", "nav", 2), logdir=tmp_path_factory.mktemp("w") / "nav", quiet=True)


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory):
    return train(tiny_cfg("metarl/HalfCheetahVel-v0", "hc", 1), logdir=tmp_path_factory.mktemp("w") / "hc",
                 quiet=True)


@pytest.fixture
def gl_env(monkeypatch):
    """``MUJOCO_GL`` as it was after the test, whatever the probe set."""
    import os

    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", ""))
    monkeypatch.setattr(watch, "_GL_OK", watch._GL_OK)


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("metarl: error")]


# ---------------------------------------------------------------------------- evaluate --task
def test_evaluate_task_writes_the_return_after_each_step(nav_run, tmp_path):
    out = tmp_path / "one.json"
    assert main(["evaluate", str(nav_run), "--task", "goal=0.3,-0.2", "--steps", "1", "--out", str(out)]) == 0
    one = json.loads(out.read_text())
    assert one["metric"] == "return" and one["env"] == "metarl/Navigation2D-v0" and one["iteration"] == 2
    (row,) = one["tasks"]
    assert row["task"] == {"goal": [0.3, -0.2]}
    assert [s["step"] for s in row["by_step"]] == [0, 1]
    assert all(np.isfinite(s["mean"]) and s["mean"] < 0 for s in row["by_step"])
    # the same as the Python API's adaptation with the same seed (evaluate's default, 1)
    want = watch.adapt_to(metarl.load(nav_run), {"goal": (0.3, -0.2)}, steps=1, seed=1).returns
    assert [s["mean"] for s in row["by_step"]] == pytest.approx(want, rel=1e-6)
    # several --task flags: each adapted on its own, so the first row does not change
    two = tmp_path / "two.json"
    assert main(["evaluate", str(nav_run), "--task", "goal=0.3,-0.2", "--task", "goal=-0.1,0.4", "--steps", "1",
                 "--out", str(two)]) == 0
    rows = json.loads(two.read_text())["tasks"]
    assert [r["task"]["goal"] for r in rows] == [[0.3, -0.2], [-0.1, 0.4]]
    assert rows[0]["by_step"] == row["by_step"]


@pytest.mark.parametrize(("task", "words"), [
    ("goal=0.7,-0.2", ["goal", "(0.7, -0.2)", "[-0.5, 0.5]"]),
    ("velocity=1", ["'velocity'", "goal=", "[-0.5, 0.5]"]),
    ("goal=0.3", ["goal", "0.3", "two numbers"]),
    ("goal=a,b", ["goal", "'a,b'", "[-0.5, 0.5]"]),
    ("goal", ["KEY=VALUE", "goal="]),
])
def test_a_task_outside_the_space_is_one_error_line_and_exit_2(nav_run, tmp_path, capsys, task, words):
    out = tmp_path / "never.json"
    assert main(["evaluate", str(nav_run), "--task", task, "--out", str(out)]) == 2
    (line,) = error_lines(capsys)
    for word in words:
        assert word in line, (word, line)
    assert not out.exists()


def test_task_flag_refuses_held_out_options(nav_run, capsys):
    assert main(["evaluate", str(nav_run), "--task", "goal=0.1,0.1", "--tasks", "5"]) == 2
    (line,) = error_lines(capsys)
    assert "--tasks" in line and "--task" in line


@pytest.mark.parametrize(("env_id", "text", "task"), [
    ("metarl/HalfCheetahVel-v0", "velocity=1.7", {"velocity": 1.7}),
    ("metarl/HalfCheetahDir-v0", "direction=-1", {"direction": -1}),
    ("metarl/AntVel-v0", "velocity=2.5", {"velocity": 2.5}),
    ("metarl/AntDir-v0", "direction=+1", {"direction": 1}),
    ("metarl/AntGoal-v0", "goal=1,-1.5", {"goal": (1.0, -1.5)}),
])
def test_parse_task_reads_every_env_s_task_key(env_id, text, task):
    env = gym.make(env_id)
    try:
        assert watch.parse_task(env, text) == task
        key = text.split("=")[0]
        with pytest.raises(ConfigError, match=key):
            watch.parse_task(env, f"{key}=9,9" if key == "goal" else f"{key}=9")
        with pytest.raises(ConfigError, match=f"no task key 'speed'.*{key}="):
            watch.parse_task(env, "speed=1")
    finally:
        env.close()


def test_halfcheetah_evaluate_task(cheetah_run, tmp_path, capsys):
    out = tmp_path / "hc.json"
    assert main(["evaluate", str(cheetah_run), "--task", "velocity=1.0", "--steps", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["tasks"]
    assert row["task"] == {"velocity": 1.0} and len(row["by_step"]) == 2
    assert main(["evaluate", str(cheetah_run), "--task", "velocity=2.5"]) == 2
    (line,) = error_lines(capsys)
    assert "velocity" in line and "2.5" in line and "[0.0, 2.0]" in line


# ---------------------------------------------------------------------------- Python API
def test_adapt_to_gives_params_that_act_in_a_plain_gymnasium_loop(nav_run):
    run = metarl.load(nav_run)
    params = run.adapt_to({"goal": (0.3, -0.2)}, steps=2, seed=0)
    assert len(params) == 3
    for k, v in params[0].items():
        torch.testing.assert_close(v, run.params[k])
    assert any(not torch.equal(params[1][k], params[0][k]) for k in params[0])
    assert all(v.shape == run.params[k].shape and not v.requires_grad for p in params for k, v in p.items())
    env = gym.make("metarl/Navigation2D-v0")
    try:
        for p in params:
            policy = run.policy(p)
            obs, _ = env.reset(seed=0, options={"task": {"goal": (0.3, -0.2)}})
            done, steps = False, 0
            while not done:
                action = policy(obs)
                assert isinstance(action, np.ndarray) and action.shape == (2,) and action.dtype == np.float32
                np.testing.assert_array_equal(action, run.act(p, obs, deterministic=True))
                sampled = run.act(p, obs)
                assert sampled.shape == (2,) and not np.array_equal(sampled, action)
                obs, _, terminated, truncated, _ = env.step(action)
                done, steps = terminated or truncated, steps + 1
            assert terminated or steps == 100  # ended at the goal, or at the registered horizon
    finally:
        env.close()
    batch = np.zeros((5, 2), dtype=np.float32)
    assert run.policy()(batch).shape == (5, 2)
    assert run.policy().distribution(batch).log_prob(torch.zeros(5, 2)).shape == (5,)
    with pytest.raises(ValueError, match="outside the task space"):
        run.adapt_to({"goal": (2.0, 0.0)}, steps=1)


# ---------------------------------------------------------------------------- rendering and record
def test_navigation_renders_rgb_arrays_that_follow_the_agent():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("metarl/Navigation2D-v0", render_mode="rgb_array")
    assert "rgb_array" in env.metadata["render_modes"] and env.metadata["render_fps"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded observation space's warnings
        check_env(env.unwrapped)
    env.reset(seed=0, options={"task": {"goal": (0.3, -0.2)}})
    first = env.render()
    assert first.shape == (256, 256, 3) and first.dtype == np.uint8
    frames = [first]
    for _ in range(3):
        env.step(np.array([0.1, -0.05], dtype=np.float32))
        frames.append(env.render())
    for a, b in zip(frames, frames[1:]):
        assert (a != b).any()
    env.reset(seed=0)  # the path starts again
    np.testing.assert_array_equal(env.render(), first)
    plain = gym.make("metarl/Navigation2D-v0")
    plain.reset(seed=0)
    assert plain.unwrapped.render() is None


def gif_frames(path) -> int:
    with Image.open(path) as im:
        return sum(1 for _ in ImageSequence.Iterator(im))


def test_record_writes_one_frame_per_env_step(nav_run, tmp_path, capsys):
    out = tmp_path / "adapt.gif"
    assert main(["record", str(nav_run), "--task", "goal=0.3,-0.2", "--steps", "1", "--out", str(out)]) == 0
    lengths = [int(n) for n in re.findall(r"in (\d+) steps", capsys.readouterr().out)]
    assert len(lengths) == 2  # the pre-update episode and one after the step
    assert gif_frames(out) == sum(lengths)
    with Image.open(out) as im:
        assert im.size == (256, 256)
    result = watch.record(metarl.load(nav_run), tmp_path / "again.gif", task={"goal": (0.3, -0.2)}, steps=1, seed=1)
    assert [e["length"] for e in result["episodes"]] == lengths and result["frames"] == sum(lengths)


def test_record_mp4_needs_the_video_extra(nav_run, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    assert main(["record", str(nav_run), "--task", "goal=0.3,-0.2", "--out", str(tmp_path / "a.mp4")]) == 2
    (line,) = error_lines(capsys)
    assert "pip install metarl[video]" in line
    assert main(["record", str(nav_run), "--out", str(tmp_path / "a.avi")]) == 2
    assert ".gif" in error_lines(capsys)[0]


def test_record_mp4(nav_run, tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs the video extra: pip install metarl[video]")
    import imageio.v2 as imageio

    out = tmp_path / "adapt.mp4"
    assert main(["record", str(nav_run), "--task", "goal=0.3,-0.2", "--steps", "1", "--out", str(out)]) == 0
    lengths = [int(n) for n in re.findall(r"in (\d+) steps", capsys.readouterr().out)]
    with imageio.get_reader(out) as reader:
        assert reader.count_frames() == sum(lengths)


def test_no_headless_opengl_is_one_line_naming_egl_and_osmesa(cheetah_run, tmp_path, capsys, monkeypatch, gl_env):
    monkeypatch.setenv("MUJOCO_GL", "")
    monkeypatch.setattr(watch, "_GL_OK", None)
    monkeypatch.setattr(watch, "_probe_gl", lambda backend: f"no {backend} here")
    out = tmp_path / "hc.gif"
    assert main(["record", str(cheetah_run), "--task", "velocity=1", "--out", str(out)]) == 2
    (line,) = error_lines(capsys)
    assert "MUJOCO_GL=egl: no egl here" in line and "MUJOCO_GL=osmesa: no osmesa here" in line
    assert not out.exists()


def mujoco_backend() -> str:
    try:
        return watch.mujoco_gl()
    except watch.RecordError as e:
        pytest.skip(f"MuJoCo cannot render headless here (neither EGL nor OSMesa): {e}")


def test_mujoco_renders_headless(gl_env, tmp_path):
    mujoco_backend()
    env = gym.make("metarl/HalfCheetahVel-v0", render_mode="rgb_array", width=64, height=64, camera_name="track")
    try:
        env.reset(seed=0, options={"task": {"velocity": 1.0}})
        frames = [env.render()]
        for _ in range(3):
            env.step(np.ones(6))
            frames.append(env.render())
    finally:
        env.close()
    assert frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8
    assert (frames[0] != frames[-1]).any()
    out = watch.write_video([watch.caption(f, f"t={t}") for t, f in enumerate(frames)], tmp_path / "hc.gif", 20)
    assert gif_frames(out) == 4


@pytest.mark.slow
def test_record_halfcheetah(cheetah_run, tmp_path, capsys, gl_env):
    mujoco_backend()
    out = tmp_path / "hc.gif"
    assert main(["record", str(cheetah_run), "--task", "velocity=1.5", "--steps", "0", "--out", str(out)]) == 0
    assert gif_frames(out) == 200
