"""`metarl.allocator.keep_freed_memory`: freed large blocks stay in the process, so reallocating them
faults no pages in again (what made a third of a HalfCheetah meta-update kernel time); every `metarl`
command turns it on unless METARL_KEEP_FREED_MEMORY=0."""

from __future__ import annotations

import subprocess
import sys

import pytest

import metarl.cli

# N times: a 64 MiB tensor written and freed; prints the minor page faults that cost
LOOP = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from metarl.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.empty(1).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    x = torch.empty(16 * 2**20).fill_(1.0)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_faulting_their_pages_in_again():
    """70 more rounds fault 70 blocks' pages in again by default, and next to none with the memory kept:
    a few blocks of warm-up, which glibc spreads over more or fewer rounds (4 blocks after 10 rounds and
    8 after 80 in one CI run, 4 and 4 in most), so the bound is 16 blocks, well under the default's 70."""
    faults = {}
    for mode in ("default", "keep"):
        for rounds in (10, 80):
            out = subprocess.run([sys.executable, "-c", LOOP, mode, str(rounds)], capture_output=True, text=True,
                                 check=True)
            faults[mode, rounds] = int(out.stdout)
    block = 16 * 2**20 * 4 // 4096  # one 64 MiB block, in 4 KiB pages
    assert faults["default", 80] - faults["default", 10] > 50 * block
    assert faults["keep", 80] - faults["keep", 10] < 16 * block
    assert faults["keep", 80] < faults["default", 80] / 5


def test_every_command_keeps_freed_memory_unless_told_not_to(monkeypatch):
    calls = []
    monkeypatch.setattr("metarl.allocator.keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("METARL_KEEP_FREED_MEMORY", raising=False)
    assert metarl.cli.main(["configs"]) == 0
    assert calls == [1]
    monkeypatch.setenv("METARL_KEEP_FREED_MEMORY", "0")
    assert metarl.cli.main(["configs"]) == 0
    assert calls == [1]
