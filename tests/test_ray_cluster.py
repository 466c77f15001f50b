"""A Ray cluster that loses a node: a real two-node cluster on this machine, started the way a
user starts one (``ray start --head``, then ``ray start --address=...`` for the second node), a
2D-navigation run with ``sampler.backend: ray`` and validation on it, and the second node killed
(SIGKILL to its raylet, agents and worker processes) mid-run.

The run either finishes on the remaining node, with the final model bit-identical to the same
config's run on the local sampler, or (what happens with one CPU per node: the dead worker's
replacement has nowhere to go) stops within ``start_timeout`` with one ``metarl: error:`` line
(exit 2) and a loadable ``last.pt``; ``--resume`` with ``sampler.num_workers=1`` then finishes on
the remaining node, bit-identical to the local run.

The nodes get their own loopback addresses (127.0.0.2, 127.0.0.3): Ray rewrites
``--node-ip-address=127.0.0.1`` to the machine's routable IP whenever multi-node clusters are
enabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` disables them, and ``ray start --address``
then refuses to start). The cleanup stops the processes of the two ``ray start`` sessions this
test started, not ``ray stop --force``, which stops every Ray of the user on the machine.

Run with ``pytest -m "ray and slow" tests/test_ray_cluster.py`` (about 1.5 minutes on 2 cores,
half of it the wait for the replacement that cannot start: ``sampler.start_timeout``, 30 s here).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from metarl.checkpoint import CheckpointError, load_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.slow]
pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")
HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
ITERATIONS = 30


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` (a ``ray start`` run with ``start_new_session``: its node's
    GCS, raylet, agents, and the workers the raylet starts, which keep the session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    for pid in _session(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # 0 forbids 2 nodes
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    return env


@dataclass
class Cluster:
    address: str
    head_sid: int
    node_sid: int

    def kill_node(self) -> None:
        """The second node dies as a machine would: every process of it, SIGKILL."""
        _kill_session(self.node_sid)


def _ray_start(args: list[str], temp_dir: str) -> int:
    """``ray start ARGS`` in a new session; returns the session id (the ``ray start`` pid)."""
    cmd = [str(RAY), "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={_free_port()}"]
    proc = subprocess.Popen(cmd, env=_ray_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        raise
    if proc.returncode != 0:
        _kill_session(proc.pid)
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return proc.pid


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not sys.platform.startswith("linux") or not RAY.exists():
        pytest.skip("needs Linux (127.0.0.0/8 loopback, /proc) and the venv's ray executable")
    try:
        _free_port(NODE_IP)
    except OSError:
        pytest.skip(f"{NODE_IP} is not a loopback address here")
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    sids: list[int] = []
    try:
        sids.append(_ray_start(["--head", f"--port={port}", f"--node-ip-address={HEAD_IP}",
                                "--include-dashboard=false", f"--ray-client-server-port={_free_port()}"],
                               f"{temp}/head"))
        sids.append(_ray_start([f"--address={HEAD_IP}:{port}", f"--node-ip-address={NODE_IP}"], f"{temp}/node"))
        yield Cluster(f"{HEAD_IP}:{port}", *sids)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for sid in sids:
                _kill_session(sid, sig)
            deadline = time.time() + 10
            while any(_session(s) for s in sids) and time.time() < deadline:
                time.sleep(0.2)
        left = [p for s in sids for p in _session(s)]
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left: {left}"


def navigation(sampler: dict[str, Any]) -> dict[str, Any]:
    """A tiny 2D-navigation MAML-TRPO config, validating every 2 iterations."""
    return {
        "benchmark": "rl", "name": "nav", "seed": 5, "num_iterations": ITERATIONS, "meta_batch_size": 4,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 2, "tasks": 2, "test_tasks": 2},
        "env": {"id": "metarl/Navigation2D-v0", "episodes_per_task": 4}, "policy": {"hidden": [16]},
        "sampler": sampler, "update_threads": 1,
    }


def metarl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metarl", *args], env=_ray_env(), capture_output=True, text=True,
                          timeout=timeout)


def final_model(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run)
    assert state["iteration"] == ITERATIONS
    return state["learner"]["model"]


def assert_same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the local sampler's run"


def wait_for_validation(run: Path, proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait until ``run`` validated (best.pt) and checkpointed iteration >= 2; that iteration."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the Ray run ended ({proc.returncode}) before the node was killed:\n{log.read_text()[-3000:]}")
        if (run / "checkpoints" / "best.pt").exists():
            try:
                it = int(load_checkpoint(run)["iteration"])
            except CheckpointError:  # last.pt not written yet
                it = 0
            if it >= 2:
                return it
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"no validation and checkpoint within {timeout} s:\n{log.read_text()[-3000:]}")


def test_run_survives_or_stops_clearly_when_a_node_dies(tmp_path: Path, cluster: Cluster) -> None:
    t0 = time.time()
    cfg_ray = tmp_path / "ray.yaml"
    cfg_ray.write_text(yaml.safe_dump(navigation({"backend": "ray", "address": cluster.address, "num_workers": 2,
                                                     "start_timeout": 30})))
    cfg_local = tmp_path / "local.yaml"
    cfg_local.write_text(yaml.safe_dump(navigation({"backend": "local", "num_workers": 1})))
    run, log = tmp_path / "ray", tmp_path / "ray_run.err"

    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "metarl", "train", str(cfg_ray), "--logdir", str(run)],
                                env=_ray_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            killed_at = wait_for_validation(run, proc, log, timeout=240)
            cluster.kill_node()
            t_kill = time.time()
            # the loss is noticed at once (or within ~30 s, by Ray's health checks); a replacement that
            # cannot start fails after the sampler's start_timeout (30 s here; 120 s by default)
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"the Ray run hung after its node was killed:\n{log.read_text()[-3000:]}")
    stderr = log.read_text()
    print(f"killed the node after iteration {killed_at}; the run ended {time.time() - t_kill:.0f} s later "
          f"with code {code}")

    local = metarl("train", str(cfg_local), "--logdir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    expected = final_model(tmp_path / "local")

    assert "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"worker [01] died", stderr), stderr[-3000:]  # the loss was noticed, and said so
    if code == 0:  # finished on the remaining node
        assert_same_model(final_model(run), expected)
    else:
        assert code == 2, stderr[-3000:]
        errors = [ln for ln in stderr.splitlines() if ln.startswith("metarl: error:")]
        assert len(errors) == 1, stderr[-3000:]
        print(errors[0])
        assert f"at '{cluster.address}'" in errors[0] and "sampler.num_workers" in errors[0], errors[0]
        state = load_checkpoint(run)  # whole, and a run to continue
        assert killed_at <= state["iteration"] < ITERATIONS
        resumed = metarl("train", "--resume", str(run), "--set", "sampler.num_workers=1")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_model(final_model(run), expected)
    print(f"test time {time.time() - t0:.0f} s")
