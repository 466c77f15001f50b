"""The batched multi-task sampler: equal to stepping single Gymnasium envs one by one, correct
masks and log-probs, shared and per-task parameters, reproducible from its seed."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import metarl.envs as envs
import numpy as np
import pytest
import torch
from metarl.envs.physics import HAS_BATCH
from metarl.envs.vector import make_vec

from metarl.maml import detach_params, params_of
from metarl.rl.episodes import Episodes
from metarl.rl.policies import GaussianMLPPolicy, policy_distribution
from metarl.rl.sampler import collect, make_sampler

torch.set_num_threads(1)


def replay_in_gymnasium(
    env_id: str, tasks: Sequence[dict], episodes: list[Episodes], seeds: Sequence[int], env_kwargs: dict | None = None
) -> None:
    """Step a fresh ``gymnasium.make(env_id)`` per episode with the stored actions and compare."""
    horizon, per_task = episodes[0].horizon, episodes[0].num_episodes
    for n, task in enumerate(tasks):
        ep = episodes[n]
        for b in range(per_task):
            env = gym.make(env_id, **(env_kwargs or {}))
            obs, _ = env.reset(seed=seeds[n * per_task + b], options={"task": task})
            length = horizon
            for t in range(horizon):
                assert ep.masks[t, b] == 1.0
                np.testing.assert_array_equal(ep.observations[t, b].numpy(), obs.astype(np.float32))
                obs, reward, terminated, truncated, _ = env.step(ep.actions[t, b].numpy())
                assert ep.rewards[t, b].item() == np.float32(reward).item()  # bit for bit
                if terminated or truncated:
                    length = t + 1
                    break
            assert ep.lengths()[b] == length
            assert torch.all(ep.masks[length:, b] == 0) and torch.all(ep.rewards[length:, b] == 0)
            env.close()


def random_actions(seed: int, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0):
    rng = np.random.default_rng(seed)

    def act(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.from_numpy(rng.uniform(low, high, (*obs.shape[:2], *shape)).astype(np.float32))
        return a, torch.zeros(obs.shape[:2])

    return act


ORACLE = {"oracle": True}
#: rllab's timing and control cost (the paper's code): no frame skip, the cost of the clipped action.
RLLAB = {"frame_skip": 1, "clip_ctrl_cost": True}


@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [
        ("metarl/HalfCheetahVel-v0", {}),
        ("metarl/HalfCheetahDir-v0", {}),
        ("metarl/AntVel-v0", {}),
        ("metarl/AntGoal-v0", {}),
        ("metarl/HalfCheetahVel-v0", ORACLE),
        ("metarl/HalfCheetahDir-v0", ORACLE),
        ("metarl/AntGoal-v0", ORACLE),
        ("metarl/AntDir-v0", {"frame_skip": 2}),  # rllab's Ant timing (the shipped Ant configs)
        # rllab's observations kept the root's x (and the Ant's y) position: Gymnasium's keyword
        ("metarl/HalfCheetahVel-v0", {**RLLAB, "exclude_current_positions_from_observation": False}),
        ("metarl/AntDir-v0", {"frame_skip": 2, "exclude_current_positions_from_observation": False}),
        # the training-only pitch cost, with a limit that random actions pass within the horizon
        ("metarl/HalfCheetahVel-v0", {**RLLAB, "pitch_cost_weight": 3.0, "pitch_limit": 0.02}),
    ],
    ids=lambda x: "oracle" if x == ORACLE else ("plain" if x == {} else x),
)
def test_batched_mujoco_equals_gymnasium(env_id: str, env_kwargs: dict) -> None:
    n_tasks, per_task, horizon = 2, 2, 60
    vec = make_vec(env_id, n_tasks * per_task, num_workers=2, env_kwargs=env_kwargs)
    try:
        tasks = vec.env.sample_tasks(n_tasks, np.random.default_rng(0))
        seeds = [100, 101, 102, 103]
        episodes = collect(
            vec,
            tasks,
            episodes_per_task=per_task,
            horizon=horizon,
            act=random_actions(0, vec.action_shape),
            seeds=seeds,
        )
    finally:
        vec.close()
    assert [e.observations.shape for e in episodes] == [(horizon, per_task, *vec.observation_shape)] * n_tasks
    assert vec.observation_shape == gym.make(env_id, **env_kwargs).observation_space.shape
    replay_in_gymnasium(env_id, tasks, episodes, seeds, env_kwargs=env_kwargs)


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0", "metarl/AntVel-v0"])
def test_batched_mujoco_with_rllab_timing_and_clipped_cost_equals_gymnasium(env_id: str) -> None:
    """Actions up to 3x beyond the box, so that the clipped cost differs from the raw one."""
    n_tasks, per_task, horizon = 2, 2, 40
    vec = make_vec(env_id, n_tasks * per_task, num_workers=2, env_kwargs=RLLAB)
    try:
        assert vec.env.dt == pytest.approx(vec.env.model.opt.timestep)
        tasks = vec.env.sample_tasks(n_tasks, np.random.default_rng(0))
        seeds = [200, 201, 202, 203]
        act = random_actions(1, vec.action_shape, low=-3.0, high=3.0)
        episodes = collect(vec, tasks, episodes_per_task=per_task, horizon=horizon, act=act, seeds=seeds)
    finally:
        vec.close()
    replay_in_gymnasium(env_id, tasks, episodes, seeds, env_kwargs=RLLAB)


def test_batched_ant_unhealthy_termination_equals_gymnasium() -> None:
    env_id, tasks, seeds = "metarl/AntDir-v0", [{"direction": 1}, {"direction": -1}], [0, 1, 2, 3]
    vec = make_vec(env_id, 4, num_workers=2)
    try:
        episodes = collect(vec, tasks, episodes_per_task=2, horizon=60, act=random_actions(0, (8,)), seeds=seeds)
    finally:
        vec.close()
    lengths = torch.cat([e.lengths() for e in episodes])
    assert (lengths < 60).any(), "no episode terminated: the test does not exercise termination"
    replay_in_gymnasium(env_id, tasks, episodes, seeds)


def test_batched_ant_without_contact_forces_uses_mujoco_batch_and_equals_gymnasium() -> None:
    env_id, seeds = "metarl/AntGoal-v0", [5, 6]
    kwargs = {"include_cfrc_ext_in_observation": False, "contact_cost_weight": 0.0}
    vec = make_vec(env_id, 2, num_workers=2, env_kwargs=kwargs)
    try:
        expected = "BatchPhysics" if HAS_BATCH else "ProcessPhysics"  # MuJoCo 3.x has no mujoco.batch
        assert type(vec._physics).__name__ == expected and vec.observation_shape == (27,)
        tasks = [{"goal": (1.0, -2.0)}]
        episodes = collect(vec, tasks, episodes_per_task=2, horizon=40, act=random_actions(3, (8,)), seeds=seeds)
    finally:
        vec.close()
    replay_in_gymnasium(env_id, tasks, episodes, seeds, env_kwargs=kwargs)


@pytest.mark.parametrize("env_kwargs", [{}, ORACLE], ids=["plain", "oracle"])
def test_batched_navigation_equals_gymnasium_with_early_termination(env_kwargs: dict) -> None:
    env_id = "metarl/Navigation2D-v0"
    tasks = [{"goal": (0.05, 0.0)}, {"goal": (0.25, -0.15)}, {"goal": (-0.4, 0.45)}]
    goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float32)
    noise = np.random.default_rng(0)
    step = [0]

    def act(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # episode 0 heads straight for the goal; episode 1 heads away for 2 steps, then there noisily
        a = goals[:, None, :] - obs[..., :2]
        if step[0] < 2:
            a[:, 1] = -a[:, 1]
        a[:, 1] += torch.from_numpy(noise.normal(0, 0.003, (3, 2)).astype(np.float32))
        step[0] += 1
        return a, torch.zeros(obs.shape[:2])

    vec = make_vec(env_id, 6, env_kwargs=env_kwargs)
    seeds = list(range(6))
    episodes = collect(vec, tasks, episodes_per_task=2, horizon=100, act=act, seeds=seeds)
    lengths = torch.stack([e.lengths() for e in episodes])
    assert lengths[0, 0] == 1 and lengths[1, 0] == 3 and lengths[2, 0] == 5  # straight to the goal
    assert (lengths < 100).all() and (lengths[:, 1] > lengths[:, 0]).all()
    if env_kwargs:  # the goal ends every observation (the frozen ones too, until collect stops)
        assert vec.observation_shape == (4,)
        stop = int(lengths.max())
        for ep, goal in zip(episodes, goals, strict=True):
            assert torch.equal(ep.observations[:stop, :, 2:], goal.expand(stop, 2, 2))
    replay_in_gymnasium(env_id, tasks, episodes, seeds, env_kwargs=env_kwargs)


def test_collect_stops_when_every_episode_ended_and_pads_with_zeros() -> None:
    vec = make_vec("metarl/Navigation2D-v0", 2)
    goal = torch.tensor([0.05, 0.0])
    episodes = collect(
        vec,
        [{"goal": (0.05, 0.0)}],
        episodes_per_task=2,
        horizon=50,
        act=lambda obs: (goal - obs, torch.zeros(obs.shape[:2])),
        seeds=[0, 1],
    )
    (ep,) = episodes
    assert ep.horizon == 50 and ep.lengths().tolist() == [1.0, 1.0]
    assert torch.all(ep.observations[1:] == 0) and torch.all(ep.actions[1:] == 0)


# --- the sampler with a policy -------------------------------------------------------------


def small_policy(obs_dim: int, act_dim: int, seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(obs_dim, act_dim, (16, 16), "tanh", init_std=0.5)


@pytest.mark.parametrize("env_id", ["metarl/Navigation2D-v0", "metarl/HalfCheetahVel-v0"])
def test_sample_shapes_masks_and_log_probs(env_id: str) -> None:
    with make_sampler(env_id, episodes_per_task=3, seed=0, horizon=20) as sampler:
        tasks = sampler.sample_tasks(4, np.random.default_rng(0))
        probe = gym.make(env_id)
        policy = small_policy(probe.observation_space.shape[0], probe.action_space.shape[0])
        params = detach_params(params_of(policy))
        episodes = sampler.sample(policy, params, tasks)
    assert len(episodes) == 4
    for ep in episodes:
        assert ep.observations.shape == (20, 3, *probe.observation_space.shape)
        assert ep.actions.shape == (20, 3, *probe.action_space.shape)
        assert ep.rewards.shape == ep.masks.shape == ep.log_probs.shape == (20, 3)
        assert ep.observations.dtype == ep.rewards.dtype == ep.log_probs.dtype == torch.float32
        dist = policy_distribution(policy, params, ep.observations, per_task=False)
        expected = dist.log_prob(ep.actions)
        torch.testing.assert_close(ep.log_probs * ep.masks, expected * ep.masks, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("env_id", ["metarl/Navigation2D-v0", "metarl/HalfCheetahVel-v0"])
def test_sampler_with_oracle_env_kwargs(env_id: str) -> None:
    """``env_kwargs={"oracle": True}`` (what ``env.oracle: true`` passes): the task ends every observation."""
    probe = gym.make(env_id, oracle=True)
    obs_dim = probe.observation_space.shape[0]
    policy = small_policy(obs_dim, probe.action_space.shape[0])
    params = detach_params(params_of(policy))
    with make_sampler(env_id, episodes_per_task=2, seed=0, horizon=10, env_kwargs=ORACLE) as sampler:
        tasks = sampler.sample_tasks(3, np.random.default_rng(0))
        episodes = sampler.sample(policy, params, tasks)
    for ep, task in zip(episodes, tasks, strict=True):
        assert ep.observations.shape == (10, 2, obs_dim)
        (value,) = task.values()
        expected = torch.tensor(np.atleast_1d(value), dtype=torch.float32)
        assert torch.equal(ep.observations[..., obs_dim - len(expected) :], expected.expand(10, 2, -1))


def test_per_task_params() -> None:
    env_id, n_tasks = "metarl/Navigation2D-v0", 3
    policy = small_policy(2, 2)
    params = detach_params(params_of(policy))
    tasks = [{"goal": (0.1, 0.2)}, {"goal": (-0.3, 0.1)}, {"goal": (0.4, -0.4)}]
    stacked = {k: v.expand(n_tasks, *v.shape).clone() for k, v in params.items()}
    with make_sampler(env_id, episodes_per_task=2, seed=5) as a, make_sampler(env_id, episodes_per_task=2, seed=5) as b:
        shared = Episodes.stack(a.sample(policy, params, tasks))
        per_task = Episodes.stack(b.sample(policy, stacked, tasks, per_task=True))
    for x, y in zip(
        (shared.observations, shared.actions, shared.rewards, shared.masks),
        (per_task.observations, per_task.actions, per_task.rewards, per_task.masks),
        strict=True,
    ):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(shared.log_probs, per_task.log_probs, rtol=1e-5, atol=1e-5)

    # different parameters per task: each task's log-probs are under its own parameters
    shifted = {k: v + 0.3 * torch.arange(n_tasks).view(-1, *[1] * (v.dim() - 1)) for k, v in stacked.items()}
    with make_sampler(env_id, episodes_per_task=2, seed=5) as c:
        eps = c.sample(policy, shifted, tasks, per_task=True)
    for n, ep in enumerate(eps):
        own = {k: v[n] for k, v in shifted.items()}
        lp = policy_distribution(policy, own, ep.observations, per_task=False).log_prob(ep.actions)
        torch.testing.assert_close(ep.log_probs * ep.masks, lp * ep.masks, rtol=1e-5, atol=1e-5)
    assert not torch.equal(Episodes.stack(eps).actions, per_task.actions)


@pytest.mark.parametrize("env_id", ["metarl/Navigation2D-v0", "metarl/HalfCheetahDir-v0", "metarl/AntGoal-v0"])
def test_reproducible_from_seed(env_id: str) -> None:
    probe = gym.make(env_id)
    policy = small_policy(probe.observation_space.shape[0], probe.action_space.shape[0])
    params = detach_params(params_of(policy))
    tasks = probe.unwrapped.sample_tasks(2, np.random.default_rng(1))

    def run(seed: int, workers: int) -> list[Episodes]:
        with make_sampler(env_id, episodes_per_task=2, seed=seed, num_workers=workers, horizon=15) as s:
            return [Episodes.stack(s.sample(policy, params, tasks)) for _ in range(2)]

    first, again, other_workers, other_seed = run(7, 2), run(7, 2), run(7, 1), run(8, 2)
    for x, y in [(first, again), (first, other_workers)]:
        for a, b in zip(x, y, strict=True):
            assert torch.equal(a.observations, b.observations) and torch.equal(a.rewards, b.rewards)
            assert torch.equal(a.actions, b.actions) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(first[0].actions, first[1].actions)  # successive calls differ
    assert not torch.equal(first[0].actions, other_seed[0].actions)


def test_state_dict_resumes_the_random_streams() -> None:
    policy = small_policy(2, 2)
    params = detach_params(params_of(policy))
    tasks = [{"goal": (0.1, 0.2)}, {"goal": (-0.3, 0.1)}]
    with make_sampler("metarl/Navigation2D-v0", episodes_per_task=2, seed=3) as sampler:
        sampler.sample(policy, params, tasks)
        state = sampler.state_dict()
        expected = Episodes.stack(sampler.sample(policy, params, tasks))
    with make_sampler("metarl/Navigation2D-v0", episodes_per_task=2, seed=99) as resumed:
        resumed.load_state_dict(state)
        got = Episodes.stack(resumed.sample(policy, params, tasks))
    assert torch.equal(got.actions, expected.actions) and torch.equal(got.rewards, expected.rewards)


def test_sampler_rebuilds_for_another_number_of_tasks() -> None:
    policy = small_policy(17, 6)
    params = detach_params(params_of(policy))
    with make_sampler("metarl.envs:metarl/HalfCheetahVel-v0", episodes_per_task=2, horizon=5) as sampler:
        assert len(sampler.sample(policy, params, [{"velocity": 1.0}])) == 1
        eps = sampler.sample(policy, params, [{"velocity": 0.5}, {"velocity": 2.0}, {"velocity": 0.0}])
        assert len(eps) == 3 and eps[2].rewards.shape == (5, 2)


# --- bad input ----------------------------------------------------------------------------


def test_sampler_bad_input() -> None:
    policy = small_policy(2, 2)
    params = detach_params(params_of(policy))
    with make_sampler("metarl/Navigation2D-v0", episodes_per_task=2) as sampler:
        with pytest.raises(ValueError, match="leading dim of len\\(tasks\\)=2"):
            sampler.sample(policy, params, [{"goal": (0, 0)}, {"goal": (0.1, 0)}], per_task=True)
        with pytest.raises(ValueError, match="metarl/Navigation2D-v0: task goal \\(0.9, 0.0\\) is outside"):
            sampler.sample(policy, params, [{"goal": (0.9, 0.0)}])
        nan_params = {k: torch.full_like(v, float("nan")) for k, v in params.items()}
        with pytest.raises(ValueError, match="metarl/Navigation2D-v0: actions must be finite"):
            sampler.sample(policy, nan_params, [{"goal": (0.1, 0.0)}])
    with pytest.raises(ValueError, match="unknown env id 'metarl/Nope-v0'"):
        make_sampler("metarl/Nope-v0", episodes_per_task=1)


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahDir-v0", "metarl/AntVel-v0"])
def test_batched_mujoco_bad_actions(env_id: str) -> None:
    vec = make_vec(env_id, 2, num_workers=1)
    try:
        vec.reset(vec.env.sample_tasks(2, np.random.default_rng(0)), [0, 1])
        act_dim = vec.action_shape[0]
        with pytest.raises(ValueError, match=rf"{env_id}: actions must have shape \(2, {act_dim}\), got \(2, 3\)"):
            vec.step(torch.zeros(2, 3))
        bad = torch.zeros(2, act_dim)
        bad[1, 0] = float("nan")
        with pytest.raises(ValueError, match=f"{env_id}: actions must be finite, got \\[nan"):
            vec.step(bad)
        with pytest.raises(ValueError, match=f"{env_id}: unknown task key"):
            vec.reset([{"velocity": 1.0, "direction": 1}] * 2, [0, 1])
    finally:
        vec.close()


def test_env_ids_cover_all_batched_paths() -> None:
    for env_id in envs.ENV_IDS:
        for kwargs in ({}, ORACLE):
            vec = make_vec(env_id, 1, num_workers=1, env_kwargs=kwargs)
            assert vec.observation_shape == gym.make(env_id, **kwargs).observation_space.shape
            vec.close()


def test_batched_half_cheetah_pitch_cost_is_charged_and_changes_nothing_else() -> None:
    """The pitch-cost case of ``test_batched_mujoco_equals_gymnasium`` is not vacuous: on the same actions and
    seeds the batched env charges some steps (rewards lower) and moves the bodies exactly as without it."""
    env_id, tasks, seeds = "metarl/HalfCheetahVel-v0", [{"velocity": 0.5}, {"velocity": 1.5}], [300, 301, 302, 303]
    runs = []
    for weight in (0.0, 3.0):
        vec = make_vec(env_id, 4, num_workers=1, env_kwargs={**RLLAB, "pitch_cost_weight": weight, "pitch_limit": 0.02})
        try:
            runs.append(collect(vec, tasks, episodes_per_task=2, horizon=60, act=random_actions(2, vec.action_shape),
                                seeds=seeds))
        finally:
            vec.close()
    for plain, shaped in zip(*runs, strict=True):
        torch.testing.assert_close(shaped.observations, plain.observations, rtol=0, atol=0)
        assert torch.all(shaped.rewards <= plain.rewards)
        assert torch.any(shaped.rewards < plain.rewards - 1e-3)
