"""What a new user types, run from a folder outside the repository: train a shipped config by name,
adapt the run to a task they choose (every env family), and record it adapting.

Each command goes through ``metarl.cli.main`` exactly as typed on the command line; the working
directory is a temporary folder, so nothing here can lean on files of the checkout."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageSequence

from metarl.cli import main

torch.set_num_threads(1)

#: Overrides that shrink a shipped config to a seconds-long run (the same keys a user would --set).
TINY = ["--set", "meta_batch_size=2", "--set", "env.episodes_per_task=2", "--set", "eval.every=100",
        "--set", "eval.tasks=2", "--set", "policy.hidden=[8]", "--set", "sampler.num_workers=1",
        "--set", "update_threads=1", "--set", "log_every=1"]


def train_tiny(config: str, iterations: int, logdir: str) -> None:
    assert main(["train", config, "--set", f"num_iterations={iterations}", *TINY, "--logdir", logdir]) == 0


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A working directory outside the checkout, kept for the module's tests."""
    return tmp_path_factory.mktemp("user")


def test_train_by_name_adapt_to_a_chosen_goal_and_record_it(outside, monkeypatch):
    monkeypatch.chdir(outside)
    assert main(["train", "navigation2d", "--set", "num_iterations=2", *TINY, "--logdir", "nav"]) == 0
    assert (outside / "nav" / "checkpoints" / "last.pt").is_file()

    assert main(["evaluate", "nav", "--task", "goal=0.3,-0.2", "--steps", "2", "--out", "goal.json"]) == 0
    (row,) = json.loads((outside / "goal.json").read_text())["tasks"]
    assert row["task"] == {"goal": [0.3, -0.2]} and [s["step"] for s in row["by_step"]] == [0, 1, 2]

    assert main(["record", "nav", "--task", "goal=0.3,-0.2", "--steps", "1", "--out", "adapt.gif"]) == 0
    with Image.open(outside / "adapt.gif") as gif:
        frames = sum(1 for _ in ImageSequence.Iterator(gif))
    # one episode before and one after the step; each shows its reset frame and one frame per env step,
    # and Navigation2D episodes end at the goal or at the 100-step horizon
    assert 2 * 2 <= frames <= 2 * 101


@pytest.mark.parametrize(("config", "task", "key", "value"), [
    ("halfcheetah_dir", "direction=-1", "direction", -1),
    ("ant_vel", "velocity=2.5", "velocity", 2.5),
    ("ant_dir", "direction=+1", "direction", 1),
    ("ant_goal", "goal=1,-1.5", "goal", [1.0, -1.5]),
])
def test_evaluate_a_chosen_task_on_every_locomotion_family(outside, monkeypatch, config, task, key, value):
    """Navigation2D and HalfCheetahVel are covered above and in test_watch.py; these are the other four."""
    monkeypatch.chdir(outside)
    train_tiny(config, 1, config)
    assert main(["evaluate", config, "--task", task, "--steps", "1", "--out", f"{config}.json"]) == 0
    (row,) = json.loads((outside / f"{config}.json").read_text())["tasks"]
    assert row["task"] == {key: value}
    returns = [s["mean"] for s in row["by_step"]]
    assert len(returns) == 2 and all(isinstance(r, float) for r in returns)
