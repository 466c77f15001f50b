"""Run logging: TensorBoard scalars, ``metrics.csv`` and a console progress line.

Library code returns metric dicts with namespaced keys (``train/loss_post``,
``val/mse_post``, ``trpo/kl``, ``time/sample_s``); only the training loop writes them.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import yaml

from metarl.checkpoint import atomic_write_bytes


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsCSV:
    """A wide CSV, one row per logged iteration; new keys widen the header (file rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        if path.is_file():  # resume: keep what was written
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = list(reader)

    def truncate_after(self, iteration: int) -> None:
        """Drop rows past ``iteration`` (written after the checkpoint a resume starts from), and a row
        whose iteration does not parse (cut short when a process was killed while appending it)."""

        def row_iteration(row: dict[str, str]) -> float:
            try:
                return float(row.get("iteration") or "nan")
            except ValueError:
                return math.nan

        kept = [r for r in self.rows if row_iteration(r) <= iteration]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._rewrite()

    def _rewrite(self) -> None:
        """The whole file again (new columns), atomically: a kill meanwhile keeps the old file."""
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def write(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": str(iteration), **{k: f"{v:.6g}" for k, v in metrics.items()}}
        new = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)


class Progress:
    """One console line: iteration, key metrics, speed and ETA.

    Kept by hand rather than tqdm (which evaluation, benchmarks and data preparation use,
    :mod:`metarl.progress`): training runs for hours into log files, and when stderr is not a
    terminal this writes one newline-ended line every 10 s, which ``tail -f`` and ``grep`` read
    line by line; tqdm writes ``\r``-separated updates that pile up into one ever-longer line.
    It also shows the namespaced metrics (``train.post``, ``val.mse_post``) in the loop's order.
    Speed and ETA come from the last ``window`` iterations, so a pause (SIGSTOP, a busy machine) or a
    slow start ages out of them; below one iteration per second the speed reads as seconds per iteration.
    """

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, every_s: float = 0.5,
                 window: int = 20) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.marks: deque[tuple[float, int]] = deque([(time.perf_counter(), start)], maxlen=window + 1)
        self.last = 0.0
        self.every_s = every_s if self.tty else 10.0

    def update(self, iteration: int, shown: dict[str, float], force: bool = False) -> None:
        now = time.perf_counter()
        self.marks.append((now, iteration))
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        t_old, it_old = self.marks[0]
        rate = (iteration - it_old) / max(now - t_old, 1e-9)
        eta = (self.total - iteration) / rate if rate > 0 else float("inf")
        speed = f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it" if rate > 0 else "- it/s"
        pct = 100.0 * iteration / max(self.total, 1)
        parts = " ".join(f"{_short(k)} {v:.4g}" for k, v in shown.items())
        line = f"it {iteration}/{self.total} [{pct:5.1f}%] {parts} | {speed} ETA {_fmt_duration(eta)}"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class RunLogger:
    """TensorBoard + metrics.csv under one run directory."""

    def __init__(self, logdir: Path, resume_iteration: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.csv = MetricsCSV(logdir / "metrics.csv")
        if resume_iteration is not None:
            self.csv.truncate_after(resume_iteration)
        self.tb = SummaryWriter(
            str(logdir), purge_step=None if resume_iteration is None else resume_iteration + 1, flush_secs=10
        )

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, iteration)
        self.csv.write(iteration, metrics)

    def log_config(self, config: dict[str, Any]) -> None:
        """The resolved config as YAML text (TensorBoard's Text tab, tag ``config``)."""
        text = yaml.safe_dump(config, sort_keys=False)
        self.tb.add_text("config", f"```yaml\n{text}```", 0)

    def final_metrics(self) -> dict[str, float]:
        """The last logged value of each ``val/*`` key and of the main train metric (``train/return_post``,
        else ``train/loss_post``), from ``metrics.csv`` (so a resumed run counts what it logged before)."""
        last: dict[str, float] = {}
        for row in self.csv.rows:
            for k, v in row.items():
                if k and v not in (None, ""):
                    try:
                        last[k] = float(v)
                    except ValueError:
                        continue
        keys = [k for k in last if k.startswith("val/")]
        keys += next(([k] for k in ("train/return_post", "train/loss_post") if k in last), [])
        return {k: last[k] for k in keys}

    def log_hparams(self, config: dict[str, Any]) -> None:
        """The config's scalar hyperparameters (dotted keys) and the run's final metrics for TensorBoard's
        HParams tab, written into this run's own event file (``SummaryWriter.add_hparams`` would start a
        sub-run and log the metrics again; the HParams tab reads them from the scalars already here)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = self.final_metrics()
        writer = self.tb._get_file_writer()
        for summary in hparams(flat_hparams(config), metrics):
            writer.add_summary(summary)

    def flush(self) -> None:
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``config``'s scalar values (bool, int, float, str) under dotted keys; lists and ``None`` are left out."""
    out: dict[str, bool | int | float | str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
    return out


def _short(key: str) -> str:
    """A metric's name on the progress line, its namespace kept: ``train/return_post`` -> ``train.post``,
    ``val/return_pre`` -> ``val.pre``, ``val/accuracy_post`` -> ``val.accuracy_post``."""
    space, _, name = key.rpartition("/")
    name = name.removeprefix("return_")
    return f"{space}.{name}" if space else name
