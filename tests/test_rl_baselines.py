"""The paper's RL baselines end to end (Finn et al. 2017 sec. 5.3): pretrained and oracle runs are
trained by `metarl train` and evaluated beside a MAML run by `metarl evaluate --baseline`, on the
same tasks, with the oracle seeing each task in its observations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metarl.rl.build as build
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.evaluate import format_table
from metarl.rl.evaluation import jsonable_task
from metarl.rl.learner import RLLearner
from metarl.training import train

torch.set_num_threads(1)


def tiny_cfg(env_id: str, name: str, **over):
    data = {
        "benchmark": "rl", "name": name, "seed": 2, "num_iterations": 2, "meta_batch_size": 2,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 1, "tasks": 2, "test_tasks": 3},
        "inner": {"lr": 0.1, "steps": 1, "test_steps": 1},
        "env": {"id": env_id, "episodes_per_task": 2},
        "policy": {"hidden": [8], "activation": "tanh"},
        "sampler": {"num_workers": 1},
    }
    for key, value in over.items():
        data[key] = data[key] | value if isinstance(value, dict) else value
    return config_from_dict(data)


@pytest.fixture
def recorded_samples(monkeypatch):
    """Every ``sample`` call of the samplers ``metarl.rl.build`` makes: (env_kwargs, tasks, episodes)."""
    calls: list[tuple[dict, list[dict], list]] = []
    real = build.make_sampler

    def recording(*args, **kwargs):
        sampler = real(*args, **kwargs)
        sample = sampler.sample

        def sample_and_record(policy, params, tasks, **kw):
            episodes = sample(policy, params, tasks, **kw)
            calls.append((dict(sampler.env_kwargs), [dict(t) for t in tasks], episodes))
            return episodes

        sampler.sample = sample_and_record
        return sampler

    monkeypatch.setattr(build, "make_sampler", recording)
    return calls


@pytest.mark.parametrize(
    ("env_id", "obs_dim", "task_dim"), [("metarl/Navigation2D-v0", 2, 2), ("metarl/HalfCheetahVel-v0", 17, 1)]
)
def test_evaluate_with_pretrained_and_oracle_baselines(tmp_path, recorded_samples, env_id, obs_dim, task_dim):
    maml = train(tiny_cfg(env_id, "maml"), logdir=tmp_path / "maml", quiet=True)
    pretrained = train(tiny_cfg(env_id, "pre", algorithm="pretrain"), logdir=tmp_path / "pre", quiet=True)
    oracle_cfg = tiny_cfg(env_id, "oracle", algorithm="pretrain", env={"oracle": True})
    oracle = train(oracle_cfg, logdir=tmp_path / "oracle", quiet=True)
    # the oracle's policy reads the task: its first layer has obs_dim + task_dim inputs
    for run, width in [(maml, obs_dim), (pretrained, obs_dim), (oracle, obs_dim + task_dim)]:
        assert load_checkpoint(run)["learner"]["model"]["mu.0.weight"].shape == (8, width)

    recorded_samples.clear()
    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    argv = ["evaluate", str(maml), "--tasks", "3", "--steps", "1", "--seed", "5", "--out", str(out),
            "--plot", str(png), "--baseline", f"pretrained={pretrained}", "--baseline", f"oracle={oracle}"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert png.stat().st_size > 0
    assert set(result["baselines"]) == {"random", "pretrained", "oracle"}
    assert result["n_tasks"] == 3 and [s["step"] for s in result["by_step"]] == [0, 1]
    for b in result["baselines"].values():
        assert [s["step"] for s in b["by_step"]] == [0, 1]
        assert all(np.isfinite(s["mean"]) and np.isfinite(s["ci95"]) for s in b["by_step"])

    # MAML, random, pretrained, oracle: 2 samplings each (before and after the step), on the same tasks
    assert len(recorded_samples) == 8
    tasks = recorded_samples[0][1]
    assert all(t == tasks for _, t, _ in recorded_samples)
    # the JSON names those tasks, in the order of its per_task columns
    assert result["tasks"] == [jsonable_task(t) for t in tasks] and len(result["per_task"][0]) == 3
    assert result["tasks"] == json.loads(json.dumps(result["tasks"]))
    for got, task in zip(result["tasks"], tasks, strict=True):
        ((key, value),) = task.items()
        assert np.allclose(got[key], np.asarray(value, dtype=float))
    oracle_calls = [(kw, eps) for kw, _, eps in recorded_samples if kw.get("oracle")]
    assert len(oracle_calls) == 2
    for _, episodes in oracle_calls:
        for ep, task in zip(episodes, tasks, strict=True):
            assert ep.observations.shape[-1] == obs_dim + task_dim
            (value,) = task.values()
            expected = torch.tensor(np.atleast_1d(value), dtype=torch.float32)
            alive = ep.masks.bool()
            assert torch.equal(ep.observations[..., obs_dim:][alive], expected.expand(int(alive.sum()), task_dim))
    for kw, _, eps in recorded_samples:
        if not kw.get("oracle"):
            assert eps[0].observations.shape[-1] == obs_dim


def test_baseline_with_another_reward_is_refused(tmp_path, capsys):
    env_id = "metarl/Navigation2D-v0"
    maml = train(tiny_cfg(env_id, "maml", num_iterations=1), logdir=tmp_path / "maml", quiet=True)
    squared = tiny_cfg(env_id, "sq", num_iterations=1, algorithm="pretrain",
                       env={"oracle": True, "kwargs": {"squared": True}})
    other = train(squared, logdir=tmp_path / "sq", quiet=True)
    argv = ["evaluate", str(maml), "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "e.json"),
            "--baseline", f"oracle={other}"]
    assert main(argv) == 2
    assert "--baseline oracle: its env.kwargs {'squared': True} differ from {}" in capsys.readouterr().err


def test_env_oracle_config_reaches_the_env():
    cfg = tiny_cfg("metarl/HalfCheetahVel-v0", "o", env={"oracle": True, "kwargs": {"ctrl_cost_weight": 0.1}})
    assert build.env_kwargs(cfg) == {"ctrl_cost_weight": 0.1, "oracle": True}
    assert build.make_env(cfg).observation_space.shape == (18,)
    assert build.policy_module(cfg).state_dict()["mu.0.weight"].shape == (8, 18)
    plain = tiny_cfg("metarl/HalfCheetahVel-v0", "p")
    assert build.env_kwargs(plain) == {} and build.make_env(plain).observation_space.shape == (17,)


def test_policy_init_xavier_zeroes_biases_and_bounds_weights():
    cfg = tiny_cfg("metarl/Navigation2D-v0", "x", policy={"init": "xavier"})
    state = build.seeded_policy(cfg, 0).state_dict()
    for name, w in state.items():
        if name.endswith(".bias"):
            assert torch.count_nonzero(w) == 0, name
        elif name.endswith(".weight"):
            fan_out, fan_in = w.shape
            assert float(w.abs().max()) <= (6 / (fan_in + fan_out)) ** 0.5, name
    default = build.seeded_policy(tiny_cfg("metarl/Navigation2D-v0", "d"), 0).state_dict()
    assert torch.count_nonzero(default["mu.0.bias"]) > 0


def test_evaluation_tasks_are_not_the_training_tasks_of_the_same_seed():
    import gymnasium as gym
    import metarl.envs  # noqa: F401
    import numpy as np

    from metarl.rl.evaluation import evaluation_tasks

    env = gym.make("metarl/Navigation2D-v0")
    train = env.unwrapped.sample_tasks(40, np.random.default_rng(1))  # what a seed-1 run trains on first
    held_out = evaluation_tasks(env, 40, 1)
    assert not set(map(lambda t: tuple(t["goal"]), train)) & set(map(lambda t: tuple(t["goal"]), held_out))
    assert evaluation_tasks(env, 40, 1) == held_out  # and they are fixed by the seed


def test_evaluate_set_changes_test_time_keys_only(tmp_path, capsys):
    """`metarl evaluate --set test_lr_decay=0.5` halves the lr after the first step (steps 0-1 are
    unchanged, step 2 differs) and is recorded; training-time keys are refused."""
    run = train(tiny_cfg("metarl/Navigation2D-v0", "lr"), logdir=tmp_path / "run", quiet=True)
    outs = []
    for extra in ([], ["--set", "test_lr_decay=0.5"]):
        out = tmp_path / f"eval{len(outs)}.json"
        assert main(["evaluate", str(run), "--tasks", "3", "--steps", "2", "--out", str(out), *extra]) == 0
        outs.append(json.loads(out.read_text()))
    plain, halved = ([s["mean"] for s in o["by_step"]] for o in outs)
    assert plain[:2] == halved[:2] and plain[2] != halved[2]
    assert outs[1]["overrides"] == {"test_lr_decay": 0.5} and "overrides" not in outs[0]
    assert main(["evaluate", str(run), "--tasks", "3", "--set", "policy.hidden=[4]"]) == 2
    assert "evaluation may change only" in capsys.readouterr().err


def test_evaluate_set_test_lr_after_first_keeps_the_first_step_and_halves_the_later_ones(tmp_path):
    """`--set test_lr_after_first=0.5`: steps 0-1 as without it, the later steps differ, and the
    baselines adapt on the same schedule (a baseline that is the run itself gives the run's curve)."""
    run = train(tiny_cfg("metarl/Navigation2D-v0", "lr"), logdir=tmp_path / "run", quiet=True)
    outs = []
    for extra in ([], ["--set", "test_lr_after_first=0.5"]):
        out = tmp_path / f"eval{len(outs)}.json"
        assert main(["evaluate", str(run), "--tasks", "3", "--steps", "3", "--out", str(out),
                     "--baseline", f"same={run}", *extra]) == 0
        outs.append(json.loads(out.read_text()))
    plain, later = ([s["mean"] for s in o["by_step"]] for o in outs)
    assert plain[:2] == later[:2] and plain[2:] != later[2:]
    assert [s["mean"] for s in outs[1]["baselines"]["same"]["by_step"]] == later
    # each baseline's per-goal returns, in the run's task order, for paired comparisons
    assert outs[1]["baselines"]["same"]["per_task"] == outs[1]["per_task"]
    assert np.asarray(outs[1]["baselines"]["random"]["per_task"]).shape == (4, 3)
    # the printed table pairs the run with each baseline task by task: a baseline that is the run is 0 ± 0
    table = format_table(outs[1]).splitlines()
    same = next(line for line in table if line.startswith("MAML - same, paired")).split()[4:]
    assert [float(v) for v in same[::3]] == [0.0] * 4 and [float(v) for v in same[2::3]] == [0.0] * 4
    rand = next(line for line in table if line.startswith("MAML - random, paired")).split()[4::3]
    expected = np.mean(np.asarray(outs[1]["per_task"]) - np.asarray(outs[1]["baselines"]["random"]["per_task"]), 1)
    np.testing.assert_allclose([float(v) for v in rand], expected, rtol=1e-3, atol=1e-3)
    assert outs[1]["overrides"] == {"test_lr_after_first": 0.5}


def test_evaluate_baseline_lr_adapts_that_baseline_with_its_own_step_size(tmp_path, monkeypatch, capsys):
    """`--baseline-lr NAME=LR` (Finn et al. tuned the baselines' step sizes): that baseline and only
    it adapts with LR, recorded in the JSON and the table; bad names and values are refused in one line."""
    import metarl.rl.evaluation as evaluation

    lrs: list[float] = []
    real = evaluation.adapt_on_episodes

    def recording(policy, params, train, inner, advantages, **kw):
        lrs.append(inner.lr)
        return real(policy, params, train, inner, advantages, **kw)

    monkeypatch.setattr(evaluation, "adapt_on_episodes", recording)
    run = train(tiny_cfg("metarl/Navigation2D-v0", "blr"), logdir=tmp_path / "run", quiet=True)
    out = tmp_path / "eval.json"
    lrs.clear()
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--out", str(out), "--baseline",
                 f"same={run}", "--baseline", f"tuned={run}", "--baseline-lr", "tuned=0.3",
                 "--baseline-lr", "random=1.5"]) == 0
    assert lrs == [0.1, 1.5, 0.1, 0.3]  # the run, random, same, tuned: one adaptation each
    result = json.loads(out.read_text())
    same, tuned = result["baselines"]["same"], result["baselines"]["tuned"]
    assert result["baselines"]["random"]["inner_lr"] == 1.5 and tuned["inner_lr"] == 0.3 and "inner_lr" not in same
    assert [s["mean"] for s in same["by_step"]] == [s["mean"] for s in result["by_step"]]
    assert tuned["by_step"][0]["mean"] == same["by_step"][0]["mean"]  # before adapting: the same policy
    assert tuned["by_step"][1]["mean"] != same["by_step"][1]["mean"]
    assert "tuned (lr 0.3)" in capsys.readouterr().out
    for bad, message in ((["--baseline-lr", "other=0.2"], "no baseline named 'other'"),
                         (["--baseline-lr", "same=fast"], "expected NAME=LR with LR a number"),
                         (["--baseline-lr", "same=-1"], "expected a step size > 0")):
        assert main(["evaluate", str(run), "--tasks", "2", "--baseline", f"same={run}", *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["evaluate", str(run), str(run), "--tasks", "2", "--baseline-lr", "random=1"]) == 2
    assert "for one run only" in capsys.readouterr().err


def test_evaluate_set_scores_the_clipped_control_cost_on_run_and_baselines(tmp_path, capsys):
    """`--set env.kwargs.clip_ctrl_cost=true` re-scores a run trained on the raw cost with rllab's (the
    paper's) clipped one: the same actions and dynamics, a smaller cost, so every return rises, the
    baseline's too; an env without the option is refused in one line."""
    run = train(tiny_cfg("metarl/HalfCheetahDir-v0", "hc"), logdir=tmp_path / "run", quiet=True)
    outs = []
    for clip in ("false", "true"):
        out = tmp_path / f"eval-{clip}.json"
        assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--baseline", f"same={run}",
                     "--out", str(out), "--set", f"env.kwargs.clip_ctrl_cost={clip}"]) == 0
        outs.append(json.loads(out.read_text()))
    raw, clipped = outs
    for k in range(2):
        for a, b in zip(raw["per_task"][k], clipped["per_task"][k]):
            assert b > a  # a unit-variance Gaussian policy leaves the box on some step of every episode
    for a, b in zip(raw["baselines"]["same"]["by_step"], clipped["baselines"]["same"]["by_step"]):
        assert b["mean"] > a["mean"]
    assert clipped["overrides"] == {"env.kwargs.clip_ctrl_cost": True}
    nav = train(tiny_cfg("metarl/Navigation2D-v0", "nav"), logdir=tmp_path / "nav", quiet=True)
    assert main(["evaluate", str(nav), "--tasks", "2", "--set", "env.kwargs.clip_ctrl_cost=true"]) == 2
    assert "has no such option" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--tasks", "2", "--set", "env.kwargs.clip_ctrl_cost=2"]) == 2
    assert "expected true or false" in capsys.readouterr().err


def test_evaluate_set_pitch_cost_weight_0_scores_a_pitch_shaped_run_with_the_papers_reward(tmp_path, capsys):
    """A run trained with the half-cheetah's pitch cost is scored without it by `--set
    env.kwargs.pitch_cost_weight=0`: the same episodes less a cost >= 0, so no task's return falls and some
    rise; a negative weight is refused in one line."""
    env = {"kwargs": {"frame_skip": 1, "pitch_cost_weight": 5.0, "pitch_limit": 0.02}}
    run = train(tiny_cfg("metarl/HalfCheetahVel-v0", "hcp", env=env), logdir=tmp_path / "run", quiet=True)
    outs = []
    for extra in ([], ["--set", "env.kwargs.pitch_cost_weight=0"]):
        out = tmp_path / f"eval-{len(extra)}.json"
        assert main(["evaluate", str(run), "--tasks", "2", "--steps", "0", "--out", str(out), *extra]) == 0
        outs.append(json.loads(out.read_text()))
    shaped, plain = outs
    assert all(b >= a for a, b in zip(shaped["per_task"][0], plain["per_task"][0]))
    assert any(b > a + 1e-3 for a, b in zip(shaped["per_task"][0], plain["per_task"][0]))
    assert plain["overrides"] == {"env.kwargs.pitch_cost_weight": 0}
    assert main(["evaluate", str(run), "--tasks", "2", "--set", "env.kwargs.pitch_cost_weight=-1"]) == 2
    assert "expected a number >= 0" in capsys.readouterr().err


def test_meta_sgd_run_trains_saves_and_evaluates_its_learned_rates(tmp_path):
    cfg = tiny_cfg("metarl/Navigation2D-v0", "msgd", inner={"lr": 0.1, "steps": 1, "test_steps": 1, "learn_lr": True})
    run = train(cfg, logdir=tmp_path / "run", quiet=True)
    model = load_checkpoint(run)["learner"]["model"]
    rates = {k: v for k, v in model.items() if k.startswith("inner_lr.")}
    assert len(rates) == len(model) - len(rates) > 0
    assert any(float((v - 0.1).abs().max()) > 0 for v in rates.values())  # meta-learned
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "e.json")]) == 0
    pretrain = tiny_cfg("metarl/Navigation2D-v0", "p", algorithm="pretrain",
                        inner={"lr": 0.1, "steps": 1, "test_steps": 1, "learn_lr": True})
    assert not any(k.startswith("inner_lr") for k in build.policy_module(pretrain).state_dict())


def test_pretrain_runs_keep_the_best_return_before_adaptation(tmp_path, monkeypatch):
    """best.pt of a pretrain run (pretrained / oracle baselines) follows ``val/return_pre``; of a
    MAML run, ``val/return_post``. Validation values are scripted so the two keys disagree."""
    import torch

    script = iter([{"val/return_pre": -5.0, "val/return_post": -50.0},
                   {"val/return_pre": -9.0, "val/return_post": -10.0},
                   {"val/return_pre": -5.0, "val/return_post": -50.0},
                   {"val/return_pre": -9.0, "val/return_post": -10.0}])
    monkeypatch.setattr(RLLearner, "validate", lambda self: next(script))
    best_iterations = {}
    for algorithm in ("pretrain", "maml"):
        run = train(tiny_cfg("metarl/Navigation2D-v0", algorithm, algorithm=algorithm), logdir=tmp_path / algorithm,
                    quiet=True)
        best_iterations[algorithm] = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["iteration"]
    assert best_iterations == {"pretrain": 1, "maml": 2}


def test_lvc_run_adapts_like_reinforce_on_its_own_episodes_and_refuses_foreign_log_probs(tmp_path):
    import dataclasses

    import metarl
    from metarl.rl.sampler import make_sampler

    cfg = tiny_cfg("metarl/Navigation2D-v0", "lvc", inner_estimator="lvc")
    r = metarl.load(train(cfg, logdir=tmp_path / "run", quiet=True))
    sampler = make_sampler("metarl/Navigation2D-v0", episodes_per_task=4, num_workers=1, seed=3)
    try:
        tasks = sampler.sample_tasks(1, np.random.default_rng(0))
        episodes = sampler.sample(r.module, r.params, tasks, per_task=False)[0]
    finally:
        sampler.close()
    lvc = r.adapt(episodes, steps=1)
    r.config = dataclasses.replace(r.config, inner_estimator="reinforce")
    reinforce = r.adapt(episodes, steps=1)
    for k in lvc:  # the same inner step at the sampling parameters
        torch.testing.assert_close(lvc[k], reinforce[k], rtol=1e-5, atol=1e-6)
    r.config = dataclasses.replace(r.config, inner_estimator="lvc")
    foreign = dataclasses.replace(episodes, log_probs=torch.zeros_like(episodes.log_probs))
    with pytest.raises(ValueError, match="inner_estimator: lvc"):
        r.adapt(foreign, steps=1)


def test_validation_samples_on_the_training_sampler_with_its_own_seeds(monkeypatch, tmp_path):
    """A run makes one sampler: validation reuses it (a Ray run must not ask for a second set of
    actors), with streams seeded for validation, so its episodes are a fresh validation-seeded
    sampler's and the training streams continue as if validation had not happened."""
    from metarl.rl.evaluation import adaptation_returns
    from metarl.rl.sampler import make_sampler
    from metarl.seeding import validation_seed

    cfg = tiny_cfg("metarl/Navigation2D-v0", "val", num_iterations=3, eval={"every": 2, "tasks": 2})
    learner = RLLearner(cfg)
    try:
        before = learner.sampler.state_dict()
        val = learner.validate()
        assert learner.sampler.state_dict()["numpy"] == before["numpy"]  # training streams untouched
        fresh = make_sampler(cfg.env.id, episodes_per_task=2, num_workers=1, seed=0)
        try:
            seed = validation_seed(cfg.seed)
            want = adaptation_returns(cfg, learner.module, learner._val_tasks, steps=1, sampler=fresh, seed=seed)
        finally:
            fresh.close()
        assert val["val/return_post"] == pytest.approx(float(want.mean(-1)[-1]), rel=1e-6)
        assert val == learner.validate()  # the same seeds at every validation
    finally:
        learner.close()
    made = []
    real = build.make_sampler
    monkeypatch.setattr(build, "make_sampler", lambda *a, **k: made.append(1) or real(*a, **k))
    run = train(cfg, logdir=tmp_path / "run", quiet=True)  # validates at iterations 2 and 3
    assert len(made) == 1 and "val/return_post" in (run / "metrics.csv").read_text()


def test_baseline_env_kwargs_compare_with_the_env_defaults_filled_in() -> None:
    """A config that spells out a default makes the same env as one that leaves it out; any other
    difference still refuses the baseline."""
    from metarl.rl.evaluation import env_kwargs_with_defaults as full

    env_id = "metarl/HalfCheetahDir-v0"
    assert full(env_id, {"frame_skip": 1}) == full(env_id, {"frame_skip": 1, "clip_ctrl_cost": False})
    assert full(env_id, {"frame_skip": 1}) != full(env_id, {"frame_skip": 1, "clip_ctrl_cost": True})
    assert full(env_id, {}) != full(env_id, {"frame_skip": 1})  # Gymnasium's 5 lives below the class signature
    assert full("metarl/Navigation2D-v0", {}) == full("metarl/Navigation2D-v0", {"squared": False})
    assert full("no/SuchEnv-v0", {"a": 1}) == {"a": 1}


def test_evaluate_set_episodes_per_task_adapts_every_policy_on_that_many(tmp_path, recorded_samples, capsys):
    """`--set env.episodes_per_task=N`: the paper's HalfCheetahVel run trained on 10 episodes per task
    and its test script adapted on 20. Every sampling of the evaluation (run, random, pretrained, and
    the oracle on its own sampler) draws N episodes per task; the JSON records it; bad N in one line."""
    env_id = "metarl/Navigation2D-v0"
    maml = train(tiny_cfg(env_id, "maml"), logdir=tmp_path / "maml", quiet=True)
    oracle = train(tiny_cfg(env_id, "oracle", algorithm="pretrain", env={"oracle": True}),
                   logdir=tmp_path / "oracle", quiet=True)
    recorded_samples.clear()
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(maml), "--tasks", "2", "--steps", "1", "--out", str(out), "--baseline",
                 f"same={maml}", "--baseline", f"oracle={oracle}", "--set", "env.episodes_per_task=3"]) == 0
    assert len(recorded_samples) == 8 and any(kw.get("oracle") for kw, _, _ in recorded_samples)
    for _, _, episodes in recorded_samples:
        assert [ep.rewards.shape[-1] for ep in episodes] == [3, 3]  # trained on 2
    result = json.loads(out.read_text())
    assert result["overrides"] == {"env.episodes_per_task": 3}
    for bad in ("0", "2.5", "true"):
        assert main(["evaluate", str(maml), "--tasks", "2", "--set", f"env.episodes_per_task={bad}"]) == 2
        assert f"env.episodes_per_task: got {bad.capitalize() if bad == 'true' else bad}" in capsys.readouterr().err


def test_jsonable_task_turns_numpy_and_tuples_into_json_and_the_rest_into_repr():
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    task = {"goal": np.array([0.5, -1.25], dtype=np.float32), "velocity": np.float64(1.5), "k": np.int64(3),
            "pair": (1, "a"), "nested": {2: [np.bool_(True), None]}, "obj": Opaque()}
    got = jsonable_task(task)
    assert got == {"goal": [0.5, -1.25], "velocity": 1.5, "k": 3, "pair": [1, "a"], "nested": {"2": [True, None]},
                   "obj": "Opaque()"}
    assert json.loads(json.dumps(got)) == got
    assert type(got["k"]) is int and type(got["nested"]["2"][0]) is bool


def test_finn2017_task_set_is_the_goals_of_the_papers_test_scripts():
    """np.random.seed(1); uniform(0, 2, 40) in the HalfCheetahVel script (its first goals, printed by that
    script's own code: 0.834044, 1.440649, 0.000229); directions from the draw's side of the threshold."""
    from metarl.config import ConfigError
    from metarl.rl.evaluation import finn2017_test_tasks

    vel = finn2017_test_tasks("metarl/HalfCheetahVel-v0")
    assert len(vel) == 40 and all(set(t) == {"velocity"} and 0 <= t["velocity"] <= 2 for t in vel)
    assert [round(t["velocity"], 6) for t in vel[:3]] == [0.834044, 1.440649, 0.000229]
    ant = finn2017_test_tasks("metarl/AntVel-v0")
    assert [t["velocity"] for t in ant] == pytest.approx([1.5 * t["velocity"] for t in vel])  # same draws, U(0, 3)
    cheetah_dir = finn2017_test_tasks("metarl/HalfCheetahDir-v0")
    assert [t["direction"] for t in cheetah_dir] == [1 if t["velocity"] > 1.0 else -1 for t in vel]
    ant_dir = finn2017_test_tasks("metarl/AntDir-v0")  # its script seeds 2
    draws = np.random.RandomState(2).random_sample(40) * 3.0
    assert [t["direction"] for t in ant_dir] == [1 if d > 1.5 else -1 for d in draws]
    assert 10 < sum(t["direction"] == 1 for t in ant_dir) < 30
    with pytest.raises(ConfigError, match="not metarl/AntGoal-v0"):
        finn2017_test_tasks("metarl/AntGoal-v0")


def test_evaluate_task_set_reuses_an_evaluations_tasks_and_refuses_bad_input(tmp_path, capsys):
    """`--task-set FILE` with an earlier evaluation's JSON, and the same --seed, repeats that evaluation
    exactly (the same tasks, the same sampling streams); `--task`'s JSON and a plain list work too; bad
    input is one line each."""
    run = train(tiny_cfg("metarl/Navigation2D-v0", "ts", num_iterations=1), logdir=tmp_path / "run", quiet=True)
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--seed", "5", "--out", str(first)]) == 0
    assert main(["evaluate", str(run), "--task-set", str(first), "--steps", "1", "--seed", "5",
                 "--out", str(again)]) == 0
    a, b = json.loads(first.read_text()), json.loads(again.read_text())
    assert b["per_task"] == a["per_task"] and b["tasks"] == a["tasks"] and b["by_step"] == a["by_step"]
    assert b["task_set"] == str(first) and b["n_tasks"] == 3 and "task_set" not in a

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"goal": [0.1, -0.2]}, {"goal": [0.4, 0.3]}]))
    out = tmp_path / "plain-eval.json"
    assert main(["evaluate", str(run), "--task-set", str(plain), "--steps", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tasks"] == [{"goal": [0.1, -0.2]}, {"goal": [0.4, 0.3]}]
    given = tmp_path / "given.json"
    assert main(["evaluate", str(run), "--task", "goal=0.1,-0.2", "--steps", "1", "--out", str(given)]) == 0
    out2 = tmp_path / "given-eval.json"
    assert main(["evaluate", str(run), "--task-set", str(given), "--steps", "1", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["tasks"] == [{"goal": [0.1, -0.2]}]
    capsys.readouterr()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"goal": [3.0, 0.0]}]))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    for extra, message in [
        (["--task-set", "finn2017"], "the paper's test goals exist for"),
        (["--task-set", str(tmp_path / "missing.json")], "cannot read it"),
        (["--task-set", str(empty)], "no tasks in it"),
        (["--task-set", str(bad)], "outside the task space"),
        (["--task-set", str(plain), "--tasks", "3"], "--task-set and --tasks"),
    ]:
        assert main(["evaluate", str(run), "--steps", "1", "--out", str(tmp_path / "x.json"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_set_inner_lr_is_the_run_trained_with_that_rate(tmp_path, capsys):
    """`--set inner.lr=0.3` adapts with 0.3 from the first step: the same numbers as a copy of the checkpoint
    whose saved config says 0.3; a run that learned its rates (Meta-SGD) refuses it in one line."""
    run = train(tiny_cfg("metarl/Navigation2D-v0", "lr"), logdir=tmp_path / "run", quiet=True)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    state["config"]["inner"]["lr"] = 0.3
    copy = tmp_path / "copy.pt"
    torch.save(state, copy)
    outs = {}
    for name, target, extra in (("plain", run, []), ("set", run, ["--set", "inner.lr=0.3"]), ("copy", copy, [])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(target), "--tasks", "3", "--steps", "2", "--out", str(out), *extra]) == 0
        outs[name] = [s["mean"] for s in json.loads(out.read_text())["by_step"]]
    assert outs["set"] == outs["copy"]
    assert outs["set"][0] == outs["plain"][0] and outs["set"][1:] != outs["plain"][1:]
    meta_sgd = train(tiny_cfg("metarl/Navigation2D-v0", "msgd", inner={"lr": 0.1, "steps": 1, "test_steps": 1,
                                                                        "learn_lr": True}),
                     logdir=tmp_path / "msgd", quiet=True)
    capsys.readouterr()
    assert main(["evaluate", str(meta_sgd), "--tasks", "3", "--set", "inner.lr=0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "inner.learn_lr: true" in err and len(err.splitlines()) == 1


def test_pooled_rl_evaluation_keeps_its_tasks_for_task_set(tmp_path):
    """An RL pooled JSON (`--out`) names its held-out tasks once, so `--task-set POOLED.json` scores another run
    on exactly those tasks; each run's result inside it is the one it would get alone."""
    runs = [train(tiny_cfg("metarl/Navigation2D-v0", "maml", seed=seed), logdir=tmp_path / f"s{seed}", quiet=True)
            for seed in (1, 2)]
    pooled_path = tmp_path / "pooled.json"
    assert main(["evaluate", *map(str, runs), "--tasks", "3", "--steps", "1", "--seed", "5",
                 "--out", str(pooled_path)]) == 0
    pooled = json.loads(pooled_path.read_text())
    assert not any((run / "eval.json").exists() for run in runs)
    alone = tmp_path / "alone.json"
    assert main(["evaluate", str(runs[1]), "--task-set", str(pooled_path), "--steps", "1", "--seed", "5",
                 "--out", str(alone)]) == 0
    alone = json.loads(alone.read_text())
    assert alone["tasks"] == pooled["tasks"] and len(pooled["tasks"]) == 3
    assert np.asarray(alone["per_task"]) == pytest.approx(np.asarray(pooled["per_run"][1]["per_task"]))
