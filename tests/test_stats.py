"""IQM and the stratified bootstrap (Agarwal et al. 2021) against hand computations and invariants, and
`metarl evaluate RUN1 RUN2` pooling two tiny sinusoid runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.cli import main
from metarl.config import config_from_dict
from metarl.evaluate import pool_runs
from metarl.stats import iqm, stratified_bootstrap_ci
from metarl.training import train
from tests.scripts import load_experiment

torch.set_num_threads(1)


@pytest.mark.parametrize("scores, expected", [
    ([1, 2, 3, 4], 2.5),                                 # n = 4: drop 1 each end
    ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),                     # n = 8, unsorted: mean of 3, 4, 5, 6
    ([10, 0, 1, 2, 100], 13 / 3),                        # n = 5: floor(5/4) = 1 each end, the middle 3 kept
    ([1000, 1, 2, 3, 4, 5, -1000], 3.0),                 # n = 7: the outliers go
    ([5, -1, 2], 2.0),                                   # n = 3: nothing dropped, the plain mean
    ([[1, 2], [3, 100]], 2.5),                           # a matrix: all entries pooled
    (list(range(10)), 4.5),                              # n = 10: drop 2 each end, mean of 2..7
])
def test_iqm_by_hand(scores, expected):
    assert iqm(np.array(scores, dtype=float)) == pytest.approx(expected, abs=1e-12)


def test_iqm_invariants():
    x = np.random.default_rng(0).normal(size=(7, 13))
    assert iqm(np.random.default_rng(1).permutation(x.ravel())) == pytest.approx(iqm(x))
    assert iqm(3 * x - 2) == pytest.approx(3 * iqm(x) - 2)


def test_identical_runs_give_a_zero_width_interval_where_pooled_resampling_would_not():
    column = np.random.default_rng(0).normal(size=30)
    scores = np.tile(column, (5, 1))  # [runs, tasks], every run the same: each task column is constant
    lo, hi = stratified_bootstrap_ci(scores, reps=500)
    assert lo == hi == iqm(scores)
    # resampling all entries regardless of task (no strata) mixes tasks: the interval has a width
    rng = np.random.default_rng(0)
    flat = scores.ravel()
    pooled = [iqm(flat[rng.integers(0, flat.size, flat.size)]) for _ in range(500)]
    assert np.quantile(pooled, 0.975) - np.quantile(pooled, 0.025) > 0.05


def test_each_replicate_keeps_every_task_in_its_column():
    scores = np.arange(4 * 6, dtype=float).reshape(4, 6) ** 1.5  # each column its own range of values
    lo_col, hi_col = scores.min(0), scores.max(0)

    def within_columns(m: np.ndarray) -> float:
        assert m.shape == scores.shape
        return float(((m >= lo_col) & (m <= hi_col)).all())

    assert stratified_bootstrap_ci(scores, within_columns, reps=200) == (1.0, 1.0)


def test_interval_covers_the_population_iqm():
    # the IQM of N(mu, 1) is mu (symmetric); a seeded [runs, tasks] sample, then a small coverage count
    scores = np.random.default_rng(3).normal(3.0, 1.0, size=(5, 40))
    lo, hi = stratified_bootstrap_ci(scores, reps=2000, seed=0)
    assert lo < iqm(scores) < hi and lo < 3.0 < hi
    assert stratified_bootstrap_ci(scores, reps=2000, seed=0) == (lo, hi)  # seeded
    covered = [lo <= 0.0 <= hi for lo, hi in (
        stratified_bootstrap_ci(np.random.default_rng(s).normal(size=(4, 20)), reps=300, seed=s) for s in range(40))]
    assert sum(covered) >= 32, sum(covered)  # nominal 95%: 38 expected


def result(per_task: np.ndarray, **over) -> dict:
    out = {"benchmark": "tiny", "metric": "mse", "n_tasks": per_task.shape[1], "seed": 1, "iteration": 10,
           "by_step": [], "baselines": {}, "per_task": per_task.tolist()}
    return {**out, **over}


def test_pool_runs_pools_and_refuses_different_tasks():
    rng = np.random.default_rng(0)
    curves = [rng.normal(size=(3, 8)) for _ in range(3)]  # 3 runs, steps 0..2, 8 tasks
    pooled = pool_runs([result(c) for c in curves], reps=300)
    assert pooled["n_runs"] == 3 and [s["step"] for s in pooled["by_step"]] == [0, 1, 2]
    for k, s in enumerate(pooled["by_step"]):
        matrix = np.stack([c[k] for c in curves])
        means = matrix.mean(1)
        assert s["iqm"] == pytest.approx(iqm(matrix))
        assert s["mean"] == pytest.approx(means.mean()) and (s["min"], s["max"]) == pytest.approx((means.min(),
                                                                                                   means.max()))
        assert s["iqm_ci"][0] <= s["iqm"] <= s["iqm_ci"][1]
    with pytest.raises(ValueError, match="n_tasks"):
        pool_runs([result(curves[0]), result(curves[1][:, :6])])
    with pytest.raises(ValueError, match="seed"):
        pool_runs([result(curves[0]), result(curves[1], seed=2)])
    with pytest.raises(ValueError, match="per_task"):
        pool_runs([result(curves[0]), {k: v for k, v in result(curves[1]).items() if k != "per_task"}])
    goals = [{"velocity": 0.1 * i} for i in range(8)]
    same = pool_runs([result(c) | {"tasks": goals} for c in curves[:2]], reps=50)
    assert same["by_step"] == pool_runs([result(c) for c in curves[:2]], reps=50)["by_step"]
    with pytest.raises(ValueError, match="different held-out tasks"):
        pool_runs([result(curves[0]) | {"tasks": goals}, result(curves[1]) | {"tasks": goals[::-1]}])


def test_pool_runs_gives_the_mean_success_rate_where_every_run_has_one(tmp_path):
    """Meta-World: the pooled success rate is the mean over runs and tasks (papers report means), with a
    stratified-bootstrap interval; runs without per-task success pool their returns only."""
    from metarl.evaluate import format_pooled, write_json

    rng = np.random.default_rng(3)
    returns = [rng.normal(size=(2, 6)) for _ in range(2)]
    success = [np.array([[0, 0.1, 0.2, 0, 0, 0.3], [0.5, 0.9, 1, 0.4, 0.6, 1]]),
               np.array([[0, 0, 0.1, 0, 0.2, 0.1], [0.7, 1, 1, 0.3, 0.5, 0.8]])]
    pooled = pool_runs([result(r, per_task_success=s.tolist()) for r, s in zip(returns, success)], reps=400)
    for k, row in enumerate(pooled["success_by_step"]):
        matrix = np.stack([s[k] for s in success])
        assert row["mean"] == pytest.approx(matrix.mean())
        assert (row["min"], row["max"]) == pytest.approx((matrix.mean(1).min(), matrix.mean(1).max()))
        assert row["ci"][0] <= row["mean"] <= row["ci"][1] and row["ci"][1] - row["ci"][0] > 0
    same = pool_runs([result(returns[0], per_task_success=success[0].tolist())] * 2, reps=100)
    assert all(r["ci"][0] == r["ci"][1] == r["mean"] for r in same["success_by_step"])  # no spread between runs
    assert "success rate" in format_pooled(pooled)
    assert "success_by_step" not in pool_runs([result(returns[0], per_task_success=success[0].tolist()),
                                               result(returns[1])], reps=50)
    write_json({"a": 1, "per_task": [[1.0]], "per_task_success": [[0.5]]}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1, "per_task": [[1.0]], "per_task_success": [[0.5]]}
    nested = {"per_run": [{"per_task": [[1.0, 2.0], [3.0, 4.0]], "by_step": [{"step": 0}]}], 7: (1, 2)}
    write_json(nested, tmp_path / "n.json")
    text = (tmp_path / "n.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(nested))  # int keys and tuples as json.dumps writes them
    assert "[1.0, 2.0]" in text and "[3.0, 4.0]" in text  # a run's rows one per line, not one number per line


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")

    def tiny(name: str, seed: int, iterations: int = 50):
        cfg = config_from_dict({
            "benchmark": "sinusoid", "name": name, "seed": seed, "num_iterations": iterations, "meta_batch_size": 5,
            "log_every": iterations, "checkpoint_every": iterations, "eval": {"every": iterations, "tasks": 5},
        })
        return str(train(cfg, logdir=root / f"{name}-{seed}", quiet=True))

    return tiny("tiny", 0), tiny("tiny", 1), tiny("other", 0, iterations=2)


def test_evaluate_pools_several_runs(runs, tmp_path, capsys):
    """The pooled JSON holds each run's result (``per_run``), and an earlier ``RUN/eval.json`` is left as it was:
    pooling under other settings must not overwrite a run's own evaluation."""
    run1, run2, _ = runs
    earlier = {run: (Path(run) / "eval.json").read_bytes() if (Path(run) / "eval.json").exists() else None
               for run in (run1, run2)}
    (Path(run1) / "eval.json").write_text('{"an": "earlier evaluation"}\n')
    out = tmp_path / "pooled.json"
    assert main(["evaluate", run1, run2, "--tasks", "20", "--steps", "2", "--pretrain-iterations", "0",
                 "--out", str(out)]) == 0
    assert json.loads((Path(run1) / "eval.json").read_text()) == {"an": "earlier evaluation"}
    assert not (Path(run2) / "eval.json").exists() or (Path(run2) / "eval.json").read_bytes() == earlier[run2]
    pooled = json.loads(out.read_text())
    each = pooled["per_run"]
    assert len(each) == 2 and all("tasks" not in r for r in each)
    assert pooled["runs"] == [run1, run2] and pooled["n_runs"] == 2 and pooled["n_tasks"] == 20
    for r in each:
        assert np.asarray(r["per_task"]).shape == (3, 20) and r["n_tasks"] == 20
        assert [s["mean"] for s in r["by_step"]] == pytest.approx(np.asarray(r["per_task"]).mean(1), rel=1e-5)
    assert each[0]["per_task"] != each[1]["per_task"]  # two runs, the same tasks
    for k, s in enumerate(pooled["by_step"]):
        assert s["iqm"] == pytest.approx(iqm(np.stack([r["per_task"][k] for r in each])), rel=1e-12)
        assert s["iqm_ci"][0] <= s["iqm"] <= s["iqm_ci"][1]
    printed = capsys.readouterr().out
    assert "pooled over 2 runs" in printed and printed.count("MAML") == 2


def test_evaluate_several_without_out_writes_each_runs_eval_json(runs, capsys):
    run1, run2, _ = runs
    for run in (run1, run2):
        (Path(run) / "eval.json").unlink(missing_ok=True)
    assert main(["evaluate", run1, run2, "--tasks", "6", "--steps", "1", "--pretrain-iterations", "0"]) == 0
    each = [json.loads((Path(run) / "eval.json").read_text()) for run in (run1, run2)]
    assert [r["n_tasks"] for r in each] == [6, 6] and each[0]["per_task"] != each[1]["per_task"]
    assert "pooled over 2 runs" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--plot", "p.png"], "--plot: for one run only"),
    (["--baseline", "b=x"], "--baseline: for one run only"),
    (["--figure", "f.png", "--task", "goal=1"], "--figure, --task: for one run only"),
])
def test_evaluate_several_refuses_single_run_options(runs, capsys, extra, message):
    assert main(["evaluate", runs[0], runs[1], *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metarl: error: ") and message in err and "\n" not in err


def test_evaluate_several_refuses_other_benchmarks_and_one_run_twice(runs, capsys):
    run1, _, other = runs
    assert main(["evaluate", run1, other, "--tasks", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different benchmark" in err and "other (sinusoid)" in err and "\n" not in err
    assert main(["evaluate", run1, run1 + "/", "--tasks", "2"]) == 2
    assert "give each run once" in capsys.readouterr().err


def test_result_json_keeps_per_task_on_one_line_per_step(tmp_path):
    from metarl.evaluate import write_json

    result = {"benchmark": "b", "by_step": [{"step": 0, "mean": 1.0}], "tasks": [{"v": 0.5}, {"v": 1.0}],
              "per_task": [[1.0, 2.5], [3.0, -1.0]]}
    write_json(result, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == result
    assert "[1.0, 2.5]" in text and "[3.0, -1.0]" in text
    assert '{"v": 0.5}' in text and '{"v": 1.0}' in text  # one line per task
    write_json({"a": 1}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}


def test_combine_runs_and_the_figure5_panels(tmp_path):
    """Seeds combine into the mean of their means with the interval of a mean of independent estimates; the
    panel figure draws one panel per benchmark (a run without a baseline another has is skipped for it)."""
    from metarl.evaluate import combine_runs, plot_panels

    a = [{"step": 0, "mean": -10.0, "ci95": 3.0}, {"step": 1, "mean": -4.0, "ci95": 1.0}]
    b = [{"step": 0, "mean": -20.0, "ci95": 4.0}, {"step": 1, "mean": -6.0, "ci95": 1.0}]
    assert combine_runs([a, b]) == [{"step": 0, "mean": -15.0, "ci95": 2.5},
                                    {"step": 1, "mean": -5.0, "ci95": pytest.approx(2 ** 0.5 / 2)}]
    with pytest.raises(ValueError, match="equal length"):
        combine_runs([a, b[:1]])
    run = {"benchmark": "cheetah", "metric": "return", "n_tasks": 40, "by_step": a,
           "baselines": {"random": {"by_step": b}, "pretrained": {"by_step": b}}}
    other = {**run, "benchmark": "ant", "baselines": {"random": {"by_step": b}}}
    plot_panels([run, {**run, "baselines": {"random": {"by_step": a}}}, other], tmp_path / "f5.png")
    assert (tmp_path / "f5.png").stat().st_size > 10_000


def test_figure5_draws_the_oracle_flat_and_labels_a_baseline_step_size(tmp_path, monkeypatch):
    """As in the paper's Figure 5 the oracle is its return before adapting, drawn across every step;
    a baseline adapted with its own ``--baseline-lr`` carries that lr in its label."""
    import matplotlib.axes

    from metarl.evaluate import plot_panels

    drawn: dict[str, tuple[list, list]] = {}
    real = matplotlib.axes.Axes.plot

    def recording(self, x, y, *args, **kwargs):
        drawn[kwargs.get("label")] = (list(x), list(y))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    maml = [{"step": k, "mean": -100.0 + 10 * k, "ci95": 5.0} for k in range(4)]
    oracle = [{"step": k, "mean": -50.0 - 30 * k, "ci95": 4.0} for k in range(4)]
    run = {"benchmark": "cheetah", "metric": "return", "n_tasks": 40, "by_step": maml,
           "baselines": {"oracle": {"by_step": oracle}, "pretrained": {"by_step": maml, "inner_lr": 0.02}}}
    plot_panels([run], tmp_path / "f5.png")
    assert drawn["oracle (not adapted)"] == ([0, 1, 2, 3], [-50.0] * 4)
    assert drawn["pretrained (lr 0.02)"] == ([0, 1, 2, 3], [-100.0, -90.0, -80.0, -70.0])
    assert drawn["MAML"][1] == [-100.0, -90.0, -80.0, -70.0]


def test_figure5_names_the_papers_goals_in_a_panel_title(tmp_path, monkeypatch):
    """A panel of evaluations on the paper's goals (``--task-set finn2017``) says so; others say held-out."""
    import matplotlib.axes

    from metarl.evaluate import plot_panels

    titles: list[str] = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, *a, **k: (titles.append(t), real(self, t, *a, **k))[1])
    maml = [{"step": k, "mean": float(k), "ci95": 1.0} for k in range(2)]
    run = {"benchmark": "cheetah", "metric": "return", "n_tasks": 40, "by_step": maml, "baselines": {}}
    plot_panels([{**run, "task_set": "finn2017"}, {**run, "benchmark": "ant"}], tmp_path / "f5.png")
    assert titles == ["cheetah\nthe paper's 40 tasks, 1 run", "ant\n40 held-out tasks, 1 run"]


def _official(rates: dict[str, float], *, iteration: int = 20, ret: float = 100.0, **settings) -> dict:
    base = {"num_evals": 10, "adaptation_steps": 1, "adaptation_episodes": 10, "evaluation_episodes": 3,
            "meta_batch_size": 20, "total_tasks_per_cls": 40, "max_episode_steps": None, "seed": 0,
            "deterministic": False, "vector_strategy": "sync", "iteration": iteration}
    return {"benchmark": "ML10", "success_rate": float(np.mean(list(rates.values()))), "return": ret,
            "success_by_env": rates, "settings": {**base, **settings}}


def test_pool_official_matches_an_episode_by_episode_bootstrap():
    """Meta-World's official evaluations pooled over runs: the mean of the runs' success rates, and an
    interval that agrees with resampling each run's and env's 30 counted episodes one by one."""
    from metarl.rl.metaworld_agent import pool_official

    results = [_official({"a": 25 / 30, "b": 10 / 30}, ret=300.0),
               _official({"a": 26 / 30, "b": 3 / 30}, iteration=18, ret=250.0, vector_strategy="async")]
    pooled = pool_official(results, reps=20000, seed=1)
    assert pooled["success_rate"] == pytest.approx(np.mean([r["success_rate"] for r in results]))
    assert pooled["success_rates"] == pytest.approx([35 / 60, 29 / 60])
    assert pooled["min"] == pytest.approx(29 / 60) and pooled["max"] == pytest.approx(35 / 60)
    assert pooled["success_by_env"] == pytest.approx({"a": 51 / 60, "b": 13 / 60})
    assert pooled["return"] == 275.0 and pooled["iterations"] == [20, 18]
    assert "iteration" not in pooled["settings"] and pooled["bootstrap"]["episodes_per_env"] == 30

    # the same bootstrap, written out: each (run, env) stratum's 30 episodes drawn with replacement
    rng = np.random.default_rng(7)
    episodes = [[np.r_[np.ones(k), np.zeros(30 - k)] for k in run] for run in ([25, 10], [26, 3])]
    stats = np.mean([np.mean([ep[rng.integers(0, 30, size=(20000, 30))].mean(axis=1) for ep in run], axis=0)
                     for run in episodes], axis=0)
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert pooled["ci"] == pytest.approx([lo, hi], abs=0.01)
    assert pooled["ci"][0] < pooled["success_rate"] < pooled["ci"][1]


def test_pool_official_closed_cases_and_refusals():
    from metarl.rl.metaworld_agent import pool_official

    solved = pool_official([_official({"reach-v3": 1.0}), _official({"reach-v3": 1.0})])
    assert solved["success_rate"] == 1.0 and solved["ci"] == [1.0, 1.0]
    one = pool_official([_official({"push-v3": 0.5})], reps=20000)  # Binomial(30, 0.5): sd 0.0913
    assert one["ci"][0] == pytest.approx(0.5 - 1.96 * 0.0913, abs=0.02)
    assert one["ci"][1] == pytest.approx(0.5 + 1.96 * 0.0913, abs=0.02)
    with pytest.raises(ValueError, match=r"adaptation_steps \(1 vs 3\)"):
        pool_official([_official({"a": 0.5}), _official({"a": 0.5}, adaptation_steps=3)])
    with pytest.raises(ValueError, match="test envs differ"):
        pool_official([_official({"a": 0.5}), _official({"b": 0.5})])
    with pytest.raises(ValueError, match="not counts of 30 episodes"):
        pool_official([_official({"a": 0.51})])


def _paper_data_script():
    return load_experiment("paper_figure5_data")


def test_the_paper_figure5_data_script_summarises_the_authors_pickles(tmp_path):
    """From pickles laid out as the authors' ``icml/`` folder (a ``[steps, tasks]`` array under
    ``task_avg_returns``; py2 pickles, hence latin1): per step the mean, 1.96 standard errors and the IQM over
    the tasks, computed here by hand; the point robot's pretrained policy is its ``maml0`` file."""
    import pickle

    script = _paper_data_script()
    rng = np.random.default_rng(0)
    maml = rng.normal(-100, 20, size=(4, 40))
    oracle = rng.normal(-50, 5, size=(1, 40))
    point_pre = rng.normal(-40, 3, size=(5, 40))
    for name, array in [("cheetah_results_maml", maml), ("cheetah_results_oracle", oracle),
                        ("point_results_maml0", point_pre)]:
        with open(tmp_path / f"icml_{name}.pkl", "wb") as f:
            pickle.dump({"task_avg_returns": array.tolist()}, f, protocol=2)
    out = tmp_path / "ref.json"
    assert script.main([str(tmp_path), str(out)]) == 0
    data = json.loads(out.read_text())["benchmarks"]
    rows = data["halfcheetah_vel"]["maml"]["by_step"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for k, r in enumerate(rows):
        kept = np.sort(maml[k])[10:30]  # 40 tasks: the middle half
        assert r["mean"] == pytest.approx(maml[k].mean(), abs=0.006)
        assert r["ci95"] == pytest.approx(1.96 * maml[k].std(ddof=1) / np.sqrt(40), abs=0.006)
        assert r["iqm"] == pytest.approx(kept.mean(), abs=0.006)
    assert np.allclose(data["halfcheetah_vel"]["maml"]["per_task"], maml, atol=0.006)  # [step][task], task order kept
    assert len(data["halfcheetah_vel"]["oracle"]["by_step"]) == 1
    assert "pretrained" not in data["halfcheetah_vel"]  # no file, no entry
    assert len(data["navigation2d"]["pretrained"]["by_step"]) == 4  # 0..3 of its 5 steps
    assert data["navigation2d"]["pretrained"]["by_step"][2]["mean"] == pytest.approx(point_pre[2].mean(), abs=0.006)
    assert data["ant_dir"] == {"protocol": script.PROTOCOL["ant_dir"]}


def test_paper_reference_finds_the_benchmark_and_figure5_draws_it(tmp_path, monkeypatch):
    """A run's benchmark name finds the paper's curves (a variant by its prefix, the longest match; none for
    AntGoal or a name that only shares a prefix), and ``plot_panels(paper=True)`` draws the shipped means."""
    import matplotlib.axes

    from metarl.evaluate import PAPER_FIGURE5, paper_reference, plot_panels

    shipped = json.loads(PAPER_FIGURE5.read_text())["benchmarks"]
    assert set(shipped) == {"halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "navigation2d"}
    for bench in ("halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir"):
        assert [r["step"] for r in shipped[bench]["maml"]["by_step"]] == [0, 1, 2, 3]
        assert all(shipped[bench][p]["n_tasks"] == 40 for p in ("maml", "pretrained", "random", "oracle"))
    assert paper_reference("halfcheetah_vel") is not None
    assert paper_reference("halfcheetah_vel_promp") == shipped["halfcheetah_vel"]
    assert paper_reference("navigation2d_lvc") == shipped["navigation2d"]
    assert paper_reference("ant_goal") is None and paper_reference("ant") is None
    assert paper_reference("ant_velocity") is None and paper_reference("sinusoid") is None

    drawn: dict[str, list] = {}
    real = matplotlib.axes.Axes.plot

    def recording(self, x, y, *args, **kwargs):
        drawn[kwargs.get("label")] = list(y)
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    ours = [{"step": k, "mean": -100.0 + 10 * k, "ci95": 5.0} for k in range(4)]
    run = {"benchmark": "halfcheetah_vel", "metric": "return", "n_tasks": 40, "by_step": ours,
           "baselines": {"pretrained": {"by_step": ours}}}
    plot_panels([run], tmp_path / "plain.png")
    assert not [label for label in drawn if label.startswith("paper")]
    plot_panels([run], tmp_path / "f5.png", paper=True)
    assert drawn["paper: MAML"] == [r["mean"] for r in shipped["halfcheetah_vel"]["maml"]["by_step"]]
    assert drawn["paper: pretrained"] == [r["mean"] for r in shipped["halfcheetah_vel"]["pretrained"]["by_step"]]


def test_versus_paper_pairs_our_returns_with_the_papers_goal_for_goal(tmp_path, capsys):
    """An evaluation on the paper's goals that scores each goal 5 above the paper's: the paired difference is
    +5.0 with no spread; two runs (+5 and +1) average goal by goal (+3.0); anything else is refused."""
    from metarl.evaluate import paper_reference

    script = load_experiment("versus_paper")
    paper = np.asarray(paper_reference("halfcheetah_vel")["maml"]["per_task"])
    files = []
    for i, shift in enumerate((5.0, 1.0)):
        result = {"benchmark": "halfcheetah_vel", "task_set": "finn2017", "per_task": (paper + shift).tolist(),
                  "baselines": {}}
        files.append(tmp_path / f"run{i}" / "eval.json")
        files[-1].parent.mkdir()
        files[-1].write_text(json.dumps(result))
    assert script.main([str(files[0])]) == 0
    out = capsys.readouterr().out
    assert "+5.0 ±  0.0" in out and f"{paper[1].mean() + 5:.1f}" in out and "run0" in out
    assert script.main([str(f) for f in files]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "mean of runs" in out and "+3.0 ±  0.0" in out and "run1" in out
    pooled = tmp_path / "pooled.json"  # `metarl evaluate RUN1 RUN2 --out`: the same two runs inside one file
    pooled.write_text(json.dumps({"runs": ["results/run0", "results/run1/checkpoints/best.pt"],
                                  "per_run": [json.loads(f.read_text()) for f in files]}))
    assert script.main([str(pooled)]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "+3.0 ±  0.0" in out and "run0" in out and "run1" in out
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "halfcheetah_vel", "per_task": paper.tolist(), "baselines": {}}))
    assert script.main([str(other)]) == 2
    assert "--task-set finn2017" in capsys.readouterr().err
