"""Meta-World v3 through metarl's task protocol (the optional extra: skipped where metaworld is not installed).

Task sets round-trip through ``reset(options=...)``; the generic sampler carries success flags; a tiny run
trains, evaluates (with its success rate) and goes through Meta-World's own ``metalearning_evaluation``.
Episodes are cut to a few steps (``max_episode_steps``) so that all of it runs in seconds.
"""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from metarl.envs import check_task_env  # noqa: E402
from metarl.envs.metaworld import MetaWorldTaskEnv, env_id  # noqa: E402

import metarl  # noqa: E402
from metarl.cli import main  # noqa: E402
from metarl.rl.generic_sampler import GenericSampler  # noqa: E402
from metarl.rl.metaworld_agent import official_evaluation  # noqa: E402
from metarl.rl.policies import GaussianMLPPolicy  # noqa: E402

torch.set_num_threads(1)
# Meta-World's partially observable envs bound the zeroed goal to [0, 0]: Gymnasium's checker warns
pytestmark = pytest.mark.filterwarnings("ignore:.*maximum and minimum values are equal")
ML1 = "metarl.envs.metaworld:metarl/ML1-reach-v3"
SHORT = 8  # steps per episode in these tests (Meta-World's own: 500)


@pytest.mark.parametrize("benchmark", ["reach-v3", "push-v3", "pick-place-v3", "ML10"])
def test_task_set_round_trips_through_the_protocol(benchmark):
    env = gymnasium.make(env_id(benchmark), max_episode_steps=SHORT)
    try:
        check_task_env(env)
        base = env.unwrapped
        assert isinstance(base, MetaWorldTaskEnv) and env.spec.max_episode_steps == SHORT
        assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
        tasks = base.sample_tasks(4, np.random.default_rng(0))
        assert tasks == base.sample_tasks(4, np.random.default_rng(0))  # reproducible from the rng
        for task in [*tasks, *base.sample_test_tasks(2, np.random.default_rng(1))]:
            obs, _ = env.reset(seed=3, options={"task": task})
            assert base.task == task and obs.shape == (39,)
            env.reset()
            assert base.task == task  # persists
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert np.isfinite(reward) and "success" in info and not terminated and not truncated
        with pytest.raises(ValueError, match="not one of this benchmark's"):
            env.reset(options={"task": {"env_name": "reach-v3", "split": "train", "index": 50}})
    finally:
        env.close()


def test_ml10_mixes_train_envs_and_holds_out_test_envs():
    base = gymnasium.make(env_id("ML10")).unwrapped
    names = base.env_names
    assert len(names["train"]) == 10 and len(names["test"]) == 5 and not set(names["train"]) & set(names["test"])
    tasks = base.sample_tasks(20, np.random.default_rng(0))
    counts = {n: sum(t["env_name"] == n for t in tasks) for n in names["train"]}
    assert set(counts.values()) == {2}  # a balanced meta-batch, as Meta-World's
    assert {t["env_name"] for t in base.sample_test_tasks(5, np.random.default_rng(0))} == set(names["test"])
    base.close()


def test_generic_sampler_gives_success_flags():
    sampler = GenericSampler(ML1, episodes_per_task=2, seed=0, env_kwargs={"max_episode_steps": SHORT})
    try:
        tasks = sampler.sample_tasks(2, np.random.default_rng(0))
        policy = GaussianMLPPolicy(39, 4, [8], "tanh", 1.0)
        params = dict(policy.named_parameters())
        episodes = sampler.sample(policy, params, tasks)
        assert len(episodes) == 2
        for e in episodes:
            assert e.rewards.shape == (SHORT, 2) and e.successes().shape == (2,)
            assert e.successes().dtype == torch.bool
        with sampler.seeded(5):
            a = sampler.sample(policy, params, tasks)
        with sampler.seeded(5):
            b = sampler.sample(policy, params, tasks)
        assert all(torch.equal(x.rewards, y.rewards) and torch.equal(x.successes(), y.successes())
                   for x, y in zip(a, b, strict=True))
    finally:
        sampler.close()


def test_success_flag_is_true_once_info_says_success():
    """A scripted reach: the hand moved straight to the goal succeeds; the flag records it."""
    env = gymnasium.make(env_id("reach-v3"), max_episode_steps=150)
    env.reset(seed=0, options={"task": {"env_name": "reach-v3", "split": "train", "index": 0}})
    mw = env.unwrapped._env
    succeeded = False
    for _ in range(150):
        delta = mw._target_pos - mw.tcp_center
        _, _, _, truncated, info = env.step(np.append(np.clip(delta * 50, -1, 1), 0.0).astype(np.float32))
        succeeded |= bool(info["success"])
        if truncated:
            break
    env.close()
    assert succeeded


def _tiny_run(tmp_path):
    run = tmp_path / "run"
    code = main(["train", "metaworld_ml1_reach", "--logdir", str(run),
                 "--set", "num_iterations=1", "--set", "meta_batch_size=2", "--set", "env.episodes_per_task=2",
                 "--set", f"env.kwargs={{benchmark_seed: 0, max_episode_steps: {SHORT}}}",
                 "--set", "policy.hidden=[8]", "--set", "eval.every=1", "--set", "eval.tasks=2",
                 "--set", "eval.test_tasks=2", "--set", "trpo.cg_iters=2", "--set", "trpo.ls_max_steps=2"])
    assert code == 0
    return run


def test_train_and_evaluate_log_success(tmp_path, capsys, monkeypatch):
    run = _tiny_run(tmp_path)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/success_pre", "train/success_post", "val/success_pre", "val/success_post"):
        assert key in header
    assert main(["evaluate", str(run), "--steps", "1", "--out", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert [s["step"] for s in result["success"]] == [0, 1]
    assert all(0.0 <= s["mean"] <= 1.0 for s in result["success"])
    assert "success" in capsys.readouterr().out

    # the official evaluation, unchanged, on a tiny budget
    rounds = []
    tiny = dict(num_evals=2, adaptation_steps=1, adaptation_episodes=1, evaluation_episodes=1, meta_batch_size=2,
                total_tasks_per_cls=4, max_episode_steps=SHORT)
    out = official_evaluation(metarl.load(run), progress=lambda done, total: rounds.append((done, total)), **tiny)
    assert rounds == [(0, 2), (1, 2)]  # a line per round, reported as it begins
    # the envs stepping in this process (the default) or in worker processes give the same evaluation
    forked = official_evaluation(metarl.load(run), vector_strategy="async", **tiny)
    assert out["settings"]["vector_strategy"] == "sync" and forked["settings"]["vector_strategy"] == "async"
    for key in ("success_rate", "return", "success_by_env"):
        assert out[key] == forked[key], key

    # the CLI: a progress line per round, the result printed and written (the evaluation itself as above)
    def short(run_, progress, **kw):
        return official_evaluation(run_, num_evals=2, adaptation_episodes=1, evaluation_episodes=1,
                                   meta_batch_size=2, total_tasks_per_cls=2, max_episode_steps=SHORT,
                                   progress=progress, **kw)

    monkeypatch.setattr("metarl.rl.metaworld_agent.official_evaluation", short)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--metaworld-official", "--steps", "1"]) == 0
    printed = capsys.readouterr()
    assert [line.split(" (")[0] for line in printed.err.splitlines() if "round" in line] == [
        "[metarl] Meta-World evaluation: round 1/2", "[metarl] Meta-World evaluation: round 2/2"]
    written = json.loads((run / "metaworld_eval.json").read_text())
    assert written["settings"]["num_evals"] == 2 and written["settings"]["adaptation_steps"] == 1
    assert f"success rate {written['success_rate']:.3f}" in printed.out
    assert out["benchmark"] == "ML1-reach-v3" and 0.0 <= out["success_rate"] <= 1.0
    assert set(out["success_by_env"]) == {"reach-v3"} and np.isfinite(out["return"])



def test_official_evaluations_of_several_runs_pool_and_are_reused_while_current(tmp_path, capsys, monkeypatch):
    """`metarl evaluate RUN1 RUN2 --metaworld-official`: each run evaluated and written, then pooled; a second
    call reuses the stored results, and a run whose checkpoint moved on (another iteration) is evaluated
    again."""
    import shutil
    from functools import partial

    from metarl.rl import metaworld_agent

    run1 = _tiny_run(tmp_path)
    run2 = tmp_path / "run2"
    shutil.copytree(run1, run2)
    tiny = dict(num_evals=2, adaptation_episodes=1, evaluation_episodes=1, meta_batch_size=2,
                total_tasks_per_cls=2, max_episode_steps=SHORT)
    calls = []

    def short(run_, progress, **kw):
        calls.append(run_.iteration)
        return official_evaluation(run_, progress=progress, **tiny, **kw)

    monkeypatch.setattr(metaworld_agent, "official_evaluation", short)
    monkeypatch.setattr(metaworld_agent, "official_settings", partial(metaworld_agent.official_settings, **tiny))
    pooled_path = tmp_path / "pooled.json"
    capsys.readouterr()
    assert main(["evaluate", str(run1), str(run2), "--metaworld-official", "--out", str(pooled_path)]) == 0
    assert len(calls) == 2
    stored = [json.loads((r / "metaworld_eval.json").read_text()) for r in (run1, run2)]
    pooled = json.loads(pooled_path.read_text())
    assert pooled["runs"] == [str(run1), str(run2)] and pooled["n_runs"] == 2
    assert pooled["success_rate"] == pytest.approx(np.mean([r["success_rate"] for r in stored]))
    assert pooled["bootstrap"]["episodes_per_env"] == 2  # num_evals x evaluation_episodes
    assert "2 runs: success rate" in capsys.readouterr().out

    assert main(["evaluate", str(run1), str(run2), "--metaworld-official"]) == 0
    assert len(calls) == 2  # both reused
    assert capsys.readouterr().err.count("reusing") == 2
    (run2 / "metaworld_eval.json").write_text(json.dumps({**stored[1], "settings": {**stored[1]["settings"],
                                                                                      "iteration": 0}}))
    assert main(["evaluate", str(run1), str(run2), "--metaworld-official", "--steps", "1"]) == 0
    assert len(calls) == 3 and json.loads((run2 / "metaworld_eval.json").read_text())["settings"]["iteration"] == 1
    (run1 / "metaworld_eval.json").write_text("{not json")  # unreadable: evaluated again, not a traceback
    assert main(["evaluate", str(run1), str(run2), "--metaworld-official"]) == 0
    assert len(calls) == 4 and json.loads((run1 / "metaworld_eval.json").read_text())["settings"]["iteration"] == 1
    capsys.readouterr()
    assert main(["evaluate", str(run1), f"{run1}/", "--metaworld-official"]) == 2
    assert "give each run (directory) once" in capsys.readouterr().err
    # the pooled JSON may not overwrite a run's own result
    assert main(["evaluate", str(run1), str(run2), "--metaworld-official",
                 "--out", str(run1 / "metaworld_eval.json")]) == 2
    assert "give the pooled JSON another name" in capsys.readouterr().err

def test_timesteps_split_into_episodes_per_env():
    """Meta-World's same-step autoreset: env e's episodes are its runs of steps between two ends."""
    from metaworld.evaluation import Timestep

    from metarl.rl.metaworld_agent import timesteps_to_episodes

    ends = [[False, False, True, False, True, False], [False, True, False, False, True, False]]  # env 0: 3+2, 1: 2+3
    steps = [Timestep(np.full((2, 3), t, float), np.full((2, 4), -t, float), np.array([t, 10.0 * t]),
                      np.zeros(2, bool), np.array([ends[0][t], ends[1][t]]), {"log_prob": np.array([0.5, 0.25])})
             for t in range(6)]
    e = timesteps_to_episodes(steps, episodes=2)
    assert e.rewards.shape == (2, 3, 2) and e.observations.shape == (2, 3, 2, 3)
    assert e.masks[0].T.tolist() == [[1, 1, 1], [1, 1, 0]] and e.masks[1].T.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert e.rewards[0].T.tolist() == [[0, 1, 2], [3, 4, 0]] and e.rewards[1].T.tolist() == [[0, 10, 0], [20, 30, 40]]
    assert torch.equal(e.observations[1, :, 1, 0], torch.tensor([2.0, 3.0, 4.0]))
    assert torch.equal(e.actions[0, :, 0, 0], torch.tensor([0.0, -1.0, -2.0]))
    assert float(e.log_probs[1].sum()) == 0.25 * 5
    with pytest.raises(ValueError, match="finished 2 episodes, need 3"):
        timesteps_to_episodes(steps, episodes=3)
