"""Progress bars with an ETA (tqdm, on stderr) for evaluation, benchmarks, downloads and data preparation.

One place sets how they look: on a terminal a bar redrawn at most twice a second; when stderr is
a file or pipe (logs, CI) at most one update every :data:`NON_TTY_INTERVAL_S`, so a long job adds a
few ``\\r``-separated updates, not thousands. ``TQDM_DISABLE=1`` (tqdm's own environment override)
silences them all; ``disable=True`` silences one. Training keeps its own line
(:class:`metarl.logger.Progress`, which says why).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

NON_TTY_INTERVAL_S = 10.0
"""Seconds between updates when stderr is not a terminal (the training line's rate too)."""


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             unit_scale: bool = False, leave: bool = True, disable: bool = False) -> tqdm:
    """A tqdm bar on the current ``sys.stderr`` (so pytest's capture sees it) named ``desc``; ``leave=False``
    erases it when done (benchmarks, whose result lines are the output)."""
    tty = sys.stderr.isatty()
    quiet = disable or os.environ.get("TQDM_DISABLE", "") not in ("", "0")  # read now: tqdm reads it at import
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, disable=quiet,
                mininterval=0.5 if tty else NON_TTY_INTERVAL_S, dynamic_ncols=tty, unit_scale=unit_scale)
