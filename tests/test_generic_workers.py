"""The generic sampler's worker processes (metarl.envs.gym_batch): the same Episodes as in one process.

Bit for bit, for the same seed: a Box and a Discrete test env (tests/walk_env.py: terminating early, reporting
success; in a module of its own so that workers import no torch),
examples/goal_pendulum.py's env, and a built-in id against its fast sampler; errors name the env id;
workers stop on close and when their parent dies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from metarl.envs.gym_batch import EnvWorkerError, GymBatch, ProcessGymBatch, slices

from metarl.maml import detach_params, params_of
from metarl.rl.episodes import Episodes
from metarl.rl.generic_sampler import GenericSampler, GymTaskVec, registered_spec
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.rl.sampler import make_sampler
from tests.walk_env import WalkEnv

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
WALK = "tests.walk_env:metarl_test/Walk-v0"
PENDULUM = "goal_pendulum:examples/GoalPendulum-v0"
FIELDS = ("observations", "actions", "rewards", "masks", "log_probs")


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


def policy_for(env_id: str, env_kwargs: dict | None = None, seed: int = 0) -> torch.nn.Module:
    env = gym.make(env_id, **(env_kwargs or {}))
    obs = int(np.prod(env.observation_space.shape))
    torch.manual_seed(seed)
    if isinstance(env.action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs, int(env.action_space.n), [16], "tanh")
    return GaussianMLPPolicy(obs, int(np.prod(env.action_space.shape)), [16], "tanh", 1.0)


def run(sampler, policy: torch.nn.Module, n_tasks: list[int]) -> list[Episodes]:
    """Pre- and post-adaptation-like calls with ``n_tasks[i]`` tasks each (the pool resized between them)."""
    params = detach_params(params_of(policy))
    tasks = sampler.sample_tasks(max(n_tasks), np.random.default_rng(0))
    out = []
    for n in n_tasks:
        out += sampler.sample(policy, params, tasks[:n])
        per_task = {k: torch.stack([v + 0.02 * i for i in range(n)]) for k, v in params.items()}
        out += sampler.sample(policy, per_task, tasks[:n], per_task=True)
    return out


def assert_same(a: list[Episodes], b: list[Episodes]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for f in FIELDS:
            assert torch.equal(getattr(x, f), getattr(y, f)), f
        sx, sy = x.successes(), y.successes()
        assert (sx is None and sy is None) or torch.equal(sx, sy)


@pytest.mark.parametrize(("env_id", "env_kwargs", "workers"), [
    (WALK, {}, 2), (WALK, {"discrete": True}, 3), (PENDULUM, {}, 2)], ids=["box", "discrete", "pendulum"])
def test_workers_give_the_in_process_episodes_bit_for_bit(env_id, env_kwargs, workers, examples_on_path) -> None:
    policy = policy_for(env_id, env_kwargs)
    sizes = [3, 1, 4]  # 6 sub-envs, then 2 (fewer workers used than held), then 8 (the pools grow)
    with GenericSampler(env_id, episodes_per_task=2, num_workers=1, seed=4, env_kwargs=env_kwargs) as local:
        expected = run(local, policy, sizes)
    with GenericSampler(env_id, episodes_per_task=2, num_workers=workers, seed=4, env_kwargs=env_kwargs) as split:
        got = run(split, policy, sizes)
        assert isinstance(split._vec._batch, ProcessGymBatch) and len(split._vec._batch.pids) == workers
    assert_same(expected, got)
    if env_id == WALK:
        stacked = Episodes.stack(expected[:2])
        assert bool((stacked.lengths() < 20).any()), "no episode terminated: the padding is not exercised"
        assert stacked.successes() is not None and bool(stacked.successes().any())


def test_workers_run_whole_rollouts_and_a_policy_that_cannot_travel_steps_in_lockstep(monkeypatch) -> None:
    """With 2+ tasks each worker runs its tasks' rollouts with a copy of the policy (no step from this
    process); a policy class that does not pickle (defined here) falls back to lockstep stepping from this
    process. Both give the in-process episodes bit for bit."""
    policy = policy_for(WALK, seed=5)
    with GenericSampler(WALK, episodes_per_task=2, num_workers=1, seed=3) as local:
        expected = run(local, policy, [4])
    steps: list[int] = []
    step = GymTaskVec.step
    monkeypatch.setattr(GymTaskVec, "step", lambda self, actions: steps.append(1) or step(self, actions))
    with GenericSampler(WALK, episodes_per_task=2, num_workers=2, seed=3) as split:
        assert_same(expected, run(split, policy, [4]))
    assert not steps, "the workers' rollouts stepped from this process"

    class Local(GaussianMLPPolicy):
        pass

    stay = Local(2, 1, [16], "tanh", 1.0)
    stay.load_state_dict(policy.state_dict())
    with GenericSampler(WALK, episodes_per_task=2, num_workers=2, seed=3) as split:
        assert_same(expected, run(split, stay, [4]))
    assert steps, "a policy that does not pickle did not step in lockstep"


def test_workers_on_a_builtin_id_equal_the_fast_sampler() -> None:
    env_id = "metarl/Navigation2D-v0"
    policy = policy_for(env_id, seed=2)
    fast = make_sampler(env_id, episodes_per_task=2, num_workers=1, seed=7)
    generic = GenericSampler(env_id, episodes_per_task=2, num_workers=2, seed=7)
    try:
        assert_same(run(fast, policy, [3]), run(generic, policy, [3]))
    finally:
        fast.close()
        generic.close()


def test_an_env_error_in_a_worker_names_the_env_and_the_cause() -> None:
    with GenericSampler(WALK, episodes_per_task=2, num_workers=2, env_kwargs={"fail_at": 3}) as sampler:
        policy = policy_for(WALK)
        with pytest.raises(EnvWorkerError, match=r"(?s)metarl_test/Walk-v0.*the walk env broke"):
            sampler.sample(policy, detach_params(params_of(policy)), [{"goal": 0.3}])


def test_a_worker_that_cannot_make_the_env_fails_on_construction() -> None:
    spec = registered_spec(WALK)
    with pytest.raises(EnvWorkerError, match=r"(?s)Walk-v0.*unexpected keyword argument 'nope'"):
        ProcessGymBatch(spec, 2, num_workers=2, env_kwargs={"nope": 1}, name=WALK)


def test_an_entry_point_in_main_is_refused_with_a_reason() -> None:
    class Local(WalkEnv):
        pass

    Local.__module__ = "__main__"
    spec = gym.envs.registration.EnvSpec("metarl_test/Main-v0", entry_point=Local, max_episode_steps=5)
    with pytest.raises(ValueError, match="__main__"):
        ProcessGymBatch(spec, 2, num_workers=2)


def test_slices_are_contiguous_and_balanced() -> None:
    assert slices(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert slices(2, 4) == [(0, 1), (1, 2)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited; its parent has not reaped it yet
        return f.read().split(")")[-1].split()[0] == "Z"


def wait_gone(pids: list[int], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_close_stops_the_workers() -> None:
    batch = ProcessGymBatch(registered_spec(WALK), 4, num_workers=2, name=WALK)
    pids = batch.pids
    obs = batch.reset([{"goal": 0.1}] * 4, [1, 2, 3, 4])
    assert obs.shape == (4, 2)
    batch.close()
    assert wait_gone(pids, timeout=5.0)
    with pytest.raises(RuntimeError, match="closed"):
        batch.step(np.zeros((4, 1), np.float32))


def test_workers_exit_when_their_parent_dies() -> None:
    """A parent killed with SIGKILL (no close) leaves no worker behind: they exit at the end of their stdin."""
    script = ("import sys, os, signal; sys.path.insert(0, sys.argv[1]);"
              "from metarl.envs.gym_batch import ProcessGymBatch; import gymnasium as gym;"
              "from examples.goal_pendulum import GoalPendulumEnv;"
              "b = ProcessGymBatch(gym.spec('examples/GoalPendulum-v0'), 4, num_workers=2);"
              "print(*b.pids, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    out = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    assert wait_gone(pids), "workers outlived their parent"


def test_in_process_batch_is_the_same_interface() -> None:
    local = GymBatch(WALK, 3)
    try:
        obs = local.reset([{"goal": 0.0}] * 3, [0, 1, 2])
        obs2, rewards, done = local.step(np.zeros((3, 1), np.float32))
        assert obs.shape == obs2.shape == (3, 2) and rewards.shape == done.shape == (3,)
        assert local.success is not None and local.success.dtype == bool
    finally:
        local.close()


def test_whether_a_policy_can_travel_is_judged_per_object():
    """Two policies of one class: the one holding something that does not pickle stays in this process,
    the other travels, whichever is asked first (the answer is remembered per object, not per class)."""
    from metarl.rl.generic_sampler import _cpu_and_picklable

    plain, odd = GaussianMLPPolicy(3, 2, [4], "tanh", 1.0), GaussianMLPPolicy(3, 2, [4], "tanh", 1.0)
    odd.hook = lambda x: x  # a lambda does not pickle
    for _ in range(2):  # the second time from what was remembered
        assert _cpu_and_picklable(plain, detach_params(params_of(plain)))
        assert not _cpu_and_picklable(odd, detach_params(params_of(odd)))
