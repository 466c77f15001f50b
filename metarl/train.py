"""The training loop shared by every benchmark: logging, checkpoints, signals and resume.

A learner (``SupervisedMAML``, ``RLLearner``) owns the model, optimiser and random
streams and exposes ``train_step(iteration, log) -> metrics``, ``validate() -> metrics``,
``state_dict``/``load_state_dict`` and ``best_key``/``best_mode``; this module does the rest.
"""

from __future__ import annotations

import io
import math
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from metarl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metarl.config import CommonConfig, ConfigError, config_from_dict, config_to_dict, dump_config
from metarl.families import family_of
from metarl.logger import Progress, RunLogger


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


def _open_run(
    cfg: CommonConfig | None, logdir: str | Path | None, resume: str | Path | None,
    overrides: list[tuple[str, Any]] | None,
) -> tuple[CommonConfig, Path, dict[str, Any] | None]:
    """The run's config, directory (created, with config.yaml) and, when resuming, its checkpoint."""
    state = None
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise CheckpointError(f"--resume {str(run_dir)!r}: not a run directory")
        state = load_checkpoint(run_dir)
        cfg = config_from_dict(state["config"], overrides or [])
    elif cfg is None:
        raise ValueError("train: pass a config or resume=RUN_DIR")
    check_device(cfg.device)
    run_dir = Path(logdir) if logdir is not None and resume is None else (Path(resume) if resume else None)
    run_dir = run_dir or default_logdir(cfg)
    if resume is None and (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
            "or pass another --logdir"
        )
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    return cfg, run_dir, state


def train(
    cfg: CommonConfig | None = None,
    *,
    logdir: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    quiet: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
) -> Path:
    """Meta-train ``cfg`` (or continue the run in ``resume``); returns the run directory.

    ``stop_after`` stops (with a checkpoint, as Ctrl-C would) after that many iterations of
    this call; tests use it to interrupt a run deterministically. ``time_limit_s`` stops the
    same way once this call has run that long (a wall-clock budget; the iteration in progress
    finishes first).
    """
    cfg, run_dir, state = _open_run(cfg, logdir, resume, overrides)
    ckpt_dir = run_dir / "checkpoints"

    learner = build_learner(cfg)
    start, best = 0, None
    if state is not None:
        learner.load_state_dict(state["learner"])
        start, best = int(state["iteration"]), state.get("best")
    logger = RunLogger(run_dir, resume_iteration=start if state is not None else None)
    progress = Progress(cfg.num_iterations, start, stream=io.StringIO() if quiet else None)
    if not quiet:
        print(f"[metarl] run dir: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)

    def checkpoint(iteration: int, name: str = "last.pt") -> None:
        save_checkpoint(
            ckpt_dir / name,
            {"iteration": iteration, "config": config_to_dict(cfg), "learner": learner.state_dict(), "best": best},
        )

    it = start
    shown: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        with _StopFlag() as stop:
            for it in range(start + 1, cfg.num_iterations + 1):
                last = it == cfg.num_iterations
                log = it % cfg.log_every == 0 or last
                metrics = learner.train_step(it, log)
                if it % cfg.eval.every == 0 or last:
                    metrics.update(learner.validate())
                    value = metrics.get(learner.best_key, float("nan"))
                    if _is_better(value, best, learner.best_mode):
                        best = value
                        checkpoint(it, "best.pt")
                if log:
                    metrics["time/elapsed_s"] = time.perf_counter() - t_start
                    logger.log(it, metrics)
                    shown = {k: v for k, v in metrics.items() if k.endswith(("_post", "_pre"))}
                progress.update(it, shown, force=last)
                out_of_time = time_limit_s is not None and time.perf_counter() - t_start >= time_limit_s
                stopping = stop.requested or out_of_time or (stop_after is not None and it - start >= stop_after)
                if it % cfg.checkpoint_every == 0 or last or stopping:
                    checkpoint(it)
                if stopping:
                    break
    finally:
        progress.close()
        logger.close()
        learner.close()
    if not quiet:
        print(f"[metarl] stopped at iteration {it}/{cfg.num_iterations}; checkpoint {ckpt_dir / 'last.pt'}",
              file=sys.stderr)
    return run_dir
