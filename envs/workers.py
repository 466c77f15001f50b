"""What the two worker-process pools (:mod:`metarl.envs.physics`, :mod:`metarl.envs.gym_batch`) share:
stopping their workers. Imports nothing heavy, so that workers start quickly."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from typing import IO


def stop_workers(procs: Sequence[subprocess.Popen], send_quit: Callable[[IO[bytes]], None]) -> None:
    """Ask each worker to quit (``send_quit`` on its stdin, then the end of its stdin), wait up to 10 s
    for it and kill it after that; a worker that is already gone is skipped."""
    for proc in procs:
        try:
            send_quit(proc.stdin)
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
