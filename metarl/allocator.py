"""Keep freed memory in the process instead of handing it back to the kernel after every use.

glibc's malloc serves each block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps it on ``free``. A meta-update allocates and frees the same large temporaries (activations, Hessian-
and Fisher-vector products of every task) thousands of times per iteration, so every one of them is
zero-filled page by page again: minor page faults, kernel time. ``keep_freed_memory()`` turns both
hand-backs off (``M_MMAP_MAX = 0``: every block from the heap; ``M_TRIM_THRESHOLD`` at its maximum: the
heap is not shrunk), so the second iteration reuses the first one's pages. The cost is that the
process keeps its peak heap until it exits. Measured in ``docs/design-notes.md``.
"""

from __future__ import annotations

import ctypes
import sys

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (see the module docstring). True where it took
    effect; False (and nothing changed) off Linux or with another C library."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
