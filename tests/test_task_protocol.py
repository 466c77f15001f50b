"""Bring your own environment: the task protocol (metarl.envs.protocol), its check, and the generic
sampler that runs any registered id following it through train / evaluate / load."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import metarl.envs as envs
import numpy as np
import pytest
import torch
import yaml
from metarl.envs import TaskEnv, TaskProtocolError, check_task_env

import metarl
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict
from metarl.evaluate import evaluate
from metarl.maml import detach_params, params_of
from metarl.rl.build import make_env, sampler_for, seeded_policy
from metarl.rl.episodes import Episodes
from metarl.rl.generic_sampler import GenericSampler
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_distribution
from metarl.rl.sampler import SeedStreams, make_sampler
from metarl.training import train
from tests.walk_env import GoalTasks

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PENDULUM = "goal_pendulum:examples/GoalPendulum-v0"
LINE = "metarl_test/Line-v0"


class LineEnv(GoalTasks, gym.Env):
    """A point on a line walks to a goal it does not see (unless ``oracle``); actions left / stay / right;
    the episode terminates within 0.1 of the goal. Follows the task protocol."""

    def __init__(self, oracle: bool = False) -> None:
        self.oracle = oracle
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2 if oracle else 1,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self._goal, self._x = 0.0, 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.take_task(options)
        self._x = float(self.np_random.uniform(-0.1, 0.1))
        return self._obs(), {}

    def step(self, action):
        self._x += 0.1 * (int(action) - 1)
        d = abs(self._x - self._goal)
        return self._obs(), -d, bool(d < 0.1), False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self._x, self._goal] if self.oracle else [self._x], dtype=np.float32)


class NoTasksEnv(LineEnv):
    sample_tasks = None  # type: ignore[assignment]  # a task attribute, but no way to draw tasks


class ForgetfulEnv(LineEnv):
    """Ignores reset(options={"task": ...})."""

    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed)


class AmnesicEnv(LineEnv):
    """Forgets its task at a reset without one."""

    def reset(self, *, seed=None, options=None):
        if not options:
            self._goal = 0.0
        return super().reset(seed=seed, options=options)


for _id, _cls, _steps in [(LINE, LineEnv, 20), ("metarl_test/NoTasks-v0", NoTasksEnv, 20),
                          ("metarl_test/Forgetful-v0", ForgetfulEnv, 20), ("metarl_test/Amnesic-v0", AmnesicEnv, 20),
                          ("metarl_test/Endless-v0", LineEnv, None)]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=_steps)


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def rl_config(env_id: str, **over) -> dict:
    cfg = {
        "benchmark": "rl", "name": "byo", "seed": 1, "num_iterations": 2, "meta_batch_size": 2, "log_every": 1,
        "checkpoint_every": 1, "eval": {"every": 2, "tasks": 2, "test_tasks": 2}, "inner": {"lr": 0.1, "test_steps": 1},
        "env": {"id": env_id, "episodes_per_task": 2}, "policy": {"hidden": [8]}, "sampler": {"num_workers": 1},
        "update_threads": 1,
    }
    cfg.update(over)
    return cfg


# ---------------------------------------------------------------------------- the protocol and its check
@pytest.mark.parametrize("oracle", [False, True], ids=["plain", "oracle"])
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_builtin_envs_follow_the_protocol(env_id: str, oracle: bool) -> None:
    env = gym.make(env_id, **({"oracle": True} if oracle else {}))
    try:
        check_task_env(env)
        assert isinstance(env.unwrapped, TaskEnv)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", [PENDULUM, LINE])
def test_example_and_test_envs_follow_the_protocol(env_id: str, examples_on_path: None) -> None:
    for kwargs in ({}, {"oracle": True}):
        env = gym.make(env_id, **kwargs)
        check_task_env(env)
        assert isinstance(env.unwrapped, TaskEnv)
        obs, _ = env.reset(seed=0, options={"task": env.unwrapped.sample_tasks(1, np.random.default_rng(0))[0]})
        assert env.observation_space.contains(obs)
        env.close()


@pytest.mark.parametrize(
    ("env_id", "fragment"),
    [
        ("Pendulum-v1", "it has no sample_tasks(n, rng) method and no task attribute"),
        ("metarl_test/NoTasks-v0", "it has no sample_tasks(n, rng) method (see metarl.envs.protocol)"),
        ("metarl_test/Forgetful-v0", "the reset option 'task' must set the task"),
        ("metarl_test/Amnesic-v0", "a task must persist until another is given"),
    ],
)
def test_check_task_env_names_what_is_missing(env_id: str, fragment: str) -> None:
    env = gym.make(env_id)
    with pytest.raises(TaskProtocolError) as info:
        check_task_env(env)
    env.close()
    message = str(info.value)
    assert message.startswith(f"{env_id} does not follow metarl's task protocol: ") and fragment in message
    assert "\n" not in message


def test_cli_refuses_an_env_without_sample_tasks_before_writing(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(rl_config("metarl_test/NoTasks-v0")))
    run = tmp_path / "deep" / "run"
    assert main(["train", str(cfg), "--logdir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metarl: error: env.id: metarl_test/NoTasks-v0 does not follow metarl's task protocol: it has "
                   "no sample_tasks(n, rng) method (see metarl.envs.protocol)"]
    assert not (tmp_path / "deep").exists()


def test_config_errors_for_other_ids() -> None:
    with pytest.raises(ConfigError, match="cannot make 'no_such_module_xyz:a/B-v0'.*no_such_module_xyz"):
        make_env(config_from_dict(rl_config("no_such_module_xyz:a/B-v0")))
    with pytest.raises(ConfigError, match="env.id: .*Endless-v0 has no max_episode_steps"):
        sampler_for(config_from_dict(rl_config("metarl_test/Endless-v0")), 0)
    with pytest.raises(ConfigError, match="env.id: .*Endless-v0 has no max_episode_steps"):  # before Ray starts
        sampler_for(config_from_dict(rl_config("metarl_test/Endless-v0", sampler={"backend": "ray"})), 0)
    with pytest.raises(ConfigError, match="env.oracle: Pendulum-v1 does not take oracle=True"):
        make_env(config_from_dict(rl_config("Pendulum-v1", env={"id": "Pendulum-v1", "oracle": True})))


def test_a_built_in_env_refusing_a_keyword_or_value_is_one_config_line(tmp_path: Path, capsys) -> None:
    """A bad ``env.kwargs`` value of a built-in env is a one-line error naming it, not the constructor's
    traceback (a user's env keeps its own traceback)."""
    bad = rl_config("metarl/HalfCheetahVel-v0", env={"id": "metarl/HalfCheetahVel-v0",
                                                     "kwargs": {"pitch_cost_weight": -1}})
    with pytest.raises(ConfigError, match=r"^env.kwargs: HalfCheetahVelEnv: pitch_cost_weight must be a number "
                                          r">= 0 \(0 turns it off\), got -1$"):
        make_env(config_from_dict(bad))
    cfg, run = tmp_path / "c.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump(rl_config("metarl/HalfCheetahVel-v0")))  # a 2-iteration run if it were accepted
    assert main(["train", str(cfg), "--set", "env.kwargs.clip_ctrl_cost=2", "--logdir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metarl: error: env.kwargs: HalfCheetahVelEnv: clip_ctrl_cost must be true or false, got 2"]
    assert not run.exists()


# ---------------------------------------------------------------------------- train, evaluate, load
@pytest.mark.parametrize("env_id", [PENDULUM, LINE])
def test_user_env_trains_evaluates_and_loads(env_id: str, tmp_path: Path, examples_on_path: None) -> None:
    run = train(config_from_dict(rl_config(env_id)), logdir=tmp_path / "run", quiet=True)
    lines = (run / "metrics.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [r.split(",") for r in lines[1:]]
    assert [int(r[0]) for r in rows] == [1, 2]
    assert np.isfinite(float(rows[-1][header.index("val/return_post")]))
    result = evaluate(run, n_tasks=2, steps=1)
    assert [s["step"] for s in result["by_step"]] == [0, 1]
    assert all(np.isfinite(s["mean"]) for s in result["by_step"])
    loaded = metarl.load(run)
    assert loaded.config.env.id == env_id and loaded.iteration == 2
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    assert np.asarray(loaded.policy()(obs)).shape == env.action_space.shape
    task = env.unwrapped.sample_tasks(1, np.random.default_rng(3))[0]
    env.close()
    adapted = loaded.adapt_to(task, steps=1)  # the run's inner loop, on its own episodes of the task
    assert len(adapted) == 2 and adapted[1].keys() == loaded.params.keys()


def test_user_env_trains_as_an_oracle(tmp_path: Path, examples_on_path: None) -> None:
    cfg = config_from_dict(rl_config(PENDULUM, env={"id": PENDULUM, "episodes_per_task": 2, "oracle": True},
                                     num_iterations=1))
    run = train(cfg, logdir=tmp_path / "run", quiet=True)
    first_layer = next(p for p in metarl.load(run).params.values() if p.dim() == 2)
    assert first_layer.shape[1] == 4  # cos, sin, thdot and the target


# ---------------------------------------------------------------------------- the generic sampler
def policy_for(env_id: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    env = gym.make(env_id, **kwargs)
    torch.manual_seed(seed)
    obs_dim = env.observation_space.shape[0]
    if isinstance(env.action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(env.action_space.n), [8], "tanh")
    return GaussianMLPPolicy(obs_dim, env.action_space.shape[0], [8], "tanh", 1.0)


def replay(env_id: str, tasks: list[dict], episodes: list[Episodes], reset_seeds: list[int]) -> list[int]:
    """Step a fresh ``gymnasium.make(env_id)`` per episode with the stored actions; compare bit for bit.
    Returns the episode lengths."""
    horizon, per_task = episodes[0].horizon, episodes[0].num_episodes
    lengths = []
    for n, task in enumerate(tasks):
        ep = episodes[n]
        for b in range(per_task):
            env = gym.make(env_id)
            obs, _ = env.reset(seed=reset_seeds[n * per_task + b], options={"task": task})
            length = horizon
            for t in range(horizon):
                assert ep.masks[t, b] == 1.0
                np.testing.assert_array_equal(ep.observations[t, b].numpy(), obs.astype(np.float32))
                action = ep.actions[t, b].numpy()
                obs, reward, terminated, truncated, _ = env.step(int(action) if action.ndim == 0 else action)
                assert ep.rewards[t, b].item() == np.float32(reward).item()
                if terminated or truncated:
                    length = t + 1
                    break
            env.close()
            lengths.append(length)
            assert int(ep.lengths()[b]) == length
            pad = slice(length, None)
            assert not ep.masks[pad, b].any() and not ep.rewards[pad, b].any()
            assert not ep.actions[pad, b].any() and not ep.log_probs[pad, b].any()
            if length < horizon:  # padding: the frozen last observation, until the batch's last episode ends
                last = int(Episodes.stack(episodes).lengths().max())
                np.testing.assert_array_equal(ep.observations[length:last, b].numpy(),
                                              np.broadcast_to(obs.astype(np.float32), (last - length, *obs.shape)))
    return lengths


@pytest.mark.parametrize("env_id", [LINE, PENDULUM])
def test_generic_sampler_equals_a_plain_gymnasium_loop(env_id: str, examples_on_path: None) -> None:
    policy = policy_for(env_id)
    params = detach_params(params_of(policy))
    with GenericSampler(env_id, episodes_per_task=3, seed=5) as sampler:
        assert sampler.horizon == gym.make(env_id).spec.max_episode_steps
        tasks = sampler.sample_tasks(2, np.random.default_rng(0))
        episodes = sampler.sample(policy, params, tasks)
        again = sampler.sample(policy, params, tasks)
    assert [tuple(e.masks.shape) for e in episodes] == [(sampler.horizon, 3)] * 2
    reset_seeds, _ = SeedStreams(5).draw(2, 3)  # the sampler's first call: the same streams as MultiTaskSampler's
    lengths = replay(env_id, tasks, episodes, reset_seeds)
    if env_id == LINE:
        assert min(lengths) < sampler.horizon, "no episode terminated: the padding is not exercised"
    stacked = Episodes.stack(episodes)
    with torch.no_grad():
        lp = policy_distribution(policy, params, stacked.observations, per_task=False).log_prob(stacked.actions)
    torch.testing.assert_close(stacked.log_probs, lp * stacked.masks, rtol=1e-5, atol=1e-5)
    assert not torch.equal(stacked.actions, Episodes.stack(again).actions)  # successive calls differ


def test_generic_sampler_streams_resume_and_seeded(examples_on_path: None) -> None:
    policy = policy_for(LINE)
    params = detach_params(params_of(policy))
    tasks = [{"goal": 0.2}, {"goal": -0.3}]
    with GenericSampler(LINE, episodes_per_task=2, seed=1) as a, GenericSampler(LINE, episodes_per_task=2, seed=9) as b:
        a.sample(policy, params, tasks)
        b.sample(policy, params, [*tasks, {"goal": 0.0}])  # 6 envs, then 4 of them: the pool's reused envs
        b.load_state_dict(a.state_dict())
        with a.seeded(123):
            inside = Episodes.stack(a.sample(policy, params, tasks))
        expected = Episodes.stack(a.sample(policy, params, tasks))
        got = Episodes.stack(b.sample(policy, params, tasks))
        with b.seeded(123):
            assert torch.equal(Episodes.stack(b.sample(policy, params, tasks)).actions, inside.actions)
    assert torch.equal(got.actions, expected.actions) and torch.equal(got.rewards, expected.rewards)


@pytest.mark.parametrize(("env_id", "horizon"), [("metarl/Navigation2D-v0", None), ("metarl/HalfCheetahVel-v0", 30)])
def test_generic_sampler_equals_the_fast_sampler_bit_for_bit(env_id: str, horizon: int | None) -> None:
    """On a built-in id both samplers give the same Episodes for the same seed, bit for bit (MuJoCo too):
    the same seeds, the same policy calls on the same [N, B, obs] tensors, the same physics."""
    policy = policy_for(env_id, seed=2)
    params = detach_params(params_of(policy))
    fast = make_sampler(env_id, episodes_per_task=2, num_workers=1, seed=7, horizon=horizon)
    generic = GenericSampler(env_id, episodes_per_task=2, seed=7, horizon=horizon)
    try:
        tasks = fast.sample_tasks(3, np.random.default_rng(1))
        assert generic.sample_tasks(3, np.random.default_rng(1)) == tasks and generic.horizon == fast.horizon
        fast_pre, gen_pre = fast.sample(policy, params, tasks), generic.sample(policy, params, tasks)
        per_task = {k: torch.stack([v + 0.01 * i for i in range(3)]) for k, v in params.items()}
        fast_post = fast.sample(policy, per_task, tasks, per_task=True)
        gen_post = generic.sample(policy, per_task, tasks, per_task=True)
    finally:
        fast.close()
        generic.close()
    for a, b in zip([*fast_pre, *fast_post], [*gen_pre, *gen_post], strict=True):
        for field in ("observations", "actions", "rewards", "masks", "log_probs"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_learner_picks_the_sampler_by_id(examples_on_path: None) -> None:
    builtin = sampler_for(config_from_dict(rl_config("metarl/Navigation2D-v0")), 0)
    other = sampler_for(config_from_dict(rl_config(PENDULUM)), 0)
    try:
        assert type(builtin).__name__ == "MultiTaskSampler" and isinstance(other, GenericSampler)
        assert other.horizon == 200
        policy = seeded_policy(config_from_dict(rl_config(PENDULUM)), 0)
        (ep,) = other.sample(policy, detach_params(params_of(policy)), [{"target": 0.5}])
        assert tuple(ep.observations.shape) == (200, 2, 3) and bool(ep.masks.all())
    finally:
        builtin.close()
        other.close()
