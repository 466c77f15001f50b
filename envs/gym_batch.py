"""A batch of Gymnasium envs of one id, stepped in lockstep: in this process, or split over worker processes.

This is the numpy half of the generic sampler (:class:`metarl.rl.generic_sampler.GymTaskVec` puts
tensors on it). :class:`GymBatch` holds ``num_envs`` envs made with ``gymnasium.make(spec, **env_kwargs)``;
:class:`ProcessGymBatch` gives the same interface over worker processes, each holding a
:class:`GymBatch` for a contiguous slice of the sub-envs, so that every core steps envs while the caller
runs the policy once for the whole batch, or so that each worker runs whole rollouts of its slice
with a copy of the policy (``rollouts``: no message per step; the generic sampler's fast path). Both
return the same numbers bit for bit: each sub-env is the same Gymnasium env, reset with the same seed
and task and stepped with the same action array (same values, same dtype), whichever process holds it.

Interface (``B`` sub-envs, numpy arrays):

- ``reset(tasks, seeds) -> obs [B, *obs_shape]`` (float64): sub-env ``i`` resets with
  ``seed=seeds[i], options={"task": tasks[i]}``;
- ``step(actions [B, *act_shape]) -> (obs, rewards [B] float64, done [B] bool)``: the sub-envs whose
  episode is running step (an ``int`` action for a ``Discrete`` space); one that terminated or was
  truncated stays frozen (its last observation, reward 0) until the next reset;
- ``success``: ``[B]`` bool, ``info["success"]`` true at some step since the reset, or ``None`` when no
  sub-env has reported a ``"success"``;
- ``resize(n, unit=1)`` uses ``n`` sub-envs from then on (a pool: envs are made when needed, never
  dropped; workers hold whole blocks of ``unit``); ``close()``.

Workers are fresh interpreters that load this file by path (``python -c``), not ``multiprocessing``
children: nothing of the caller's ``__main__`` runs again, no process holding torch's threads is
forked, and this module imports neither torch nor ``metarl`` (a worker that steps a plain Gymnasium
env starts in well under a second; its first rollout imports them). They get the caller's ``sys.path``
and ``OMP_NUM_THREADS=1``.
The env travels as its registered ``EnvSpec`` (pickled: its entry point by module and name, so a
``module:Id`` env, or one registered in an importable module, is made in the worker without it being
registered there). Protocol on the worker's stdin / stdout: messages ``tag (1 byte) + length (4 bytes) +
pickle``; the caller sends M (make), N (resize), R (reset), S (step), O (rollout), Q (quit); the worker answers
K with the result, or E with its traceback. A worker exits on Q or at the end of its stdin (so it
never outlives its caller) and ignores SIGINT (Ctrl-C reaches the caller, which closes its workers).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

Task = dict[str, Any]


class EnvWorkerError(RuntimeError):
    """An env failed inside a worker process (or a worker died); the message names the env id, the
    sub-envs the worker holds and the worker's traceback."""


class GymBatch:
    """``num_envs`` Gymnasium envs of ``spec`` (an ``EnvSpec`` or a registered id) in this process
    (see the module doc for the interface)."""

    def __init__(self, spec: gymnasium.envs.registration.EnvSpec | str, num_envs: int, *,
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.env_kwargs = dict(env_kwargs or {})
        self.envs: list[gymnasium.Env] = []  # the pool: the first num_envs are in use
        self.resize(num_envs)
        first = self.envs[0]
        self.observation_shape = tuple(first.observation_space.shape)
        self.action_shape = tuple(first.action_space.shape or ())
        self._discrete = isinstance(first.action_space, gymnasium.spaces.Discrete)

    def resize(self, num_envs: int, unit: int = 1) -> None:
        """Use ``num_envs`` sub-envs from now on (made when the pool has fewer; extra ones stay idle; ``unit``
        is :class:`ProcessGymBatch`'s and changes nothing in one process)."""
        if num_envs < 1:
            raise ValueError(f"GymBatch: num_envs must be >= 1, got {num_envs}")
        try:
            while len(self.envs) < num_envs:
                self.envs.append(gymnasium.make(self.spec, **self.env_kwargs))
        except BaseException:
            self.close()
            raise
        self.num_envs = int(num_envs)
        self._obs = np.zeros((self.num_envs, *self.envs[0].observation_space.shape))
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._success = np.zeros(self.num_envs, dtype=bool)
        self._reports_success = False

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        for i, (env, task, seed) in enumerate(zip(self.envs[: self.num_envs], tasks, seeds, strict=True)):
            self._obs[i], _ = env.reset(seed=int(seed), options={"task": task})
        self._done[:] = False
        self._success[:] = False
        self._reports_success = False
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rewards = np.zeros(self.num_envs)
        for i in np.flatnonzero(~self._done):
            obs, reward, terminated, truncated, info = self.envs[i].step(
                int(actions[i]) if self._discrete else actions[i])
            self._obs[i], rewards[i] = obs, reward
            if "success" in info:
                self._reports_success = True
                self._success[i] |= bool(info["success"])
            self._done[i] = terminated or truncated
        return self._obs.copy(), rewards, self._done.copy()

    @property
    def success(self) -> np.ndarray | None:
        return self._success.copy() if self._reports_success else None

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


# --- worker processes ---------------------------------------------------------------------------

_BOOT = ("import importlib.util as u, sys; s = u.spec_from_file_location('metarl_gym_worker', sys.argv[1]); "
         "m = u.module_from_spec(s); s.loader.exec_module(m); m.serve()")


def _send(stream: Any, tag: bytes, obj: Any) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(tag + struct.pack("<I", len(payload)) + payload)


def _read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def _recv(stream: Any) -> tuple[bytes, bytes]:
    """One message: its tag and its pickled payload (unpickled by the caller, where errors are reported)."""
    head = _read_exact(stream, 5)
    (n,) = struct.unpack("<I", head[1:])
    return head[:1], _read_exact(stream, n)


def _handle(batch: GymBatch | None, tag: bytes, arg: Any) -> tuple[GymBatch | None, Any]:
    """One command of the protocol on the worker's ``batch``: ``(the batch after it, the reply)``."""
    if tag == b"M":
        spec, num_envs, env_kwargs = arg
        return GymBatch(spec, num_envs, env_kwargs=env_kwargs), None
    if batch is None:
        raise RuntimeError("no envs yet (the make command failed)")
    if tag == b"N":
        batch.resize(arg)
        return batch, None
    if tag == b"R":
        return batch, batch.reset(*arg)
    if tag == b"S":
        return batch, (*batch.step(arg), batch.success)
    if tag == b"O":  # a whole rollout with the policy here: torch and metarl are imported on the first one only
        from metarl.rl.generic_sampler import worker_rollout

        return batch, (worker_rollout(batch, *arg), batch.success)
    raise ValueError(f"unknown command {tag!r}")


def serve() -> None:
    """A worker's main loop (run in a child interpreter by :class:`ProcessGymBatch`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    # the protocol gets its own copy of fd 1; fd 1 itself then points at stderr, so that a stray print
    # (an env's, Python or C) cannot corrupt the replies
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    batch: GymBatch | None = None
    while True:
        try:
            tag, payload = _recv(stdin)
        except EOFError:
            break
        if tag == b"Q":
            break
        try:
            batch, reply = _handle(batch, tag, pickle.loads(payload))
        except BaseException:
            _send(stdout, b"E", traceback.format_exc())
        else:
            _send(stdout, b"K", reply)
    if batch is not None:
        batch.close()


def slices(num_envs: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` sub-env ranges, one per worker used (at most ``num_envs``), sizes differing
    by at most 1."""
    bounds = np.linspace(0, num_envs, min(num_envs, num_workers) + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _check_sendable(spec: gymnasium.envs.registration.EnvSpec, env_kwargs: Mapping[str, Any], name: str) -> None:
    entry = spec.entry_point
    if callable(entry) and getattr(entry, "__module__", None) == "__main__":
        raise ValueError(f"{name}: its entry point {entry.__qualname__} is defined in __main__, which worker "
                         "processes cannot import; define the env in a module (and name it 'module:Id'), or use "
                         "num_workers=1")
    try:
        pickle.dumps((spec, dict(env_kwargs)))
    except Exception as e:
        raise ValueError(f"{name}: cannot send the env's spec and kwargs to worker processes ({e}); they must "
                         "pickle (an entry point importable by module and name, plain kwargs), or use "
                         "num_workers=1") from e


class ProcessGymBatch:
    """:class:`GymBatch`'s interface with the sub-envs split over ``num_workers`` worker processes
    (see the module doc): each holds a contiguous slice and steps it on every :meth:`step`, all at once.

    ``name`` (the env id) names the env in errors. Raises :class:`EnvWorkerError` when a worker fails
    (the env's own exception, with the worker's traceback) or dies; ``ValueError`` when the spec cannot
    travel to a worker (an entry point defined in ``__main__``, unpicklable kwargs).
    """

    def __init__(self, spec: gymnasium.envs.registration.EnvSpec, num_envs: int, *, num_workers: int,
                 env_kwargs: Mapping[str, Any] | None = None, name: str | None = None) -> None:
        self.name = name or spec.id
        self._procs: list[subprocess.Popen] = []
        env_kwargs = dict(env_kwargs or {})
        _check_sendable(spec, env_kwargs, self.name)
        if num_workers < 1:
            raise ValueError(f"ProcessGymBatch: num_workers must be >= 1, got {num_workers}")
        self._slices = slices(max(num_envs, num_workers), num_workers)  # each worker makes one env at least
        child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
        try:
            for _ in self._slices:
                self._procs.append(subprocess.Popen([sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env,
                                                    bufsize=0))
            self._call([(b"M", (spec, hi - lo, env_kwargs)) for lo, hi in self._slices])
        except BaseException:
            self.close()
            raise
        self.num_envs = self._slices[-1][1]
        self._parts: list[np.ndarray | None] = [None] * len(self._slices)  # each worker's success flags
        if num_envs < num_workers:
            self.resize(num_envs)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [proc.pid for proc in self._procs]

    def _call(self, messages: Sequence[tuple[bytes, Any]]) -> list[Any]:
        """Send ``messages[j]`` to worker ``j`` (all first, so that they run at once), then read the replies."""
        self._check_open()
        sent, errors = [], []
        for j, (tag, arg) in enumerate(messages):
            error = self._send_to(j, tag, arg)
            if error is None:
                sent.append(j)
            else:
                errors.append(error)
        replies: list[Any] = [None] * len(messages)
        for j in sent:
            ok, replies[j] = self._recv_from(j)
            if not ok:
                errors.append(replies[j])
        if errors:
            raise EnvWorkerError(f"{self.name}: " + "\n".join(errors))
        return replies

    def _check_open(self) -> None:
        if not self._procs:
            raise RuntimeError(f"{self.name}: the env workers are closed")

    def _send_to(self, j: int, tag: bytes, arg: Any) -> str | None:
        """Send one message to worker ``j``: ``None``, or what went wrong (the worker died)."""
        try:
            _send(self._procs[j].stdin, tag, arg)
        except (BrokenPipeError, OSError) as e:
            return self._died(j, e)
        return None

    def _recv_from(self, j: int) -> tuple[bool, Any]:
        """Worker ``j``'s reply: ``(True, the result)``, or ``(False, what went wrong)``."""
        try:
            status, payload = _recv(self._procs[j].stdout)
        except EOFError as e:
            return False, self._died(j, e)
        if status == b"K":
            return True, pickle.loads(payload)
        lo, hi = self._where(j)
        return False, f"worker {j} (sub-envs {lo}..{hi - 1}) failed:\n{pickle.loads(payload)}"

    def _where(self, j: int) -> tuple[int, int]:
        return self._slices[j] if j < len(self._slices) else (0, 0)

    def _died(self, j: int, e: BaseException) -> str:
        proc = self._procs[j]
        lo, hi = self._where(j)
        return f"worker {j} (pid {proc.pid}, sub-envs {lo}..{hi - 1}) exited (code {proc.poll()}): {e}"

    def resize(self, num_envs: int, unit: int = 1) -> None:
        """Use ``num_envs`` sub-envs, split over the first ``min(num_envs / unit, num_workers)`` workers in
        whole blocks of ``unit`` sub-envs (a task's episodes: :meth:`step_send` then steps whole tasks); each
        worker's pool grows when its slice does."""
        if num_envs < 1 or unit < 1 or num_envs % unit:
            raise ValueError(f"ProcessGymBatch: num_envs must be a positive multiple of unit, got {num_envs} "
                             f"and {unit}")
        new = [(lo * unit, hi * unit) for lo, hi in slices(num_envs // unit, len(self._procs))]
        if new != self._slices or num_envs != self.num_envs:
            self._slices = new
            self._call([(b"N", hi - lo) for lo, hi in self._slices])
            self.num_envs = int(num_envs)
        self._parts = [None] * len(self._slices)

    @property
    def worker_slices(self) -> list[tuple[int, int]]:
        """The ``[lo, hi)`` sub-envs of each worker in use, in order."""
        return list(self._slices)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        tasks, seeds = list(tasks), [int(s) for s in seeds]
        obs = self._call([(b"R", (tasks[lo:hi], seeds[lo:hi])) for lo, hi in self._slices])
        self._parts = [None] * len(self._slices)
        return np.concatenate(obs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        replies = self._call([(b"S", actions[lo:hi]) for lo, hi in self._slices])
        obs, rewards, done, self._parts = (list(x) for x in zip(*replies, strict=True))
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(done)

    def rollouts(self, args: Sequence[tuple]) -> list[Any]:
        """Worker ``j`` runs a whole rollout of its slice with ``args[j]`` (see
        :func:`metarl.rl.generic_sampler.worker_rollout`), all workers at once; their results, in order."""
        replies = self._call([(b"O", a) for a in args])
        results, parts = zip(*replies, strict=True)
        self._parts = list(parts)
        return list(results)

    @property
    def success(self) -> np.ndarray | None:
        if all(p is None for p in self._parts):
            return None
        return np.concatenate([np.zeros(hi - lo, dtype=bool) if p is None else p
                               for p, (lo, hi) in zip(self._parts, self._slices, strict=True)])

    def close(self) -> None:
        """Stop the workers (Q, then the end of their stdin; killed if they do not exit within 10 s)."""
        from metarl.envs.workers import stop_workers  # here: workers load this file alone, without metarl

        stop_workers(self._procs, lambda stdin: _send(stdin, b"Q", None))
        self._procs = []

    def __del__(self) -> None:
        self.close()
