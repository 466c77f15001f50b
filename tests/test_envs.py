"""The meta-RL environments: Gymnasium conformance, rewards recomputed from MuJoCo state, the
task protocol, and clear errors for bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import metarl.envs as envs
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

torch.set_num_threads(1)

IDS = list(envs.ENV_IDS)
MUJOCO_IDS = [i for i in IDS if "Navigation" not in i]
ANT_IDS = [i for i in IDS if "Ant" in i]


def reward_terms(info: dict) -> float:
    return sum(v for k, v in info.items() if k.startswith("reward_"))


@pytest.mark.parametrize("oracle", [False, True], ids=["plain", "oracle"])
@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str, oracle: bool) -> None:
    env = gym.make(env_id, oracle=oracle)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space m.*infinity.*")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_registered_ids_and_horizons() -> None:
    horizons = {env_id: gym.spec(env_id).max_episode_steps for env_id in IDS}
    assert horizons == {
        "metarl/Navigation2D-v0": 100,
        "metarl/HalfCheetahVel-v0": 200,
        "metarl/HalfCheetahDir-v0": 200,
        "metarl/AntVel-v0": 200,
        "metarl/AntDir-v0": 200,
        "metarl/AntGoal-v0": 200,
    }


def test_make_with_module_prefix_without_import() -> None:
    code = (
        "import sys, gymnasium\n"
        "assert 'envs' not in sys.modules\n"
        "env = gymnasium.make('metarl.envs:metarl/HalfCheetahVel-v0')\n"
        "print(env.spec.id, env.spec.max_episode_steps)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["metarl/HalfCheetahVel-v0", "200"]


def test_describe_and_table() -> None:
    rows = envs.describe()
    assert [r["id"] for r in rows] == IDS
    by_id = {r["id"]: r for r in rows}
    assert by_id["metarl/Navigation2D-v0"]["observation_shape"] == (2,)
    assert by_id["metarl/HalfCheetahVel-v0"]["observation_shape"] == (17,)
    assert by_id["metarl/AntGoal-v0"]["observation_shape"] == (105,)
    assert by_id["metarl/AntGoal-v0"]["action_shape"] == (8,)
    assert by_id["metarl/HalfCheetahVel-v0"]["horizon"] == 200
    table = envs.format_envs_table()
    for env_id in IDS:
        assert env_id in table
    assert "U[0, 2]" in table and "radius 3" in table


# --- rewards recomputed independently -----------------------------------------------------


def test_navigation_reward_and_termination() -> None:
    env = gym.make("metarl/Navigation2D-v0")
    obs, _ = env.reset(seed=0, options={"task": {"goal": (0.3, -0.25)}})
    assert obs.dtype == np.float32 and np.array_equal(obs, np.zeros(2, np.float32))
    position = np.zeros(2)
    for action in ([0.5, -0.03], [0.07, -2.0], [-0.01, 0.0]):
        obs, reward, terminated, truncated, info = env.step(np.array(action, np.float32))
        position = position + np.clip(action, -0.1, 0.1)
        np.testing.assert_allclose(obs, position, atol=1e-6)
        assert reward == pytest.approx(-np.hypot(*(position - (0.3, -0.25))), abs=1e-6)
        assert reward_terms(info) == reward
        assert not terminated and not truncated
    # reaching the goal (closer than 0.01) terminates
    env.reset(options={"task": {"goal": (0.05, 0.004)}})
    _, reward, terminated, _, info = env.step(np.array([0.05, 0.0], np.float32))
    assert terminated and info["distance"] < 0.01 and reward == pytest.approx(-0.004, abs=1e-6)
    # the paper text's squared distance
    sq = gym.make("metarl/Navigation2D-v0", squared=True)
    sq.reset(options={"task": {"goal": (0.3, -0.25)}})
    _, reward, *_ = sq.step(np.array([0.1, 0.1], np.float32))
    assert reward == pytest.approx(-(0.2**2 + 0.35**2), abs=1e-6)


def test_navigation_truncates_after_100_steps() -> None:
    env = gym.make("metarl/Navigation2D-v0")
    env.reset(seed=0, options={"task": {"goal": (0.5, 0.5)}})
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(np.array([-0.1, 0.0], np.float32))
        assert not terminated
        assert truncated == (t == 99)


def _task_term(task: dict, x_velocity: float, xy: np.ndarray) -> float:
    if "velocity" in task:
        return -abs(x_velocity - task["velocity"])
    if "direction" in task:
        return task["direction"] * x_velocity
    return -float(np.hypot(*(xy - np.asarray(task["goal"]))))


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"])
def test_half_cheetah_reward_from_state(env_id: str) -> None:
    env = gym.make(env_id)
    data = env.unwrapped.data
    dt = env.unwrapped.model.opt.timestep * 5
    rng = np.random.default_rng(0)
    for task in env.unwrapped.sample_tasks(3, rng):
        env.reset(seed=1, options={"task": task})
        for _ in range(20):
            action = rng.uniform(-1, 1, 6)
            x_before = data.qpos[0]
            _, reward, terminated, _, info = env.step(action)
            x_velocity = (data.qpos[0] - x_before) / dt
            expected = _task_term(task, x_velocity, data.qpos[:2]) - 0.05 * np.sum(action**2)
            assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
            assert info["x_velocity"] == pytest.approx(x_velocity, rel=1e-9)
            assert reward_terms(info) == pytest.approx(reward, rel=1e-12, abs=1e-12)
            assert not terminated


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"])
def test_half_cheetah_rllab_timing_and_clipped_control_cost(env_id: str) -> None:
    """``frame_skip=1, clip_ctrl_cost=True``: one MuJoCo step per env step (dt 0.01, as rllab's
    model), and the control cost of the action clipped to [-1, 1]; the physics see the same
    clamped control either way."""
    rllab = gym.make(env_id, frame_skip=1, clip_ctrl_cost=True)
    raw = gym.make(env_id, frame_skip=1)
    assert rllab.unwrapped.dt == pytest.approx(0.01)
    rng = np.random.default_rng(3)
    task = rllab.unwrapped.sample_tasks(1, rng)[0]
    rllab.reset(seed=4, options={"task": task})
    raw.reset(seed=4, options={"task": task})
    data = rllab.unwrapped.data
    for _ in range(15):
        action = rng.uniform(-3, 3, 6)
        x_before = data.qpos[0]
        obs, reward, _, _, _ = rllab.step(action)
        obs_raw, reward_raw, _, _, _ = raw.step(action)
        x_velocity = (data.qpos[0] - x_before) / 0.01
        clipped = np.clip(action, -1, 1)
        assert reward == pytest.approx(_task_term(task, x_velocity, data.qpos[:2]) - 0.05 * np.sum(clipped**2))
        assert reward_raw == pytest.approx(reward - 0.05 * np.sum(action**2 - clipped**2))
        np.testing.assert_array_equal(obs, obs_raw)
    with pytest.raises(TypeError, match="clip_ctrl_cost must be true or false, got 'yes'"):
        gym.make(env_id, clip_ctrl_cost="yes")


@pytest.mark.parametrize(("config", "dt"), [("halfcheetah_vel", 0.01), ("halfcheetah_dir", 0.01), ("ant_vel", 0.02),
                                          ("ant_dir", 0.02), ("ant_goal", 0.02), ("ant_vel_oracle", 0.02)])
def test_shipped_locomotion_configs_step_as_rllab(config: str, dt: float) -> None:
    """The paper's code ran rllab's models: HalfCheetah steps 0.01 s, the Ant 0.02 s per env step
    (Gymnasium's v5: 0.05 s for both)."""
    from metarl.config import load_config
    from metarl.rl.build import make_env

    env = make_env(load_config(config))
    try:
        assert env.unwrapped.dt == pytest.approx(dt)
    finally:
        env.close()


#: The paper's (rllab's) Ant weights, written out independently of envs.locomotion: healthy
#: reward per task (AntVel: survive 0.05 plus the constant 1 of its task term; AntGoal, which the
#: paper lacks: Gymnasium's 1) and the control weight 0.5 * 1e-2.
PAPER_HEALTHY = {"metarl/AntVel-v0": 1.05, "metarl/AntDir-v0": 0.05, "metarl/AntGoal-v0": 1.0}


@pytest.mark.parametrize("gymnasium_weights", [False, True], ids=["paper", "gymnasium"])
@pytest.mark.parametrize("env_id", ANT_IDS)
def test_ant_reward_from_state(env_id: str, gymnasium_weights: bool) -> None:
    """The reward from the MuJoCo state: the paper's weights by default, Gymnasium's through kwargs."""
    kwargs = {"ctrl_cost_weight": 0.5, "healthy_reward": 1.0} if gymnasium_weights else {}
    ctrl_w, healthy_r = (0.5, 1.0) if gymnasium_weights else (0.005, PAPER_HEALTHY[env_id])
    env = gym.make(env_id, **kwargs)
    model, data = env.unwrapped.model, env.unwrapped.data
    torso = model.body("torso").id
    dt = model.opt.timestep * 5
    rng = np.random.default_rng(1)
    task = env.unwrapped.sample_tasks(1, rng)[0]
    env.reset(seed=2, options={"task": task})
    contact_seen = False
    for _ in range(40):
        action = rng.uniform(-1, 1, 8)
        x_before = data.xpos[torso, 0]
        _, reward, terminated, _, info = env.step(action)
        x_velocity = (data.xpos[torso, 0] - x_before) / dt
        z = data.qpos[2]
        healthy = bool(np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all() and 0.2 <= z <= 1.0)
        contact = 5e-4 * np.sum(np.clip(data.cfrc_ext, -1, 1) ** 2)
        contact_seen |= contact > 0
        expected = (_task_term(task, x_velocity, data.qpos[:2]) + healthy_r * float(healthy)
                    - ctrl_w * np.sum(action**2) - contact)
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert reward_terms(info) == pytest.approx(reward, rel=1e-12, abs=1e-12)
        assert terminated == (not healthy)
        if terminated:
            break
    assert contact_seen


def _step_after_a_fall(env: gym.Env) -> tuple[float, bool, bool, dict]:
    """One zero-action step from a state with the torso above the healthy range [0.2, 1.0], at rest (from
    below it the ground pushes the torso back within 0.05 s)."""
    base = env.unwrapped
    env.reset(seed=0, options={"task": {"goal": (2.0, 0.0)}})
    qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
    qpos[2] = 1.5
    base.set_state(qpos, np.zeros_like(qvel))
    _, reward, terminated, truncated, info = env.step(np.zeros(8))
    assert not base.is_healthy
    return reward, terminated, truncated, info


def test_ant_goal_config_runs_on_after_a_fall() -> None:
    """ant_goal.yaml's env does not end the episode when the ant is unhealthy (a step far from the goal pays
    below 0, so an end on falling rewards falling) and pays no healthy reward while unhealthy; the bare env
    keeps Gymnasium's end on falling."""
    from metarl.config import load_config
    from metarl.rl.build import make_env

    for env, ends in ((make_env(load_config("ant_goal")), False), (gym.make("metarl/AntGoal-v0"), True)):
        try:
            reward, terminated, truncated, info = _step_after_a_fall(env)
            assert terminated == ends and not truncated
            assert info["reward_survive"] == 0.0
            assert reward == pytest.approx(reward_terms(info), abs=1e-12)
        finally:
            env.close()


def test_ant_contact_forces_in_observation_are_nonzero() -> None:
    """On MuJoCo >= 3, Gymnasium's Ant v5 observation carries the clipped contact forces."""
    assert int(mujoco.__version__.split(".")[0]) >= 3
    env = gym.make("metarl/AntVel-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (105,)
    assert env.unwrapped.observation_structure["cfrc_ext"] == 78  # 13 bodies x 6
    rng = np.random.default_rng(0)
    nonzero_steps = 0
    for _ in range(60):
        obs, _, terminated, _, info = env.step(rng.uniform(-1, 1, 8))
        forces = obs[27:]
        np.testing.assert_array_equal(forces, np.clip(env.unwrapped.data.cfrc_ext[1:].ravel(), -1, 1))
        if np.any(forces != 0):
            nonzero_steps += 1
            assert info["reward_contact"] < 0
        if terminated:
            break
    assert nonzero_steps >= 5


@pytest.mark.parametrize("env_id", IDS)
def test_tasks_change_the_reward(env_id: str) -> None:
    env = gym.make(env_id)
    tasks = env.unwrapped.sample_tasks(2, np.random.default_rng(3))
    if "direction" in tasks[0]:
        tasks = [{"direction": 1}, {"direction": -1}]
    returns = []
    for task in tasks:
        env.reset(seed=4, options={"task": task})
        action_rng = np.random.default_rng(5)
        total = 0.0
        for _ in range(10):
            _, reward, *_ = env.step(action_rng.uniform(-0.1, 0.1, env.action_space.shape))
            total += reward
        returns.append(total)
    assert returns[0] != pytest.approx(returns[1], abs=1e-6)


# --- oracle observations (the paper's oracle baseline) -----------------------------------

ORACLE_SHAPES = {
    "metarl/Navigation2D-v0": (4,),
    "metarl/HalfCheetahVel-v0": (18,),
    "metarl/HalfCheetahDir-v0": (18,),
    "metarl/AntVel-v0": (106,),
    "metarl/AntDir-v0": (106,),
    "metarl/AntGoal-v0": (107,),
}


def _task_vector(task: dict) -> np.ndarray:
    (value,) = task.values()
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


@pytest.mark.parametrize("env_id", IDS)
def test_oracle_appends_the_task_and_changes_nothing_else(env_id: str) -> None:
    plain, oracle = gym.make(env_id), gym.make(env_id, oracle=True)
    assert oracle.observation_space.shape == ORACLE_SHAPES[env_id]
    assert oracle.observation_space.dtype == plain.observation_space.dtype
    d = ORACLE_SHAPES[env_id][0] - plain.observation_space.shape[0]
    low, high = oracle.observation_space.low[-d:], oracle.observation_space.high[-d:]
    assert np.isfinite(low).all() and np.isfinite(high).all()
    rng = np.random.default_rng(11)
    for task in oracle.unwrapped.sample_tasks(2, rng):
        task_part = _task_vector(task).astype(oracle.observation_space.dtype)
        assert np.all(low <= task_part) and np.all(task_part <= high)
        obs_p, _ = plain.reset(seed=3, options={"task": task})
        obs_o, _ = oracle.reset(seed=3, options={"task": task})
        for t in range(15):
            assert obs_o.dtype == obs_p.dtype and obs_o in oracle.observation_space
            np.testing.assert_array_equal(obs_o, np.concatenate([obs_p, task_part]))
            if t == 14:
                break
            action = rng.uniform(-0.1, 0.1, plain.action_space.shape).astype(plain.action_space.dtype)
            obs_p, r_p, term_p, _, info_p = plain.step(action)
            obs_o, r_o, term_o, _, info_o = oracle.step(action)
            assert (r_o, term_o, info_o) == (r_p, term_p, info_p)
            if term_p:
                break
    # the task persists across resets, and so does its part of the observation
    obs, _ = oracle.reset(seed=4)
    np.testing.assert_array_equal(obs[-d:], task_part)
    assert gym.make(env_id).unwrapped.oracle is False


def test_oracle_observation_structure() -> None:
    env = gym.make("metarl/AntGoal-v0", oracle=True).unwrapped
    assert env.observation_structure["task"] == 2
    assert "task" not in gym.make("metarl/AntGoal-v0").unwrapped.observation_structure


# --- the task protocol --------------------------------------------------------------------


@pytest.mark.parametrize("env_id", IDS)
def test_sample_tasks(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    tasks = env.sample_tasks(200, np.random.default_rng(0))
    assert len(tasks) == 200 and all(isinstance(t, dict) and len(t) == 1 for t in tasks)
    assert tasks == env.sample_tasks(200, np.random.default_rng(0))
    assert tasks != env.sample_tasks(200, np.random.default_rng(1))
    for t in tasks:  # every sampled task is accepted
        env.reset(options={"task": t})
        assert env.task == t
    key = next(iter(tasks[0]))
    values = np.array([t[key] for t in tasks], dtype=float)
    if env_id == "metarl/Navigation2D-v0":
        assert np.abs(values).max() <= 0.5 and np.abs(values).max() > 0.45
    elif env_id == "metarl/AntGoal-v0":
        radii = np.hypot(values[:, 0], values[:, 1])
        assert radii.max() <= 3.0 and radii.max() > 2.8
    elif key == "velocity":
        high = 2.0 if "Cheetah" in env_id else 3.0
        assert values.min() >= 0.0 and values.max() <= high and values.max() > 0.9 * high
    else:
        assert set(values) == {-1.0, 1.0} and 70 < (values > 0).sum() < 130


@pytest.mark.parametrize("env_id", IDS)
def test_task_persists_across_resets(env_id: str) -> None:
    env = gym.make(env_id)
    default = env.unwrapped.task
    task = env.unwrapped.sample_tasks(1, np.random.default_rng(7))[0]
    env.reset(seed=0, options={"task": task})
    assert env.unwrapped.task == task
    env.reset()
    env.reset(seed=3)
    assert env.unwrapped.task == task
    assert gym.make(env_id).unwrapped.task == default


def test_task_persists_across_vector_autoreset() -> None:
    goal = (0.3, -0.2)
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("metarl/Navigation2D-v0", max_episode_steps=3) for _ in range(2)])
    vec.reset(seed=0, options={"task": {"goal": goal}})
    autoresets = 0
    for _ in range(8):
        obs, reward, terminated, truncated, _ = vec.step(np.full((2, 2), 0.05, np.float32))
        if np.all(obs == 0) and np.all(reward == 0):  # Gymnasium's next-step autoreset
            autoresets += 1
            continue
        np.testing.assert_allclose(reward, -np.hypot(*(obs - goal).T), atol=1e-6)
    assert autoresets == 2
    assert vec.get_attr("task") == ({"goal": goal}, {"goal": goal})
    vec.close()


def test_mujoco_task_persists_across_vector_autoreset() -> None:
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("metarl/HalfCheetahDir-v0", max_episode_steps=2)])
    vec.reset(seed=0, options={"task": {"direction": -1}})
    for _ in range(6):
        vec.step(np.zeros((1, 6), np.float32))
    assert vec.get_attr("task") == ({"direction": -1},)
    vec.close()


# --- bad input ----------------------------------------------------------------------------

BAD_TASKS = [
    ("metarl/Navigation2D-v0", {"goal": (0.1, 0.2), "speed": 1}, "unknown task key.*speed"),
    ("metarl/Navigation2D-v0", {"velocity": 1.0}, "unknown task key.*velocity"),
    ("metarl/Navigation2D-v0", {"goal": (0.7, 0.0)}, r"\(0.7, 0.0\) is outside the task space"),
    ("metarl/Navigation2D-v0", {"goal": (0.1, float("nan"))}, "finite"),
    ("metarl/Navigation2D-v0", {"goal": (0.1, 0.2, 0.3)}, "two numbers"),
    ("metarl/HalfCheetahVel-v0", {"velocity": 2.5}, "velocity 2.5 is outside the task space"),
    ("metarl/HalfCheetahVel-v0", {}, "lacks the key 'velocity'"),
    ("metarl/HalfCheetahDir-v0", {"direction": 0}, "direction must be \\+1 or -1, got 0"),
    ("metarl/AntVel-v0", {"velocity": -0.1}, "velocity -0.1 is outside"),
    ("metarl/AntDir-v0", {"goal": (1, 1)}, "unknown task key"),
    ("metarl/AntGoal-v0", {"goal": (2.5, 2.5)}, r"\(2.5, 2.5\) is outside the task space"),
]


@pytest.mark.parametrize(("env_id", "task", "message"), BAD_TASKS)
def test_bad_task_gives_clear_error(env_id: str, task: dict, message: str) -> None:
    env = gym.make(env_id)
    with pytest.raises(ValueError, match=message) as err:
        env.reset(options={"task": task})
    assert env_id in str(err.value)


def test_task_must_be_a_dict() -> None:
    env = gym.make("metarl/AntGoal-v0")
    with pytest.raises(TypeError, match="metarl/AntGoal-v0.*a task is a dict"):
        env.reset(options={"task": (1.0, 1.0)})
    with pytest.raises(ValueError, match="metarl/AntGoal-v0.*unknown reset option"):
        env.reset(options={"goal": (1.0, 1.0)})


@pytest.mark.parametrize("env_id", IDS)
def test_bad_actions_give_clear_errors(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    shape = env.action_space.shape
    with pytest.raises(ValueError, match=rf"{env_id}: action must have shape \({shape[0]},\), got shape \(3,\)"):
        env.step(np.zeros(3))
    nan_action = np.zeros(shape)
    nan_action[1] = np.nan
    with pytest.raises(ValueError, match=f"{env_id}: action must be finite.*nan"):
        env.step(nan_action)
    env.step(np.zeros(shape))  # still usable afterwards


@pytest.mark.parametrize("env_id", IDS)
def test_task_as_constructor_argument_and_pickling(env_id: str) -> None:
    task = gym.make(env_id).unwrapped.sample_tasks(1, np.random.default_rng(9))[0]
    env = gym.make(env_id, task=task).unwrapped
    assert env.task == task
    assert pickle.loads(pickle.dumps(env)).task == task
    oracle = pickle.loads(pickle.dumps(gym.make(env_id, task=task, oracle=True).unwrapped))
    assert oracle.oracle and oracle.task == task
    obs, _ = oracle.reset(seed=0)
    task_part = _task_vector(task)
    np.testing.assert_array_equal(obs[-len(task_part) :], task_part.astype(obs.dtype))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"AntGoalEnv: task goal \(5.0, 0.0\) is outside the task space"):
        envs.AntGoalEnv(task={"goal": (5, 0)})
    with pytest.raises(TypeError, match="forward_reward_weight does not apply"):
        envs.HalfCheetahVelEnv(forward_reward_weight=2.0)


def test_a_physics_worker_imports_no_torch():
    """A physics worker process imports ``metarl.envs.physics`` only: the package's exports load lazily,
    so the worker does not pay torch's import (seconds) at each start."""
    code = "import sys, metarl.envs.physics, metarl; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"])
def test_half_cheetah_pitch_cost_charges_the_torso_pitch_beyond_the_limit(env_id: str) -> None:
    """``pitch_cost_weight=w, pitch_limit=l`` adds ``-w * max(0, |qpos[2]| - l)`` after each step and changes
    nothing else: the same states and actions as the env without it, the difference read off MuJoCo's
    ``qpos[2]`` directly. The torso starts tipped past the limit, nose up and then nose down."""
    w, limit = 2.0, 0.5
    shaped = gym.make(env_id, frame_skip=1, pitch_cost_weight=w, pitch_limit=limit)
    plain = gym.make(env_id, frame_skip=1)
    rng = np.random.default_rng(5)
    task = plain.unwrapped.sample_tasks(1, rng)[0]
    charged = 0
    for start_pitch in (1.3, -2.0, 0.0):
        for env in (shaped, plain):
            env.reset(seed=6, options={"task": task})
            qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
            qpos[2] = start_pitch
            env.unwrapped.set_state(qpos, qvel)
        for _ in range(10):
            action = rng.uniform(-1, 1, 6)
            obs, reward, _, _, info = shaped.step(action)
            obs_plain, reward_plain, _, _, info_plain = plain.step(action)
            np.testing.assert_array_equal(obs, obs_plain)
            pitch = shaped.unwrapped.data.qpos[2]
            expected = -w * max(0.0, abs(pitch) - limit)
            assert info["reward_pitch"] == pytest.approx(expected, abs=1e-12)
            assert reward == pytest.approx(reward_plain + expected, abs=1e-12)
            assert "reward_pitch" not in info_plain
            charged += expected < 0
        if start_pitch == 0.0:
            assert info["reward_pitch"] == 0.0  # level: no charge
    assert charged >= 10  # the tipped starts were charged
    for bad, message in (({"pitch_cost_weight": -1.0}, "pitch_cost_weight must be a number >= 0"),
                         ({"pitch_cost_weight": "1"}, "pitch_cost_weight must be a number >= 0"),
                         ({"pitch_cost_weight": 1.0, "pitch_limit": 0}, "pitch_limit must be a positive number")):
        with pytest.raises(TypeError, match=message):
            gym.make(env_id, **bad)
