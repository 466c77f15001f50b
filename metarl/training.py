"""The training loop shared by every benchmark: logging, checkpoints, signals and resume.

A learner (``SupervisedMAML``, ``RLLearner``) owns the model, optimiser and random
streams and exposes ``train_step(iteration, log) -> metrics``, ``validate() -> metrics``,
``state_dict``/``load_state_dict`` and ``best_key``/``best_mode``; this module does the rest.

Nothing lost, nothing silent:

- one owner per run directory: an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` for the life of
  the run (the OS releases it when the process ends, however it ends); a directory holding a run
  is reused only by ``resume`` or ``overwrite``; the config, env, data and device are checked (the
  learner is built) before anything is written, and a failed start removes what it created;
- a meta-step that reports a non-finite loss, leaves non-finite parameters or raises
  ``FloatingPointError`` is rejected: the learner goes back to the last good state (its random
  streams move on), and :data:`MAX_REJECTED` rejections in a row stop the run with
  :class:`TrainingDiverged`, the checkpoints untouched.
"""

from __future__ import annotations

import copy
import fcntl
import io
import math
import os
import shutil
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    save_weights,
)
from metarl.config import CommonConfig, ConfigError, config_from_dict, config_to_dict, dump_config
from metarl.families import family_of
from metarl.logger import Progress, RunLogger

#: The lock file of a run directory (see :class:`RunLock`).
LOCK_NAME = ".lock"
#: What marks a directory as holding a run: it is reused only with ``resume`` or ``overwrite``.
RUN_MARKERS = ("config.yaml", "metrics.csv", "checkpoints")
#: Rejected meta-steps in a row that stop the run.
MAX_REJECTED = 3
#: TRPO iterations in a row without an accepted step before a warning.
TRPO_REJECTED_WARN = 5


class RunDirError(ConfigError):
    """A run directory that cannot be used: owned by another run, holding a run, a file, not writable."""


class TrainingDiverged(RuntimeError):
    """:data:`MAX_REJECTED` meta-steps in a row were non-finite; the message names the likely cause."""


class RunLock:
    """An exclusive ``fcntl.flock`` on ``RUN_DIR/.lock``: one process writes a run directory at a time.

    The lock belongs to the open file, so the OS releases it when the process exits, even by
    SIGKILL; a second ``acquire`` on the same directory fails at once (also within one process).
    The file is kept (removing it would let two processes lock two different files) and holds
    the owner's pid and host, for the error message.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunDirError` naming the owner."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"run directory {str(self.run_dir)!r}: cannot create {LOCK_NAME} "
                              f"({e.strerror or e}); pass a --logdir in a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 200).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            raise RunDirError(
                f"run directory {str(self.run_dir)!r} is in use by another metarl run ({owner}); wait for it "
                "to finish (or stop it), or pass another --logdir"
            ) from None
        except OSError as e:  # e.g. a network filesystem without flock
            os.close(fd)
            raise RunDirError(f"run directory {str(self.run_dir)!r}: cannot lock {LOCK_NAME} ({e.strerror or e}); "
                              "pass a --logdir on a local filesystem") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_device(device: str) -> None:
    """Fail early, and clearly, when the config asks for a device this machine lacks."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: got 'cuda' but torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
        )


def build_learner(cfg: CommonConfig) -> Any:
    """The learner of ``cfg``'s benchmark family (:mod:`metarl.families`)."""
    check_device(cfg.device)
    return family_of(cfg).build_learner(cfg)


def default_logdir(cfg: CommonConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to checkpoint and stop after the current iteration."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[metarl] {signal.Signals(signum).name}: saving a checkpoint and stopping", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _holds_run(run_dir: Path) -> bool:
    return any((run_dir / m).exists() for m in RUN_MARKERS)


def _check_target(run_dir: Path) -> None:
    """Refuse a ``--logdir`` that is a file, lies below a file, or is in a folder this process may not
    write (by the permission bits, so a read-only folder counts as one even for root)."""
    existing = run_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == run_dir else f"lies below the file {str(existing)!r}"
        raise RunDirError(f"--logdir {str(run_dir)!r} {what}; pass a directory path")
    if not os.access(existing, os.W_OK | os.X_OK) or not existing.stat().st_mode & 0o200:
        raise RunDirError(f"--logdir {str(run_dir)!r}: {str(existing)!r} is not writable; pass a --logdir "
                          "in a writable folder")


def _check_reuse(run_dir: Path, overwrite: bool) -> None:
    if _holds_run(run_dir) and not overwrite:
        raise RunDirError(
            f"run directory {str(run_dir)!r} already holds a run; continue it with --resume {run_dir}, "
            "start it again with --overwrite (deletes it), or pass another --logdir"
        )


def _make_dirs(path: Path) -> Path | None:
    """``mkdir -p path``; the topmost folder this call created (to remove on a failed start), if any."""
    missing = []
    p = path
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    created = None
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # another process made it: not ours to remove
            continue
        created = created or d
    return created


def _clear(run_dir: Path) -> None:
    """``--overwrite``: delete everything in ``run_dir`` but the lock file."""
    for child in run_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _one_line(e: BaseException, lines: int = 3) -> str:
    return "; ".join(ln.strip() for ln in str(e).strip().splitlines()[:lines] if ln.strip())


def _open_run(
    cfg: CommonConfig | None, logdir: str | Path | None, resume: str | Path | None,
    overrides: list[tuple[str, Any]] | None, overwrite: bool, quiet: bool,
) -> tuple[CommonConfig, Path, dict[str, Any] | None, Any, RunLock]:
    """The run's config, directory (locked, with config.yaml), checkpoint when resuming, and learner.

    Everything that can fail on the user's input (config, device, env, data, the directory, the
    checkpoint fitting the model) fails before config.yaml is written; a fresh run's directory is
    created after its learner is built, and removed again if the start fails after that.
    """
    state = None
    lock: RunLock | None = None
    learner: Any = None
    created: Path | None = None
    try:
        if resume is not None:
            if overwrite:
                raise ConfigError("--overwrite starts a run again and --resume continues one: pass one of them")
            run_dir = Path(resume)
            if not run_dir.is_dir():
                raise CheckpointError(f"--resume {str(run_dir)!r}: not a run directory")
            lock = RunLock(run_dir).acquire()
            state = load_checkpoint(run_dir)
            cfg = config_from_dict(state["config"], overrides or [])
            learner = build_learner(cfg)
            try:
                learner.load_state_dict(state["learner"])
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                changed = f" with --set {', '.join(k for k, _ in overrides)}" if overrides else ""
                raise CheckpointError(
                    f"--resume {str(run_dir)!r}: the checkpoint does not fit the model of its config{changed} "
                    f"({_one_line(e)}); config.yaml was left as it was"
                ) from None
        else:
            if cfg is None:
                raise ValueError("train: pass a config or resume=RUN_DIR")
            check_device(cfg.device)
            run_dir = Path(logdir) if logdir is not None else default_logdir(cfg)
            _check_target(run_dir)
            if run_dir.is_dir():  # an existing directory: its owner and contents first, then the work
                lock = RunLock(run_dir).acquire()
                _check_reuse(run_dir, overwrite)
            learner = build_learner(cfg)
            if lock is None:
                try:
                    created = _make_dirs(run_dir)
                except OSError as e:
                    raise RunDirError(f"--logdir {str(run_dir)!r}: cannot create it ({e.strerror or e})") from None
                lock = RunLock(run_dir).acquire()
                if _holds_run(run_dir):  # a run started (and ended) there meanwhile: not ours to remove
                    created = None
                _check_reuse(run_dir, overwrite)
            if overwrite and _holds_run(run_dir):
                _clear(run_dir)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        stale = remove_stale_temporaries(run_dir / "checkpoints") + remove_stale_temporaries(run_dir)
        if stale and not quiet:
            print(f"[metarl] removed {len(stale)} unfinished write(s) of a killed run: "
                  f"{', '.join(p.name for p in stale)}", file=sys.stderr)
        dump_config(cfg, run_dir / "config.yaml")
        return cfg, run_dir, state, learner, lock
    except BaseException:
        if learner is not None:
            learner.close()
        if created is not None and lock is not None and lock.held:
            shutil.rmtree(created, ignore_errors=True)
        if lock is not None:
            lock.release()
        raise


def _step_sizes(cfg: CommonConfig) -> str:
    """The step sizes a diverging run most likely has too large, as ``key=value`` pairs."""
    keys = ["inner.lr"]
    if getattr(cfg, "algorithm", None) == "promp":
        keys.append("promp.lr")
    elif hasattr(cfg, "trpo"):
        keys.append("trpo.max_kl")
    elif hasattr(cfg, "optim"):
        keys.append("optim.lr")
    values = []
    for key in keys:
        section, name = key.split(".")
        values.append(f"{key}={getattr(getattr(cfg, section), name)}")
    return ", ".join(values)


def _clone(obj: Any) -> Any:
    """A deep copy of a state dict: tensors cloned, containers rebuilt (10x faster than deepcopy)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_clone(v) for v in obj)
    return copy.deepcopy(obj)


def _snapshot(learner: Any) -> dict[str, Any]:
    """A copy of the learner's state that later steps cannot change (state_dict shares tensors)."""
    return _clone(learner.state_dict())


def _restore(learner: Any, good: dict[str, Any]) -> None:
    """Back to ``good``, except the random streams (``rng``, ``sampler``): the retry draws new tasks."""
    current = learner.state_dict()
    learner.load_state_dict({**good, **{k: current[k] for k in ("rng", "sampler") if k in current}})


def _tensors(learner: Any) -> list[torch.Tensor]:
    """The learner's floating-point parameters and buffers (the module's, and learned inner lrs)."""
    modules = [m for m in (getattr(learner, "module", None), getattr(learner, "lr_params", None))
               if isinstance(m, nn.Module)]
    return [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]


def _nonfinite(metrics: dict[str, float], learner: Any) -> str | None:
    """Why a step must be rejected (a non-finite loss metric or parameter), or None."""
    for key, value in metrics.items():
        name = key.rsplit("/", 1)[-1]
        if ("loss" in name or "surrogate" in name) and not math.isfinite(value):
            return f"non-finite {key}={value}"
    tensors = _tensors(learner)
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return "non-finite parameters after the step"
    return None


class _Guard:
    """Runs the meta-steps; a step is rejected when it raises ``FloatingPointError`` (TRPO's non-finite
    surrogate), reports a non-finite loss or leaves non-finite parameters: the learner goes back to
    the state after the last good step, ``guard/rejected`` = 1 is logged with a warning, and
    :data:`MAX_REJECTED` in a row raise :class:`TrainingDiverged`. Also warns once when TRPO's line
    search has rejected every step for :data:`TRPO_REJECTED_WARN` iterations in a row."""

    def __init__(self, cfg: CommonConfig, learner: Any) -> None:
        self.cfg, self.learner = cfg, learner
        self.good = _snapshot(learner)
        self.rejected = 0
        self.trpo_rejected = 0

    def step(self, it: int, log: bool) -> tuple[dict[str, float], str | None]:
        """``(metrics, None)`` for a good step, ``({"guard/rejected": 1.0}, reason)`` for a rejected one."""
        try:
            metrics = self.learner.train_step(it, log)
            reason = _nonfinite(metrics, self.learner)
        except FloatingPointError as e:
            metrics, reason = {}, f"{type(e).__name__}: {_one_line(e, 1)}"
        if reason is None:
            self.good = _snapshot(self.learner)
            self.rejected = 0
            self._watch_trpo(it, metrics)
            return metrics, None
        self.rejected += 1
        _restore(self.learner, self.good)
        print(f"[metarl] warning: iteration {it}: meta-step rejected ({reason}); parameters restored to the "
              f"last good step ({self.rejected}/{MAX_REJECTED} in a row stop the run)", file=sys.stderr)
        return {"guard/rejected": 1.0}, reason

    def _watch_trpo(self, it: int, metrics: dict[str, float]) -> None:
        if "trpo/accepted" not in metrics:
            return
        self.trpo_rejected = self.trpo_rejected + 1 if metrics["trpo/accepted"] == 0 else 0
        if self.trpo_rejected == TRPO_REJECTED_WARN:
            print(f"[metarl] warning: iteration {it}: the TRPO line search rejected every step for "
                  f"{TRPO_REJECTED_WARN} iterations in a row (trpo/accepted = 0), so the policy is not learning; "
                  f"check {_step_sizes(self.cfg)} and the advantages", file=sys.stderr)


class _Checkpoints:
    """Writes a run's ``last.pt`` / ``best.pt`` (each with its weights-only ``.safetensors`` export beside it)
    and remembers the iteration ``last.pt`` holds."""

    def __init__(self, ckpt_dir: Path, cfg: CommonConfig, learner: Any, saved: int | None) -> None:
        self.ckpt_dir, self.cfg, self.learner, self.saved = ckpt_dir, cfg, learner, saved

    def write(self, iteration: int, best: float | None, name: str = "last.pt") -> None:
        config, learner_state = config_to_dict(self.cfg), self.learner.state_dict()
        state = {"iteration": iteration, "config": config, "learner": learner_state, "best": best}
        save_checkpoint(self.ckpt_dir / name, state)
        save_weights((self.ckpt_dir / name).with_suffix(".safetensors"), learner_state, iteration, config)
        if name == "last.pt":
            self.saved = iteration


def _diverged(cfg: CommonConfig, it: int, rejected: str, saved: int | None) -> TrainingDiverged:
    """The error that stops a run after :data:`MAX_REJECTED` rejected steps, naming the likely cause."""
    kept = (f"checkpoints/last.pt keeps iteration {saved}, the last good state; --resume it with smaller step "
            "sizes (--set), or start again with --overwrite" if saved is not None
            else "no checkpoint was written; start again with smaller step sizes (--set) and --overwrite")
    return TrainingDiverged(
        f"training stopped at iteration {it}: {MAX_REJECTED} meta-steps in a row were rejected ({rejected}); the "
        f"inner or outer step size ({_step_sizes(cfg)}) is likely too large; {kept}"
    )


def train(
    cfg: CommonConfig | None = None,
    *,
    logdir: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
) -> Path:
    """Meta-train ``cfg`` (or continue the run in ``resume``); returns the run directory.

    ``overwrite`` deletes what a ``logdir`` holding a run holds and starts again (without it such
    a directory is refused). ``stop_after`` stops (with a checkpoint, as Ctrl-C would) after that
    many iterations of this call; tests use it to interrupt a run deterministically.
    ``time_limit_s`` stops the same way once this call has run that long (a wall-clock budget;
    the iteration in progress finishes first).

    Raises:
        RunDirError: the directory is owned by another run, holds a run, or cannot be written.
        TrainingDiverged: :data:`MAX_REJECTED` non-finite meta-steps in a row; the checkpoints
            are those of the last good state.
    """
    cfg, run_dir, state, learner, lock = _open_run(cfg, logdir, resume, overrides, overwrite, quiet)
    ckpt_dir = run_dir / "checkpoints"
    start, best = 0, None
    if state is not None:
        start, best = int(state["iteration"]), state.get("best")
    ckpt = _Checkpoints(ckpt_dir, cfg, learner, saved=start if state is not None else None)

    it = start
    try:
        logger = RunLogger(run_dir, resume_iteration=start if state is not None else None)
        progress = Progress(cfg.num_iterations, start, stream=io.StringIO() if quiet else None)
        if not quiet:
            print(f"[metarl] run dir: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)
        if state is None:
            logger.log_config(config_to_dict(cfg))
        guard = _Guard(cfg, learner)
        shown: dict[str, float] = {}
        t_start = time.perf_counter()
        try:
            with _StopFlag() as stop:
                for it in range(start + 1, cfg.num_iterations + 1):
                    last = it == cfg.num_iterations
                    log = it % cfg.log_every == 0 or last
                    metrics, rejected = guard.step(it, log)
                    if rejected is None and (it % cfg.eval.every == 0 or last):
                        metrics.update(learner.validate())
                        value = metrics.get(learner.best_key, float("nan"))
                        if _is_better(value, best, learner.best_mode):
                            best = value
                            ckpt.write(it, best, "best.pt")
                    if log or rejected is not None:
                        metrics["time/elapsed_s"] = time.perf_counter() - t_start
                        logger.log(it, metrics)
                        shown = {k: v for k, v in metrics.items() if k.endswith(("_post", "_pre"))} or shown
                    if rejected is not None and guard.rejected >= MAX_REJECTED:
                        raise _diverged(cfg, it, rejected, ckpt.saved)
                    progress.update(it, shown, force=last)
                    out_of_time = time_limit_s is not None and time.perf_counter() - t_start >= time_limit_s
                    stopping = stop.requested or out_of_time or (stop_after is not None and it - start >= stop_after)
                    # a rejected step writes no periodic checkpoint (last.pt keeps the last good iteration)
                    if (it % cfg.checkpoint_every == 0 and rejected is None) or last or stopping:
                        ckpt.write(it, best)
                    if stopping:
                        break
            logger.log_hparams(config_to_dict(cfg))  # a normal end, a time limit or a stop (not an error)
        finally:
            progress.close()
            logger.close()
    finally:
        learner.close()
        lock.release()
    if not quiet:
        print(f"[metarl] stopped at iteration {it}/{cfg.num_iterations}; checkpoint {ckpt_dir / 'last.pt'}",
              file=sys.stderr)
    return run_dir

