"""Stepping many MuJoCo simulations of one model at once, on every core.

Two backends with one interface, used by :class:`envs.vector.VecMujocoTasks`:

- :class:`BatchPhysics` uses MuJoCo's own batched stepping (``mujoco.batch.Batch``, MuJoCo
  >= 4): C++ threads step all simulations in one call, bit-identical to a loop of
  ``mj_step`` over one ``MjData`` per simulation. MuJoCo 3.x has no ``mujoco.batch``
  (:data:`HAS_BATCH` is false there) and every model runs on :class:`ProcessPhysics`:
  ``mujoco.rollout``'s threads step HalfCheetah about twice as fast on 3.3, but a call starts
  from a state without the solver's warm start, so one env step per call drifts from
  Gymnasium's by ~1e-10 in ``qpos`` after 30 steps, and the sampler promises Gymnasium's numbers.
- :class:`ProcessPhysics` runs worker processes, each looping ``mj_step`` and
  ``mj_rnePostConstraint`` over its share of ``MjData``, with the arrays in shared
  memory. It exists for models whose observation or reward reads ``cfrc_ext`` (the
  Ant). Gymnasium computes ``cfrc_ext`` by calling ``mj_rnePostConstraint`` after
  ``mj_step``; the Ant model integrates with RK4, so that call sees the contacts and
  constraint forces of the last Runge-Kutta stage. ``mujoco.batch`` neither runs that call
  nor exposes the contacts, and adding a force sensor (which makes MuJoCo compute
  ``cfrc_ext``) computes it in the first stage of each substep instead: different values.

Both hold, after :meth:`reset` and each :meth:`step`, ``[B, ...]`` float64 arrays:
``qpos [B, nq]``, ``qvel [B, nv]``, ``xpos_main [B, 3]`` (the main body's ``data.xpos``,
which MuJoCo leaves at its value of the last integration stage, as Gymnasium's Ant reads
it) and, for :class:`ProcessPhysics`, ``cfrc_ext [B, nbody, 6]``. This module imports
neither torch nor anything heavy, so that worker processes start quickly.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import traceback
from typing import Any

import gymnasium
import mujoco
import numpy as np
from metarl.envs.workers import stop_workers

try:
    from mujoco import batch as mj_batch
except (ImportError, AttributeError):  # MuJoCo 3.x (Meta-World pins 3.3.0): every model on ProcessPhysics.
    # AttributeError: a mujoco/batch.py left behind by 4.x under a 3.3 install (3.3's package extends its
    # path over every mujoco/ folder) fails on 3.3's enums; the README says to uninstall 4.x first
    mj_batch = None

#: Whether this MuJoCo has ``mujoco.batch`` (>= 4.0), which :class:`BatchPhysics` needs.
HAS_BATCH = mj_batch is not None


class BatchPhysics:
    """``num_envs`` simulations of ``model`` stepped by ``mujoco.batch.Batch`` on ``nthread`` threads."""

    def __init__(self, model: mujoco.MjModel, num_envs: int, *, frame_skip: int, main_body: int, nthread: int):
        if mj_batch is None:
            raise RuntimeError(f"BatchPhysics needs mujoco.batch (MuJoCo >= 4.0); this is MuJoCo {mujoco.__version__}: "
                               "use ProcessPhysics")
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        self._batch = mj_batch.Batch(model, nsim=num_envs, nthread=nthread)
        self.qpos = self._batch.bind("qpos")
        self.qvel = self._batch.bind("qvel")
        self._ctrl = self._batch.bind("ctrl")
        self.xpos_main = self._batch.bind("xpos")[:, main_body]
        self.cfrc_ext: np.ndarray | None = None

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """``mj_resetData``, set ``qpos``/``qvel`` and ``mj_forward``, as Gymnasium's reset does."""
        self._batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        self.qpos[:] = qpos
        self.qvel[:] = qvel
        self._batch.forward()

    def step(self, ctrl: np.ndarray, alive: np.ndarray) -> None:
        """Set ``ctrl`` and take ``frame_skip`` substeps in the simulations where ``alive``."""
        self._ctrl[:] = ctrl
        self._batch.step(ids=None if alive.all() else alive, nstep=self.frame_skip)

    def close(self) -> None:
        self._batch = None


# --- worker processes -------------------------------------------------------------------
#
# Workers are fresh interpreters (``python -c "from metarl.envs.physics import serve; serve()"``),
# not multiprocessing children: nothing of the caller's ``__main__`` is re-run in them and
# no process holding torch's threads is forked. The arrays live in one file on tmpfs that
# parent and workers map; the parent unlinks it as soon as every worker has mapped it.
# Protocol over the worker's stdin/stdout: the parent sends one pickled config, then one
# command byte at a time (R reset, S step, Q quit); the worker answers K, or E followed by
# a 4-byte length and a traceback.

_FIELDS = ("qpos", "qvel", "ctrl", "xpos_main", "cfrc_ext", "alive")


def _layout(num_envs: int, nq: int, nv: int, nu: int, nbody: int) -> dict[str, tuple[int, ...]]:
    return {
        "qpos": (num_envs, nq),
        "qvel": (num_envs, nv),
        "ctrl": (num_envs, nu),
        "xpos_main": (num_envs, 3),
        "cfrc_ext": (num_envs, nbody, 6),
        "alive": (num_envs,),
    }


def _map(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    total = sum(int(np.prod(s)) for s in shapes.values())
    flat = np.memmap(path, dtype=np.float64, mode="r+", shape=(total,))
    out, start = {}, 0
    for k in _FIELDS:
        n = int(np.prod(shapes[k]))
        out[k] = flat[start : start + n].reshape(shapes[k])
        start += n
    return out


def _read_exact(stream: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return buf


def serve() -> None:
    """Worker main loop (run in a child interpreter by :class:`ProcessPhysics`)."""
    stdin = sys.stdin.buffer
    # the protocol gets its own copy of fd 1; fd 1 itself then points at stderr, so that a
    # stray print (Python or C) cannot corrupt the replies
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)

    def reply_error() -> None:
        msg = traceback.format_exc().encode()
        stdout.write(b"E" + struct.pack("<I", len(msg)) + msg)
        stdout.flush()

    try:
        (size,) = struct.unpack("<I", _read_exact(stdin, 4))
        cfg = pickle.loads(_read_exact(stdin, size))
        import metarl.envs  # noqa: F401  (registers the ids)

        env = gymnasium.make(cfg["env_id"], **cfg["env_kwargs"]).unwrapped
        model, frame_skip = env.model, env.frame_skip
        # the Ant's main body; HalfCheetah has none (Gymnasium reads its x from qpos): body 1, as BatchPhysics
        main = model.body(env._main_body).id if hasattr(env, "_main_body") else 1
        arr = _map(cfg["path"], cfg["shapes"])
        lo, hi = cfg["lo"], cfg["hi"]
        datas = [mujoco.MjData(model) for _ in range(lo, hi)]
    except BaseException:
        reply_error()
        return
    stdout.write(b"K")
    stdout.flush()
    qpos, qvel, ctrl, xpos_main, cfrc_ext, alive = (arr[k] for k in _FIELDS)
    while True:
        cmd = stdin.read(1)
        if cmd in (b"", b"Q"):
            return
        try:
            for i, data in zip(range(lo, hi), datas, strict=True):
                if cmd == b"R":  # Gymnasium's reset: mj_resetData, set_state (which runs mj_forward)
                    mujoco.mj_resetData(model, data)
                    data.qpos[:] = qpos[i]
                    data.qvel[:] = qvel[i]
                    mujoco.mj_forward(model, data)
                elif alive[i]:  # Gymnasium's do_simulation
                    data.ctrl[:] = ctrl[i]
                    mujoco.mj_step(model, data, nstep=frame_skip)
                    mujoco.mj_rnePostConstraint(model, data)
                else:
                    continue
                qpos[i] = data.qpos
                qvel[i] = data.qvel
                xpos_main[i] = data.xpos[main]
                cfrc_ext[i] = data.cfrc_ext
            stdout.write(b"K")
            stdout.flush()
        except BaseException:
            reply_error()


class ProcessPhysics:
    """``num_envs`` simulations of the env ``env_id`` stepped by ``num_workers`` worker processes.

    Each worker makes the env with ``gymnasium.make(env_id, **env_kwargs)``, so it steps the
    very model Gymnasium builds, and repeats Gymnasium's calls on one ``MjData`` per
    simulation: ``data.ctrl[:] = a; mj_step(model, data, nstep=frame_skip);
    mj_rnePostConstraint(model, data)``. ``env_kwargs`` must be picklable.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], num_envs: int, *, num_workers: int) -> None:
        self.num_envs = num_envs
        self._procs: list[subprocess.Popen] = []
        ref = gymnasium.make(env_id, **env_kwargs).unwrapped
        m = ref.model
        shapes = _layout(num_envs, m.nq, m.nv, m.nu, m.nbody)
        ref.close()
        total = sum(int(np.prod(s)) for s in shapes.values())
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="metarl-physics-", suffix=".f64", dir=shm_dir)
        try:
            os.ftruncate(fd, total * 8)
            os.close(fd)
            arr = _map(path, shapes)
            self.qpos, self.qvel, self.xpos_main, self.cfrc_ext = (
                arr["qpos"],
                arr["qvel"],
                arr["xpos_main"],
                arr["cfrc_ext"],
            )
            self._ctrl, self._alive = arr["ctrl"], arr["alive"]
            num_workers = max(1, min(num_workers, num_envs))
            bounds = np.linspace(0, num_envs, num_workers + 1).round().astype(int)
            child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
            child_env.setdefault("OMP_NUM_THREADS", "1")
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                proc = subprocess.Popen(
                    [sys.executable, "-c", "from metarl.envs.physics import serve; serve()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=child_env,
                    bufsize=0,
                )
                self._procs.append(proc)
                cfg = {"env_id": env_id, "env_kwargs": env_kwargs, "path": path, "shapes": shapes}
                payload = pickle.dumps({**cfg, "lo": int(lo), "hi": int(hi)})
                proc.stdin.write(struct.pack("<I", len(payload)) + payload)
            self._wait()
        except BaseException:
            self.close()
            raise
        finally:
            os.unlink(path)  # every worker has mapped it (or failed); the memory lives on

    def _wait(self) -> None:
        errors = []
        for proc in self._procs:
            try:
                status = _read_exact(proc.stdout, 1)
                if status != b"K":
                    (n,) = struct.unpack("<I", _read_exact(proc.stdout, 4))
                    errors.append(_read_exact(proc.stdout, n).decode(errors="replace"))
            except EOFError:
                errors.append(f"worker pid {proc.pid} exited (code {proc.poll()})")
        if errors:
            raise RuntimeError("ProcessPhysics: a physics worker failed:\n" + "\n".join(errors))

    def _call(self, cmd: bytes) -> None:
        if not self._procs:
            raise RuntimeError("ProcessPhysics is closed")
        for proc in self._procs:
            proc.stdin.write(cmd)
        self._wait()

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """``mj_resetData``, set ``qpos``/``qvel`` and ``mj_forward``, as Gymnasium's reset does."""
        self.qpos[:] = qpos
        self.qvel[:] = qvel
        self._call(b"R")

    def step(self, ctrl: np.ndarray, alive: np.ndarray) -> None:
        """Set ``ctrl`` and take ``frame_skip`` substeps in the simulations where ``alive``."""
        self._ctrl[:] = ctrl
        self._alive[:] = alive
        self._call(b"S")

    def close(self) -> None:
        stop_workers(self._procs, lambda stdin: stdin.write(b"Q"))
        self._procs = []

    def __del__(self) -> None:
        self.close()
