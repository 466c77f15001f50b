"""Fault injection: nothing lost, nothing silent.

One owner per run directory, no reuse of a directory holding a run, no directory left by a failed
start, non-finite steps rejected (and a diverging run stopped with its checkpoints untouched), every
user-facing error one line with exit code 2, checked inputs of ``Run.adapt``, and runs killed with
SIGKILL at random moments that always resume.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import metarl.training
from metarl.api import Run
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict, load_config, parse_overrides
from metarl.maml import detach_params
from metarl.training import RunLock, TrainingDiverged, train
from tests import serving

torch.set_num_threads(1)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sinusoid(**over: Any) -> dict[str, Any]:
    """A tiny sinusoid config (milliseconds per iteration) checkpointing every iteration."""
    return _merge({
        "benchmark": "sinusoid", "name": "tiny", "seed": 3, "num_iterations": 6, "meta_batch_size": 5,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 2, "tasks": 10, "test_tasks": 20},
        "inner": {"test_steps": 3}, "model": {"hidden": [16, 16]},
    }, over)


def navigation(**over: Any) -> dict[str, Any]:
    """A tiny 2D-navigation MAML-TRPO config (a fraction of a second per iteration)."""
    return _merge({
        "benchmark": "rl", "name": "nav", "num_iterations": 4, "meta_batch_size": 4, "log_every": 1,
        "checkpoint_every": 1, "eval": {"every": 100, "tasks": 2, "test_tasks": 2},
        "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 4}, "policy": {"hidden": [16]},
        "sampler": {"num_workers": 1}, "update_threads": 1,
    }, over)


def write(tmp_path: Path, data: dict[str, Any], name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str, only: bool = True) -> str:
    """Run ``metarl ARGV``; check exit code 2 and one ``metarl: error:`` line (the last, or the only
    one with ``only``), with no traceback; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("metarl: error: "), err
    assert sum(ln.startswith("metarl: error:") for ln in lines) == 1, err
    if only:
        assert len(lines) == 1, err
    assert len(lines[-1]) < 1200, lines[-1]
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])
    return lines[-1]


def finite_state(path: Path) -> bool:
    learner = load_checkpoint(path)["learner"]
    return all(bool(torch.isfinite(t).all()) for t in learner["model"].values())


# ------------------------------------------------------------------ 1. one owner per run directory
def test_second_train_on_a_locked_logdir_is_refused(tmp_path, capsys):
    cfg = write(tmp_path, sinusoid())
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        error_line(capsys, ["train", str(cfg), "--logdir", str(run)], "is in use by another metarl run",
                   f"pid {os.getpid()}")
        assert not (run / "config.yaml").exists()
    train(load_config(cfg), logdir=run, quiet=True)  # the lock is free again
    assert load_checkpoint(run)["iteration"] == 6
    with RunLock(run):  # train released it on return
        error_line(capsys, ["train", "--resume", str(run)], "is in use")


def test_two_concurrent_trains_one_logdir(tmp_path, capsys):
    cfg = write(tmp_path, sinusoid(num_iterations=1_000_000, log_every=10, checkpoint_every=1_000_000,
                                   eval={"every": 1_000_000}))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "metarl", "train", str(cfg), "--logdir", str(run)],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while not (run / "metrics.csv").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (run / "metrics.csv").exists()
        error_line(capsys, ["train", str(cfg), "--logdir", str(run)], "is in use by another metarl run",
                   f"pid {proc.pid}")
        error_line(capsys, ["train", str(cfg), "--logdir", str(run), "--overwrite"], "is in use")
        error_line(capsys, ["train", "--resume", str(run)], "is in use")
        assert (run / "metrics.csv").exists() and (run / "config.yaml").exists()  # --overwrite deleted nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    n = load_checkpoint(run)["iteration"]
    train(resume=run, quiet=True, stop_after=1)  # the owner has exited: its lock went with it
    assert load_checkpoint(run)["iteration"] == n + 1


def test_a_directory_holding_a_run_is_reused_only_with_resume_or_overwrite(tmp_path, capsys):
    cfg = write(tmp_path, sinusoid(num_iterations=2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("benchmark: sinusoid\n")  # a run that never wrote a checkpoint
    (run / "notes.txt").write_text("old")
    error_line(capsys, ["train", str(cfg), "--logdir", str(run)], "already holds a run", "--resume", "--overwrite")
    assert (run / "config.yaml").read_text() == "benchmark: sinusoid\n"
    assert main(["train", str(cfg), "--logdir", str(run), "--overwrite"]) == 0
    capsys.readouterr()
    assert not (run / "notes.txt").exists() and load_checkpoint(run)["iteration"] == 2
    error_line(capsys, ["train", str(cfg), "--logdir", str(run)], "already holds a run")
    error_line(capsys, ["train", "--resume", str(run), "--overwrite"], "pass one of them")
    # an existing empty directory (or one with other files only) is fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "README").write_text("mine")
    assert main(["train", str(cfg), "--logdir", str(other)]) == 0
    assert (other / "README").read_text() == "mine"


def test_failed_start_leaves_no_run_directory(tmp_path, capsys):
    rl = write(tmp_path, navigation(), "rl.yaml")
    run = tmp_path / "deep" / "run"
    error_line(capsys, ["train", str(rl), "--set", "env.id=Nope-v0", "--logdir", str(run)],
               "env.id: cannot make 'Nope-v0'", "known ids:", "metarl/Navigation2D-v0")
    assert not (tmp_path / "deep").exists()
    # data checked before anything is written, too
    cls = write(tmp_path, {"benchmark": "classification", "dataset": {"root": str(tmp_path / "nodata")}}, "cls.yaml")
    error_line(capsys, ["train", str(cls), "--logdir", str(run)], "images_background")
    assert not (tmp_path / "deep").exists()
    # an existing directory stays, and gets no config.yaml
    run.mkdir(parents=True)
    error_line(capsys, ["train", str(rl), "--set", "env.id=nons/Nope-v0", "--logdir", str(run)], "known ids:")
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()


def test_stale_tmp_files_are_removed_at_the_next_start(tmp_path):
    run = train(config_from_dict(sinusoid()), logdir=tmp_path / "run", quiet=True, stop_after=2)
    stale = [run / "checkpoints" / ".last.pt.k1ll3d.tmp", run / "checkpoints" / ".best.pt.x.tmp",
             run / ".metrics.csv.y.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    train(resume=run, quiet=True, stop_after=1)
    assert not any(p.exists() for p in stale)
    assert load_checkpoint(run)["iteration"] == 3


# ------------------------------------------------------------------ 2. non-finite guard
def test_huge_inner_lr_stops_with_exit_2_and_no_nan_checkpoint(tmp_path, capsys):
    # the paper's network and seed 0: with inner.lr=1e6 the first three meta-steps overflow (with other
    # seeds a finite step, of loss ~1e33, can come between the rejected ones)
    paper = sinusoid(seed=0, num_iterations=12, model={"hidden": [40, 40]})
    cfg = write(tmp_path, paper)
    fresh = tmp_path / "fresh"
    line = error_line(capsys, ["train", str(cfg), "--logdir", str(fresh), "--set", "inner.lr=1e6"],
                      "3 meta-steps in a row were rejected", "inner.lr=1000000.0", "optim.lr=0.001",
                      "likely too large", only=False)
    assert "no checkpoint was written" in line
    assert not (fresh / "checkpoints" / "last.pt").exists() and not (fresh / "checkpoints" / "best.pt").exists()
    rows = (fresh / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[1] == "guard/rejected" and len(rows) == 4

    # a good run, resumed with the bad step size: its checkpoints are not touched (a step in between
    # may be finite, and is kept in memory: only a rejected one is undone)
    good = train(config_from_dict({**paper, "checkpoint_every": 100}), logdir=tmp_path / "good", quiet=True,
                 stop_after=4)
    before = {n: (good / "checkpoints" / n).read_bytes() for n in ("last.pt", "best.pt")}
    line = error_line(capsys, ["train", "--resume", str(good), "--set", "inner.lr=1e6"],
                      "checkpoints/last.pt keeps iteration 4", only=False)
    assert "is likely too large" in line
    assert {n: (good / "checkpoints" / n).read_bytes() for n in before} == before
    assert finite_state(good / "checkpoints" / "last.pt") and finite_state(good / "checkpoints" / "best.pt")
    train(resume=good, quiet=True)  # and it continues with its own step size
    assert load_checkpoint(good)["iteration"] == 12 and finite_state(good / "checkpoints" / "last.pt")


def _flaky(monkeypatch: pytest.MonkeyPatch, bad: set[int], extra: dict[str, float] | None = None) -> None:
    """Learners whose ``train_step`` raises FloatingPointError (as TRPO's does on a non-finite
    surrogate) at the iterations in ``bad``, and adds ``extra`` to the metrics of the others."""
    real = metarl.training.build_learner

    def build(cfg: Any) -> Any:
        learner = real(cfg)
        step = learner.train_step

        def train_step(it: int, log: bool) -> dict[str, float]:
            if it in bad:
                step(it, log)  # the step ran (parameters moved) before the surrogate was found non-finite
                raise FloatingPointError("trust_region_step: non-finite surrogate (nan) or gradient norm (nan)")
            return {**step(it, log), **(extra or {})}

        learner.train_step = train_step
        return learner

    monkeypatch.setattr(metarl.training, "build_learner", build)


def test_floating_point_error_is_a_rejected_step(tmp_path, monkeypatch, capsys):
    _flaky(monkeypatch, {2, 4, 5})
    run = train(config_from_dict(sinusoid(num_iterations=8)), logdir=tmp_path / "run", quiet=True)
    err = capsys.readouterr().err
    assert err.count("meta-step rejected (FloatingPointError: trust_region_step") == 3
    assert "(2/3 in a row stop the run)" in err and "(3/3" not in err
    lines = (run / "metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("guard/rejected")
    assert [r.split(",")[0] for r in lines[1:] if r.split(",")[col] == "1"] == ["2", "4", "5"]
    assert load_checkpoint(run)["iteration"] == 8 and finite_state(run / "checkpoints" / "last.pt")


def test_a_rejected_step_restores_the_last_good_state(tmp_path, monkeypatch):
    _flaky(monkeypatch, {2})
    cfg = config_from_dict(sinusoid(num_iterations=2, inner={"learn_lr": True}))
    ref = train(cfg, logdir=tmp_path / "ref", quiet=True, stop_after=1)
    run = train(cfg, logdir=tmp_path / "run", quiet=True)
    a, b = load_checkpoint(ref), load_checkpoint(run)
    assert (a["iteration"], b["iteration"]) == (1, 2)
    for part in ("model", "lr_params"):
        for k in a["learner"][part]:
            torch.testing.assert_close(a["learner"][part][k], b["learner"][part][k], rtol=0, atol=0)
    sa, sb = a["learner"]["optimizer"]["state"], b["learner"]["optimizer"]["state"]
    for i in sa:
        torch.testing.assert_close(sa[i]["exp_avg"], sb[i]["exp_avg"], rtol=0, atol=0)
    # the random streams moved on: the retry draws other tasks
    assert not torch.equal(a["learner"]["rng"]["torch"], b["learner"]["rng"]["torch"])


def test_floating_point_errors_in_a_row_stop_the_run_checkpoints_untouched(tmp_path, monkeypatch, capsys):
    _flaky(monkeypatch, {3, 4, 5})
    with pytest.raises(TrainingDiverged, match=r"stopped at iteration 5: 3 meta-steps in a row.*FloatingPointError"
                                               r".*inner.lr=0.01, optim.lr=0.001.*last.pt keeps iteration 2"):
        train(config_from_dict(sinusoid()), logdir=tmp_path / "run", quiet=True)
    state = load_checkpoint(tmp_path / "run")
    assert state["iteration"] == 2 and finite_state(tmp_path / "run" / "checkpoints" / "last.pt")
    # the run directory is free again
    with RunLock(tmp_path / "run"):
        pass


def test_trpo_line_search_rejected_5_times_warns_once(tmp_path, monkeypatch, capsys):
    _flaky(monkeypatch, set(), {"trpo/accepted": 0.0})
    train(config_from_dict(sinusoid(num_iterations=12)), logdir=tmp_path / "run", quiet=True)
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "TRPO line search rejected every step" in ln]
    assert len(warnings) == 1 and "iteration 5" in warnings[0] and "5 iterations in a row" in warnings[0]


def test_rl_huge_inner_lr_is_rejected_and_stops(tmp_path, capsys):
    cfg = write(tmp_path, navigation())
    error_line(capsys, ["train", str(cfg), "--logdir", str(tmp_path / "run"), "--set", "inner.lr=1e6"],
               "3 meta-steps in a row were rejected", "inner.lr=1000000.0, trpo.max_kl=0.01", only=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "inf"])
def test_non_finite_step_sizes_fail_validation(tmp_path, capsys, value):
    with pytest.raises(ConfigError, match=r"inner.lr: got .*; allowed: a number > 0 \(finite\)"):
        config_from_dict({"benchmark": "sinusoid"}, parse_overrides([f"inner.lr={value}"]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"benchmark: sinusoid\ninner:\n  lr: {value}\n")
    error_line(capsys, ["train", str(cfg), "--logdir", str(tmp_path / "run")], "inner.lr: got")
    error_line(capsys, ["train", write(tmp_path, sinusoid(), "ok.yaml").as_posix(), "--set", f"optim.lr={value}"],
               "optim.lr: got")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 3. one-line errors, exit code 2
def test_dataset_errors_are_one_line(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    (root / "omniglot" / "images_background.zip").write_bytes(os.urandom(4000))
    cls = {"benchmark": "classification", "dataset": {"root": str(root)}}
    error_line(capsys, ["train", str(write(tmp_path, cls)), "--logdir", str(tmp_path / "run")],
               "is not a readable zip archive")
    # a CSV of 10 KB on one line: its content is cut, not printed
    mini = root / "miniimagenet"
    mini.mkdir()
    for split in ("train", "val", "test"):
        (mini / f"{split}.csv").write_text("x," * 5000)
    cls = {"benchmark": "classification", "dataset": {"root": str(root), "name": "miniimagenet"},
           "model": {"filters": 32}}
    line = error_line(capsys, ["train", str(write(tmp_path, cls)), "--logdir", str(tmp_path / "run")],
                      "train.csv: expected a header line", "characters cut")
    assert len(line) < 600
    (mini / "train.csv").write_bytes(os.urandom(10_000))
    error_line(capsys, ["train", str(write(tmp_path, cls)), "--logdir", str(tmp_path / "run")],
               "is not a UTF-8 CSV file")
    assert not (tmp_path / "run").exists()


def test_download_and_checksum_errors_are_one_line(tmp_path, capsys, monkeypatch):
    cls = write(tmp_path, {"benchmark": "classification",
                           "dataset": {"root": str(tmp_path / "data"), "download": True}})
    monkeypatch.setattr("metarl.fewshot.download.RETRIES", 0)
    served = tmp_path / "served"
    served.mkdir()
    with serving(served) as url:
        monkeypatch.setenv("METARL_OMNIGLOT_URL", url)
        # only=False: pooch's "Downloading file ..." line comes first
        error_line(capsys, ["train", str(cls), "--logdir", str(tmp_path / "run")], "could not download", "404",
                   only=False)
        (served / "images_background.zip").write_bytes(b"\x89PNG" + os.urandom(2000))
        error_line(capsys, ["train", str(cls), "--logdir", str(tmp_path / "run")], "(2004 bytes) does not match the "
                   "expected ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640 (9464212 bytes)",
                   only=False)
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "data").rglob("*.part"))


def test_logdir_that_is_a_file_or_not_writable(tmp_path, capsys):
    cfg = str(write(tmp_path, sinusoid()))
    afile = tmp_path / "afile"
    afile.write_text("x")
    error_line(capsys, ["train", cfg, "--logdir", str(afile)], "is a file")
    error_line(capsys, ["train", cfg, "--logdir", str(afile / "run")], "lies below the file")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        error_line(capsys, ["train", cfg, "--logdir", str(ro / "run")], "is not writable")
        assert not (ro / "run").exists()
    finally:
        ro.chmod(0o755)


def test_config_errors_are_one_line(tmp_path, capsys):
    cfg = str(write(tmp_path, sinusoid()))
    error_line(capsys, ["train", cfg, "--set", "model.hidden=[40,"], "--set 'model.hidden=[40,': the value is "
               "not valid YAML")
    error_line(capsys, ["train", cfg, "--set", "model.hidden=[-3]"], "model.hidden: got [-3]; allowed: a list of "
               "integers > 0")
    error_line(capsys, ["train", cfg, "--set", "task.amplitude=[0.1,2,5]"], "task.amplitude: got [0.1, 2, 5]",
               "low <= high")
    error_line(capsys, ["train", cfg, "--set", "task.phase=[3,1]"], "task.phase: got [3, 1]")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    error_line(capsys, ["train", str(empty)], f"config file '{empty}' is empty")


def test_exponent_floats_without_a_dot_parse_as_numbers(tmp_path):
    cfg = config_from_dict({"benchmark": "sinusoid"}, parse_overrides(["inner.lr=1e-5", "optim.lr=3E-4"]))
    assert cfg.inner.lr == 1e-5 and cfg.optim.lr == 3e-4
    p = tmp_path / "c.yaml"
    p.write_text("benchmark: sinusoid\ninner:\n  lr: 1e-5\ntask:\n  amplitude: [1e-1, 5]\n")
    cfg = load_config(p)
    assert cfg.inner.lr == 1e-5 and isinstance(cfg.inner.lr, float) and cfg.task.amplitude == [0.1, 5.0]
    with pytest.raises(ConfigError, match=r"inner.lr: got 'fast'; expected a number"):
        config_from_dict({"benchmark": "sinusoid"}, parse_overrides(["inner.lr=fast"]))


def test_resume_with_another_model_shape_keeps_config_yaml(tmp_path, capsys):
    run = train(config_from_dict(sinusoid()), logdir=tmp_path / "run", quiet=True, stop_after=2)
    before = (run / "config.yaml").read_bytes(), (run / "checkpoints" / "last.pt").read_bytes()
    error_line(capsys, ["train", "--resume", str(run), "--set", "model.hidden=[20]"],
               "does not fit the model of its config with --set model.hidden", "config.yaml was left as it was")
    assert ((run / "config.yaml").read_bytes(), (run / "checkpoints" / "last.pt").read_bytes()) == before


def test_evaluate_names_the_one_bad_count(tmp_path, capsys):
    run = train(config_from_dict(sinusoid()), logdir=tmp_path / "run", quiet=True, stop_after=1)
    line = error_line(capsys, ["evaluate", str(run), "--steps", "-1"], "--steps: got -1", "e.g. --steps 3")
    assert "--tasks" not in line
    line = error_line(capsys, ["evaluate", str(run), "--tasks", "0"], "--tasks: got 0", "e.g. --tasks 40")
    assert "--steps" not in line


@pytest.mark.ray  # runs with the Ray extra (make test-ray)
def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path, navigation(sampler={"backend": "ray", "address": f"127.0.0.1:{port}"}))
    error_line(capsys, ["train", str(cfg), "--logdir", str(tmp_path / "run")],
               f"cannot reach the Ray cluster at '127.0.0.1:{port}'")
    assert not (tmp_path / "run").exists()


def test_metarl_debug_re_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("METARL_DEBUG", "1")
    with pytest.raises(ConfigError, match="inner.lr: got -1"):
        main(["train", str(write(tmp_path, sinusoid())), "--set", "inner.lr=-1"])


# ------------------------------------------------------------------ 4. Run.adapt checks its inputs
def sinusoid_run() -> Run:
    from metarl.fewshot.build import sinusoid_module

    cfg = config_from_dict(sinusoid())
    module = sinusoid_module(cfg)
    return Run(module, detach_params(dict(module.named_parameters())), cfg, cfg.inner.lr, 0)


def classification_run() -> Run:
    from metarl.fewshot.models import build_classifier

    cfg = config_from_dict({"benchmark": "classification"})
    module = build_classifier("conv4", (1, 28, 28), 5, filters=4)
    return Run(module, detach_params(dict(module.named_parameters())), cfg, cfg.inner.lr, 0)


def test_run_adapt_regression_converts_and_checks_shapes():
    run = sinusoid_run()
    x = np.linspace(-5, 5, 10).reshape(10, 1)  # float64 numpy
    y = np.sin(x)
    fast = run.adapt(x, y, steps=2)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in fast.values())
    assert run.predict(fast, x).shape == (10, 1)
    assert not torch.equal(fast["0.weight"], run.params["0.weight"])
    with pytest.raises(ValueError, match=r"y has shape \[10\]; pass y of shape \[K, 1\].*broadcast"):
        run.adapt(x, y[:, 0])
    with pytest.raises(ValueError, match=r"x has shape \[10\]; expected \[K, 1\]"):
        run.adapt(x[:, 0], y)
    with pytest.raises(ValueError, match=r"x has shape \[10, 2\]; expected \[K, 1\]"):
        run.adapt(np.hstack([x, x]), y)
    with pytest.raises(ValueError, match=r"y has shape \[9, 1\]; expected \[K, 1\] with the K = 10 of x"):
        run.adapt(x, y[:9])
    with pytest.raises(TypeError, match=r"adapts on \(x_support, y_support\)"):
        run.adapt(x)


def test_run_adapt_classification_checks_labels():
    run = classification_run()
    x = np.random.default_rng(0).random((5, 1, 28, 28))  # float64 numpy
    y = np.arange(5)
    fast = run.adapt(x, y, steps=1)
    assert all(v.dtype == torch.float32 for v in fast.values())
    with pytest.raises(ValueError, match=r"y has dtype torch.float64; expected integer class labels \[K\]"):
        run.adapt(x, y.astype(np.float64))
    with pytest.raises(ValueError, match=r"y has shape \[5, 1\]; expected integer class labels \[K\]"):
        run.adapt(x, y.reshape(5, 1))
    with pytest.raises(ValueError, match=r"labels 0..7; expected 0..4"):
        run.adapt(x, np.array([0, 1, 2, 3, 7]))
    with pytest.raises(ValueError, match=r"x has shape \[5, 28, 28\]; expected \[K, 1, 28, 28\]"):
        run.adapt(x[:, 0], y)
    with pytest.raises(ValueError, match=r"x has dtype torch.uint8"):
        run.adapt((x * 255).astype(np.uint8), y)


# ------------------------------------------------------------------ 5. SIGKILL at random moments
def kill_and_resume(tmp_path: Path, delay: float) -> None:
    """Kill a sinusoid run that checkpoints every iteration ``delay`` s after its first checkpoint and first
    metrics row (waiting for both keeps a loaded machine from killing it before metrics.csv exists); last.pt
    loads, holds finite parameters, and --resume continues with no .tmp left behind and metrics.csv intact."""
    cfg = write(tmp_path, sinusoid(num_iterations=1_000_000, log_every=7, eval={"every": 5}))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "metarl", "train", str(cfg), "--logdir", str(run)],
                            env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not ((run / "checkpoints" / "last.pt").exists() and (run / "metrics.csv").exists()) \
                and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    state = load_checkpoint(run)
    n = state["iteration"]
    assert n >= 1 and finite_state(run / "checkpoints" / "last.pt"), f"delay {delay}"
    if (run / "checkpoints" / "best.pt").exists():
        load_checkpoint(run / "checkpoints" / "best.pt")
    assert main(["train", "--resume", str(run), "--time-limit", "0.0001"]) == 0, f"delay {delay}"
    assert load_checkpoint(run)["iteration"] >= n + 1
    assert not list(run.rglob("*.tmp")), f"delay {delay}"
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("iteration,")


_DELAYS = random.Random(20240611)
FAST_DELAYS = [round(_DELAYS.uniform(0.0, 1.0), 3) for _ in range(2)]
SLOW_DELAYS = [round(_DELAYS.uniform(0.0, 3.0), 3) for _ in range(5)]


@pytest.mark.parametrize("delay", FAST_DELAYS)
def test_sigkill_at_a_random_moment_then_resume(tmp_path, delay):
    kill_and_resume(tmp_path, delay)


@pytest.mark.slow
@pytest.mark.parametrize("delay", SLOW_DELAYS)
def test_sigkill_at_more_random_moments_then_resume(tmp_path, delay):
    kill_and_resume(tmp_path, delay)


def test_a_closed_output_pipe_ends_quietly(monkeypatch):
    """`metarl configs | head`: the reader closing the pipe is not an error (exit 0, no traceback)."""
    import os

    from metarl.cli import main

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write raises BrokenPipeError
    out = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr("sys.stdout", out)
    try:
        assert main(["configs"]) == 0
    finally:
        out.close()


def test_ctrl_c_outside_the_checkpointing_stop_is_one_line(monkeypatch, capsys):
    """A second Ctrl-C in training (the first asks for a checkpoint and a stop) or one during another
    command ends with exit 130 and one line, not a KeyboardInterrupt traceback."""
    from metarl import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_configs", interrupted)
    assert cli.main(["configs"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("metarl: stopped (Ctrl-C)") and "--resume" in err and "\n" not in err
