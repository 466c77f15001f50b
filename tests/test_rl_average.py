"""``ema``: the average of the meta-parameters that validation, checkpoints' ``model`` and evaluation use."""

from __future__ import annotations

import pytest
import torch

import metarl
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.rl.learner import RLLearner
from metarl.training import train

torch.set_num_threads(1)


#: A 2D-navigation run small enough to train in seconds (also used by test_iterate_averages.py).
TINY_NAV = {
    "benchmark": "rl", "name": "nav-avg", "seed": 4, "num_iterations": 4, "meta_batch_size": 3,
    "log_every": 1, "checkpoint_every": 1, "eval": {"every": 2, "tasks": 3, "test_tasks": 3},
    "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
    "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 3},
    "policy": {"hidden": [8], "activation": "tanh"},
    "sampler": {"num_workers": 1},
}


def nav_cfg(**over):
    return config_from_dict({**TINY_NAV, **over})


@pytest.fixture
def iterates(monkeypatch):
    """Records the policy's parameters after every meta-step, from outside the learner."""
    seen: list[dict[str, torch.Tensor]] = []
    step = RLLearner.train_step

    def recording(self, iteration, log):
        out = step(self, iteration, log)
        seen.append({k: v.detach().clone() for k, v in self.module.state_dict().items()})
        return out

    monkeypatch.setattr(RLLearner, "train_step", recording)
    return seen


def test_the_average_is_the_running_mean_of_the_iterates_and_training_is_unchanged(tmp_path, iterates):
    decay = 0.6
    plain = train(nav_cfg(), logdir=tmp_path / "plain", quiet=True)
    plain_iterates = list(iterates)
    iterates.clear()
    averaged = train(nav_cfg(ema=decay), logdir=tmp_path / "avg", quiet=True)
    assert len(iterates) == len(plain_iterates) == 4
    # the same meta-steps: the last iterates are equal, bit for bit
    for a, b in zip(plain_iterates, iterates, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    expected = dict(iterates[0])
    for theta in iterates[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * theta[k] for k in theta}
    state = load_checkpoint(averaged)["learner"]
    for k, v in iterates[-1].items():
        torch.testing.assert_close(state["model_train"][k], v, rtol=0, atol=0)
        torch.testing.assert_close(state["model"][k], expected[k], rtol=1e-6, atol=1e-7)
    assert "model_train" not in load_checkpoint(plain)["learner"]
    # what users load is the average: metarl.load and the .safetensors export
    for path in ("last.pt", "last.safetensors"):
        run = metarl.load(averaged / "checkpoints" / path)
        for k in expected:
            torch.testing.assert_close(run.params[k], expected[k], rtol=1e-6, atol=1e-7)
    # validation scored the average, not the last iterate: the two runs' validation returns differ
    rows = [(averaged / "metrics.csv").read_text(), (plain / "metrics.csv").read_text()]
    assert rows[0].splitlines()[0] == rows[1].splitlines()[0]
    assert rows[0] != rows[1]


def test_an_averaged_run_interrupted_and_resumed_equals_the_uninterrupted_one(tmp_path):
    cfg = nav_cfg(ema=0.7)
    full = train(cfg, logdir=tmp_path / "full", quiet=True)
    part = train(cfg, logdir=tmp_path / "part", quiet=True, stop_after=2)
    train(resume=part, quiet=True)
    a, b = load_checkpoint(full)["learner"], load_checkpoint(part)["learner"]
    for key in ("model", "model_train"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0)


def test_resuming_with_ema_off_goes_on_from_the_last_iterate(tmp_path):
    run = train(nav_cfg(ema=0.7, num_iterations=2), logdir=tmp_path / "run", quiet=True)
    theta = load_checkpoint(run)["learner"]["model_train"]
    learner = RLLearner(nav_cfg(ema=0.0))
    try:
        learner.load_state_dict(load_checkpoint(run)["learner"])
        assert learner.average is None
        for k, v in learner.module.state_dict().items():
            torch.testing.assert_close(v, theta[k], rtol=0, atol=0)
        assert "model_train" not in learner.state_dict()
    finally:
        learner.close()


def test_an_ema_of_one_is_refused_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: navigation2d\nema: 1.0\n")
    assert main(["train", str(cfg), "--logdir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ema" in err[0] and "[0, 1)" in err[0], err
