"""The reproduction scripts' control flow (``experiments/*.sh``), run against a stand-in ``metarl`` that
records its calls and writes what the real one would: which runs start, resume or are skipped, which
evaluations run, and that a failure stops the script with one line. The real commands are tested
elsewhere; here only the order and the bookkeeping of the scripts are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "experiments"

# A stand-in `metarl`: `train` writes a finished run (config, metrics, last.pt); `configs` lists two oracle
# configs; `evaluate --metaworld-official`
# writes its --out file and records "done RUN" (with WAIT_FOR set, only after a call matching it), or fails
# with FAIL_OFFICIAL set; every call is appended to $CALLS.
STUB = r"""#!/usr/bin/env bash
echo "metarl $*" >> "$CALLS"
if [ "$1" = train ]; then
  if [ "$2" = --resume ]; then d=$3; else
    while [ $# -gt 0 ]; do [ "$1" = --logdir ] && d=$2; shift; done
  fi
  mkdir -p "$d/checkpoints"; touch "$d/checkpoints/last.pt"
  echo "num_iterations: 2" > "$d/config.yaml"; echo "2,0.5" > "$d/metrics.csv"
elif [ "$1" = configs ]; then
  printf '%s\n' "halfcheetah_vel_oracle  the oracle" "ant_vel_oracle  the oracle" "ant_dir  MAML"
elif [ "$1" = evaluate ] && [[ "$*" == *--metaworld-official* ]]; then
  [ -n "${FAIL_OFFICIAL:-}" ] && { echo "official evaluation broke" >&2; exit 3; }
  # with WAIT_FOR set, finish only once a call matching it was made (or fail after 20 s)
  for _ in $(seq 200); do [ -z "${WAIT_FOR:-}" ] || grep -q -- "$WAIT_FOR" "$CALLS" && break; sleep 0.1; done
  [ -z "${WAIT_FOR:-}" ] || grep -q -- "$WAIT_FOR" "$CALLS" || exit 4
  echo '{}' > "${@: -1}"; echo "done $2" >> "$CALLS"
fi
"""


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "metarl").write_text(STUB)
    (bin_dir / "metarl").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}


def _run(script: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    proc = subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True, text=True,
                          timeout=60)
    calls = Path(env["CALLS"]).read_text().splitlines() if Path(env["CALLS"]).exists() else []
    return proc, calls


def test_metaworld_ml1_trains_each_seed_evaluates_each_run_and_pools(tmp_path, stub):
    out = tmp_path / "out"
    # each evaluation finishes only after seed 2 started training: run in the foreground, seed 1's would fail
    proc, calls = _run("metaworld_ml1.sh", ["push", str(out), "1", "2", "--set", "num_iterations=2"],
                       {**stub, "WAIT_FOR": "--seed 2"})
    assert proc.returncode == 0, proc.stderr
    trains = [c for c in calls if c.startswith("metarl train")]
    assert trains == [f"metarl train metaworld_ml1_push --seed {s} --logdir {out}/seed-{s} --overwrite "
                      "--set num_iterations=2" for s in (1, 2)]
    official = [c for c in calls if "--metaworld-official" in c]
    pool_official = f"metarl evaluate {out}/seed-1 {out}/seed-2 --metaworld-official --out {out}/official_pooled.json"
    assert sorted(official[:2]) == [
        f"metarl evaluate {out}/seed-{s} --metaworld-official --out {out}/seed-{s}/metaworld_eval.json" for s in (1, 2)]
    assert official[2:] == [pool_official]
    # seed 1's evaluation ran in the background while seed 2 trained, and the pooling waited for both
    assert calls.index(trains[1]) < calls.index(f"done {out}/seed-1")
    assert calls.index(f"done {out}/seed-2") < calls.index(pool_official)
    pool_ours = f"metarl evaluate {out}/seed-1 {out}/seed-2 --tasks 40 --seed 1 --out {out}/pooled.json"
    assert calls[-3:] == [pool_official, f"done {out}/seed-1", pool_ours]

    # a second call finds both runs finished and evaluated: only the two poolings run again
    Path(stub["CALLS"]).unlink()
    proc, calls = _run("metaworld_ml1.sh", ["push", str(out), "1", "2"], stub)
    assert proc.returncode == 0, proc.stderr
    assert calls == [pool_official, f"done {out}/seed-1", pool_ours]


def test_metaworld_ml1_resumes_an_unfinished_run(tmp_path, stub):
    run = tmp_path / "out" / "seed-1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").touch()
    (run / "config.yaml").write_text("num_iterations: 20\n")
    (run / "metrics.csv").write_text("7,0.1\n")
    proc, calls = _run("metaworld_ml1.sh", ["reach", str(tmp_path / "out"), "1"], stub)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"metarl train --resume {run}"


def test_metaworld_ml1_stops_on_a_failed_official_evaluation(tmp_path, stub):
    proc, calls = _run("metaworld_ml1.sh", ["reach", str(tmp_path / "out"), "1"], {**stub, "FAIL_OFFICIAL": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("metaworld_ml1.sh: an official evaluation failed")
    assert not any("--tasks 40" in c for c in calls)  # no pooling after a failure
    assert "official evaluation broke" in (tmp_path / "out" / "seed-1" / "metaworld_eval.log").read_text()


def test_metaworld_ml1_refuses_an_unknown_env(tmp_path, stub):
    proc, calls = _run("metaworld_ml1.sh", ["pick-place", str(tmp_path / "out")], stub)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("metaworld_ml1.sh: unknown ML1 env 'pick-place'; use one of: "
                                   "reach push pick_place")
    assert calls == []


def _finished_run(run: Path, iterations: int) -> None:
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").touch()
    (run / "config.yaml").write_text(f"seed: 1\nnum_iterations: {iterations}\n")
    (run / "metrics.csv").write_text(f"iteration,x\n{iterations - 1},0.2\n{iterations},0.1\n")


def test_navigation_seeds_skips_finished_runs_and_extends_them_with_a_larger_budget(tmp_path, stub):
    out = tmp_path / "nav"
    _finished_run(out / "seed-1", 500)
    pooled = f"metarl evaluate {out}/seed-1 {out}/seed-2 --tasks 400 --steps 3 --seed 1 --out {out}/pooled.json"
    proc, calls = _run("navigation2d_seeds.sh", [str(out), "1", "2", "--set", "update_threads=1"], stub)
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"metarl train navigation2d_lvc --seed 2 --logdir {out}/seed-2 --overwrite --set update_threads=1",
                     pooled]

    Path(stub["CALLS"]).unlink()
    proc, calls = _run("navigation2d_seeds.sh", [str(out), "1", "2", "--set", "num_iterations=1000"], stub)
    assert proc.returncode == 0, proc.stderr
    assert calls == [f"metarl train --resume {out}/seed-{s} --set num_iterations=1000" for s in (1, 2)] + [pooled]


@pytest.mark.parametrize("task, oracle", [("halfcheetah_vel", True), ("ant_dir", False)])
def test_locomotion_trains_maml_and_its_baselines_then_evaluates_them_together(tmp_path, stub, task, oracle):
    out = tmp_path / task
    proc, calls = _run("locomotion.sh", [task, str(out), "3", "--set", "meta_batch_size=2"], stub)
    assert proc.returncode == 0, proc.stderr
    names = [("maml", task), ("pretrain", f"{task}_pretrain")] + ([("oracle", f"{task}_oracle")] if oracle else [])
    assert [c for c in calls if c.startswith("metarl train")] == [
        f"metarl train {config} --seed 3 --logdir {out}/{name} --overwrite --set meta_batch_size=2"
        for name, config in names]
    baselines = f"--baseline pretrained={out}/pretrain" + (f" --baseline oracle={out}/oracle" if oracle else "")
    # the half-cheetahs are scored without their training-only pitch cost, whether or not a run had it
    score = " --set env.kwargs.pitch_cost_weight=0" if task.startswith("halfcheetah") else ""
    assert calls[-3] == (f"metarl evaluate {out}/maml --tasks 40 --steps 3 --seed 1003 {baselines}{score} "
                         f"--out {out}/maml/eval-40.json --plot {out}/maml/eval-40.png")
    # then with the paper's test-time step sizes (its test scripts: HalfCheetahVel's and AntDir's differ)
    later, lrs = ("0.5", "pretrained=0.02 --baseline-lr random=0.1") if task == "halfcheetah_vel" else \
        ("0.01", "pretrained=0.2 --baseline-lr random=1.0")
    assert calls[-2] == (f"metarl evaluate {out}/maml --tasks 40 --steps 3 --seed 1003 {baselines} --baseline-lr {lrs} "
                         f"--set test_lr_after_first={later}{score} --out {out}/maml/eval-40-paper-steps.json "
                         f"--plot {out}/maml/eval-40-paper-steps.png")
    # and on the paper's own goals, with its reward, to pair with its per-goal returns
    assert calls[-1] == (f"metarl evaluate {out}/maml --task-set finn2017 --steps 3 --seed 1003 {baselines} "
                         f"--baseline-lr {lrs} --set test_lr_after_first={later} --set env.kwargs.clip_ctrl_cost=true"
                         f"{score} --out {out}/maml/eval-finn2017.json")
    assert f"versus_paper.py {out}/maml/eval-finn2017.json" in proc.stdout
