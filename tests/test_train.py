"""End to end, in process: train, evaluate, interrupt and resume, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.training import train

torch.set_num_threads(1)


def small_cfg(**over):
    data = {
        "benchmark": "sinusoid", "name": "tiny", "seed": 3, "num_iterations": 40, "meta_batch_size": 5,
        "log_every": 10, "checkpoint_every": 20, "eval": {"every": 20, "tasks": 10, "test_tasks": 20},
        "inner": {"test_steps": 3},
    }
    data.update(over)
    return config_from_dict(data)


def test_train_then_evaluate_writes_the_contract(tmp_path, capsys):
    run = train(small_cfg(), logdir=tmp_path / "run", quiet=True)
    for f in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / f).is_file(), f
    assert list(run.glob("events.out.tfevents.*"))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"iteration", "train/loss_post", "val/mse_pre", "val/mse_post"} <= set(header)
    out = tmp_path / "e.json"
    code = main(["evaluate", str(run), "--tasks", "20", "--steps", "3", "--out", str(out),
                 "--plot", str(tmp_path / "p.png"), "--pretrain-iterations", "20"])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["benchmark"] == "tiny" and res["metric"] == "mse" and res["n_tasks"] == 20
    assert [s["step"] for s in res["by_step"]] == [0, 1, 2, 3]
    assert all(set(s) == {"step", "mean", "ci95"} for s in res["by_step"])
    assert set(res["baselines"]) == {"random", "pretrained"}
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "MAML" in capsys.readouterr().out


def final_params(run: Path) -> dict:
    return load_checkpoint(run)["learner"]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = small_cfg(inner={"learn_lr": True})  # optimiser state of the Meta-SGD lr too
    full = train(cfg, logdir=tmp_path / "full", quiet=True)
    part = train(cfg, logdir=tmp_path / "part", quiet=True, stop_after=13)
    assert load_checkpoint(part)["iteration"] == 13
    train(resume=part, quiet=True)
    a, b = final_params(full), final_params(part)
    assert load_checkpoint(part)["iteration"] == 40
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    for k in a["lr_params"]:
        torch.testing.assert_close(a["lr_params"][k], b["lr_params"][k], rtol=0, atol=0)
    rows_full = (full / "metrics.csv").read_text().splitlines()
    rows_part = (part / "metrics.csv").read_text().splitlines()
    assert len(rows_full) == len(rows_part)


def test_a_finished_run_extended_by_resume_with_a_larger_budget(tmp_path, capsys):
    """``metarl train --resume RUN --set num_iterations=N``: a finished 20-iteration run continues to N,
    its config.yaml says N, and a later plain --resume finds it finished."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("benchmark: sinusoid\nname: tiny\nseed: 3\nnum_iterations: 20\nmeta_batch_size: 5\n"
                   "log_every: 10\ncheckpoint_every: 10\neval: {every: 10, tasks: 10, test_tasks: 20}\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--logdir", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--set", "num_iterations=30"]) == 0
    assert load_checkpoint(run)["iteration"] == 30
    assert "num_iterations: 30" in (run / "config.yaml").read_text()
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [10, 20, 30]
    assert main(["train", "--resume", str(run)]) == 0  # finished: nothing more
    assert load_checkpoint(run)["iteration"] == 30
    assert len((run / "metrics.csv").read_text().splitlines()) == 4


def test_sigterm_writes_checkpoint_and_exits_zero(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("benchmark: sinusoid\nnum_iterations: 1000000\nmeta_batch_size: 5\ncheckpoint_every: 1000000\n"
                   "log_every: 10\n")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "metarl", "train", str(cfg), "--logdir", str(run)],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    state = load_checkpoint(run)
    assert 0 < state["iteration"] < 1_000_000
    assert "SIGTERM" in err
