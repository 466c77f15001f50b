"""``train_goal_skew``: training draws more of the fast goal velocities; validation and evaluation do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metarl.envs.tasks import VelocityTasks

from metarl.cli import main as cli_main
from metarl.config import ConfigError
from metarl.seeding import validation_seed
from metarl.training import train
from tests.test_rl_baselines import recorded_samples, tiny_cfg  # noqa: F401  (a fixture)

torch.set_num_threads(1)


def test_skew_zero_is_the_uniform_draw_it_always_was() -> None:
    space = VelocityTasks(0.0, 2.0)
    drawn = [t["velocity"] for t in space.sample(50, np.random.default_rng(3))]
    assert drawn == list(np.random.default_rng(3).uniform(0.0, 2.0, size=50))


@pytest.mark.parametrize("skew", [1.0, 3.0])
def test_skewed_velocities_follow_the_power_law(skew) -> None:
    """Against the closed-form CDF ``((v - low) / (high - low)) ** (k + 1)`` (a Kolmogorov-Smirnov distance
    below the 0.1% critical value) and the mean ``low + (high - low) (k + 1) / (k + 2)``."""
    low, high, n = 0.5, 2.5, 20000
    v = np.sort([t["velocity"] for t in VelocityTasks(low, high).sample(n, np.random.default_rng(0), skew=skew)])
    assert low <= v[0] and v[-1] <= high
    cdf = ((v - low) / (high - low)) ** (skew + 1)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n)
    assert v.mean() == pytest.approx(low + (high - low) * (skew + 1) / (skew + 2), abs=4 * v.std() / np.sqrt(n))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_skew_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="skew must be a finite number >= 0"):
        VelocityTasks(0.0, 2.0).sample(3, np.random.default_rng(0), skew=bad)
    with pytest.raises(ConfigError, match="train_goal_skew"):
        tiny_cfg("metarl/HalfCheetahVel-v0", "hc", train_goal_skew=bad)


def test_training_draws_skewed_goals_and_validation_uniform_ones(tmp_path, recorded_samples) -> None:  # noqa: F811
    cfg = tiny_cfg("metarl/HalfCheetahVel-v0", "hc", num_iterations=1, train_goal_skew=3.0,
                   env={"kwargs": {"frame_skip": 1}})
    train(cfg, logdir=tmp_path / "run", quiet=True)
    space = VelocityTasks(0.0, 2.0)
    trained = space.sample(cfg.meta_batch_size, np.random.default_rng(cfg.seed), skew=3.0)
    validated = space.sample(cfg.eval.tasks, np.random.default_rng(validation_seed(cfg.seed)))
    seen = [tasks for _, tasks, _ in recorded_samples]
    assert seen.count(trained) == 2  # the pre- and post-update episodes of the one meta-iteration
    assert seen.count(validated) == len(seen) - 2
    assert trained != space.sample(cfg.meta_batch_size, np.random.default_rng(cfg.seed))


def test_skew_on_an_env_without_goal_velocities_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="no velocity tasks; set train_goal_skew: 0"):
        train(tiny_cfg("metarl/Navigation2D-v0", "nav", train_goal_skew=1.0), logdir=tmp_path / "nav", quiet=True)
    assert not (tmp_path / "nav").exists()
    capsys.readouterr()
    assert cli_main(["train", "navigation2d", "--set", "train_goal_skew=1", "--logdir", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_goal_skew: 1.0" in err[0] and "Navigation2D" in err[0]
