"""The Ray sampler: the same episodes as the local sampler for the same seed (shared and per-task
parameters, episodes that end early, tasks split across actors), dead workers replaced, and clear
errors for an unreachable cluster or workers that keep dying.

Run with ``pytest -m ray tests/test_ray_sampler.py`` (needs ``pip install -e .[ray]``): a local
Ray with 2 CPUs on 127.0.0.1, its files under a temporary directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import fields

import pytest
import torch

from metarl.maml import detach_params, params_of
from metarl.rl.episodes import Episodes
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampler import make_sampler

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
from metarl.rl.ray_sampler import RaySampler, _shares  # noqa: E402  (needs Ray)

torch.set_num_threads(1)
NAV = "metarl/Navigation2D-v0"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def assert_same(xs: list[Episodes], ys: list[Episodes]) -> None:
    assert len(xs) == len(ys)
    for n, (x, y) in enumerate(zip(xs, ys, strict=True)):
        for f in fields(Episodes):
            a, b = getattr(x, f.name), getattr(y, f.name)
            assert a.shape == b.shape and a.dtype == b.dtype, (n, f.name)
            assert torch.equal(a, b), f"task {n}: {f.name} differs"


def homing_policy(step: tuple[float, float]) -> tuple[GaussianMLPPolicy, dict[str, torch.Tensor]]:
    """A policy that moves by ``step`` each time step (tiny noise), so that episodes whose goal
    lies on its path end early, after different numbers of steps."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (16, 16), "tanh", init_std=1e-4, min_log_std=-12.0)
    params = detach_params(params_of(policy))
    last = sorted(k for k in params if k.startswith("mu."))[-2:]  # the output layer's bias, weight
    for k in last:
        params[k] = torch.zeros_like(params[k]) if k.endswith("weight") else torch.tensor(step)
    return policy, params


# goals 2, 3, 4 and 6 steps of 0.05 along +x, and one that is never reached
GOALS = [{"goal": (0.1, 0.0)}, {"goal": (0.15, 0.0)}, {"goal": (-0.3, 0.2)}, {"goal": (0.2, 0.0)}, {"goal": (0.3, 0.0)}]


def test_shares_are_contiguous_and_balanced() -> None:
    assert _shares(5, 2) == [(0, 2), (2, 5)]
    assert _shares(2, 4) == [(0, 1), (1, 2)]
    assert _shares(40, 3) == [(0, 13), (13, 27), (27, 40)]


def test_same_episodes_as_local_sampler_shared_params() -> None:
    policy, params = homing_policy((0.05, 0.0))
    with make_sampler(NAV, episodes_per_task=4, seed=11, horizon=30) as local:
        expected = [local.sample(policy, params, GOALS) for _ in range(2)]
    with RaySampler(NAV, episodes_per_task=4, seed=11, horizon=30, num_workers=2) as remote:
        got = [remote.sample(policy, params, GOALS) for _ in range(2)]
    lengths = Episodes.stack(expected[0]).lengths()
    assert (lengths[[0, 1, 3, 4]] < 10).all() and (lengths[2] == 30).all()  # share 0 ends before share 1
    for x, y in zip(expected, got, strict=True):
        assert_same(x, y)
    assert not torch.equal(Episodes.stack(got[0]).actions, Episodes.stack(got[1]).actions)  # calls differ


def test_same_episodes_as_local_sampler_per_task_params() -> None:
    policy, params = homing_policy((0.05, 0.0))
    # the first share (tasks 0, 1) ends after 4 and 3 steps, the second one after 10 (task 2)
    n = len(GOALS)
    stacked = {k: v.expand(n, *v.shape).clone() for k, v in params.items()}
    bias = sorted(k for k in params if k.startswith("mu."))[-2]
    stacked[bias][0] = torch.tensor([0.025, 0.0])
    stacked[bias][2] = torch.tensor([-0.03, 0.02])
    tasks = GOALS
    with make_sampler(NAV, episodes_per_task=4, seed=5, horizon=40) as local:
        local.sample(policy, params, tasks)
        expected = local.sample(policy, stacked, tasks, per_task=True)
    with RaySampler(NAV, episodes_per_task=4, seed=5, horizon=40, num_workers=2) as remote:
        remote.sample(policy, params, tasks)
        got = remote.sample(policy, stacked, tasks, per_task=True)
    lengths = Episodes.stack(expected).lengths()
    assert (lengths[:2] < 5).all() and (lengths[2] > 5).all() and (lengths < 40).all()
    assert_same(expected, got)


def test_same_episodes_halfcheetah_and_streams_interchangeable() -> None:
    env_id = "metarl/HalfCheetahVel-v0"
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(17, 6, (16, 16), "tanh", init_std=0.5)
    params = detach_params(params_of(policy))
    tasks = [{"velocity": v} for v in (0.5, 1.0, 2.0)]
    with make_sampler(env_id, episodes_per_task=4, seed=2, horizon=12, num_workers=1) as local:
        local.sample(policy, params, tasks)
        state = local.state_dict()
        expected = local.sample(policy, params, tasks)
    with RaySampler(env_id, episodes_per_task=4, seed=99, horizon=12, num_workers=2) as remote:
        remote.load_state_dict(state)  # a local run's checkpoint continues on Ray
        got = remote.sample(policy, params, tasks)
    assert_same(expected, got)


def test_killed_worker_is_replaced_and_its_share_resampled(caplog: pytest.LogCaptureFixture) -> None:
    policy, params = homing_policy((0.05, 0.0))
    with make_sampler(NAV, episodes_per_task=4, seed=7, horizon=30) as local:
        expected = [local.sample(policy, params, GOALS) for _ in range(2)]
    with RaySampler(NAV, episodes_per_task=4, seed=7, horizon=30, num_workers=2) as remote:
        first = remote.sample(policy, params, GOALS)
        killed = remote.workers[1]
        ray.kill(killed)
        with caplog.at_level(logging.WARNING, logger="metarl.rl.ray_sampler"):
            second = remote.sample(policy, params, GOALS)
        assert remote.workers[1] is not killed
        assert ray.get(remote.workers[1].ready.remote()) > 0  # the replacement is alive
    assert "worker 1 died" in caplog.text and "sampling its 3 tasks again" in caplog.text
    assert_same(expected[0], first)
    assert_same(expected[1], second)


def test_workers_that_keep_dying_raise_naming_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, params = homing_policy((0.05, 0.0))
    with RaySampler(NAV, episodes_per_task=2, seed=0, horizon=5, num_workers=2, max_restarts=3) as remote:
        spawn = remote._spawn

        def dead_on_arrival() -> object:
            actor = spawn()
            ray.kill(actor)
            return actor

        monkeypatch.setattr(remote, "_spawn", dead_on_arrival)
        for w in remote.workers:
            ray.kill(w)
        with pytest.raises(RuntimeError, match=r"workers at a local Ray \(address null\) keep dying"):
            remote.sample(policy, params, GOALS)


def test_unreachable_cluster_raises_naming_the_address() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RuntimeError, match=f"cannot reach the Ray cluster at '{address}'"):
            RaySampler(NAV, episodes_per_task=2, address=address)


def test_errors_of_the_rollout_itself_are_raised_not_retried() -> None:
    policy, params = homing_policy((0.05, 0.0))
    with RaySampler(NAV, episodes_per_task=2, seed=0, horizon=5, num_workers=2) as remote:
        with pytest.raises(ValueError, match="task goal \\(0.9, 0.0\\) is outside"):
            remote.sample(policy, params, [{"goal": (0.1, 0.0)}, {"goal": (0.9, 0.0)}])
        with pytest.raises(ValueError, match="leading dim of len\\(tasks\\)=2"):
            remote.sample(policy, params, GOALS[:2], per_task=True)
        assert len(remote.sample(policy, params, GOALS[:1])) == 1  # one task: one worker used


def test_config_backend_ray_gives_the_local_runs_episodes() -> None:
    """``sampler.backend: ray`` through the learner: pre- and post-adaptation episodes (the latter
    with per-task adapted parameters) equal the local backend's; ``sampler.start_timeout`` reaches it."""
    from metarl.config import config_from_dict
    from metarl.rl.learner import RLLearner

    runs = []
    for sampler in ({"backend": "local", "num_workers": 1}, {"backend": "ray", "num_workers": 2, "start_timeout": 300}):
        cfg = config_from_dict({
            "benchmark": "rl", "seed": 3, "meta_batch_size": 4, "env": {"id": NAV, "episodes_per_task": 4},
            "policy": {"hidden": [16, 16]}, "sampler": sampler,
        })
        learner = RLLearner(cfg)
        try:
            assert isinstance(learner.sampler, RaySampler) == (sampler["backend"] == "ray")
            if sampler["backend"] == "ray":
                assert learner.sampler.start_timeout == 300.0
            tasks = learner.env.unwrapped.sample_tasks(cfg.meta_batch_size, learner.np_rng)
            train, valid = learner.sample_adapted(tasks)
            runs.append([*train, valid])
        finally:
            learner.close()
    for local, remote in zip(*runs, strict=True):
        assert_same(local.unstack(), remote.unstack())


def test_user_id_same_episodes_and_success_as_the_generic_sampler() -> None:
    """A task-protocol id other than the built-in ones (tests/walk_env.py: a ``module:Id``, early ends,
    success flags) runs on Ray actors with the generic sampler's episodes, split over 2 actors."""
    import numpy as np

    from metarl.rl.generic_sampler import GenericSampler

    walk = "tests.walk_env:metarl_test/Walk-v0"
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 1, (16,), "tanh")
    params = detach_params(params_of(policy))
    with GenericSampler(walk, episodes_per_task=3, num_workers=1, seed=8) as local, \
            RaySampler(walk, episodes_per_task=3, seed=8, num_workers=2) as remote:
        tasks = local.sample_tasks(3, np.random.default_rng(0))
        per_task = {k: torch.stack([v + 0.02 * i for i in range(3)]) for k, v in params.items()}
        for p, pt in ((params, False), (per_task, True)):
            xs, ys = local.sample(policy, p, tasks, per_task=pt), remote.sample(policy, p, tasks, per_task=pt)
            assert_same(xs, ys)
            for x, y in zip(xs, ys, strict=True):
                assert x.successes() is not None and torch.equal(x.successes(), y.successes())
