"""kill -9 at random moments of a run that checkpoints every iteration, then --resume, on one run.

    python benchmarks/kill_resume.py --kills 20 --seed 0

Starts ``metarl train sinusoid --set checkpoint_every=1 --set num_iterations=100000`` in a
temporary directory. Each round: once the process is training (it has written a checkpoint of
its own), wait a random delay (seeded, 0.5-5 s) and SIGKILL it; check that ``checkpoints/last.pt``
(and ``best.pt``, once written) loads with :func:`metarl.checkpoint.load_checkpoint`; note the
stray ``*.tmp`` files the kill left; then ``--resume`` the run, which must continue (write a
checkpoint of a later iteration) and remove those files at its start. The next round kills that
resumed process; after the last kill a ``--resume --time-limit`` run must exit 0 and leave no
``*.tmp`` at all. One line per kill, then the summary; exit code 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metarl.checkpoint import CheckpointError, load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def metarl(*args: str) -> list[str]:
    return [sys.executable, "-m", "metarl", *args]


def stamp(path: Path) -> tuple[int, int] | None:
    """Changes whenever the file is replaced (atomic writes: a new inode each time)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def wait_for_new_checkpoint(proc: subprocess.Popen, last: Path, before: tuple[int, int] | None,
                            timeout: float) -> bool:
    """Until ``proc`` replaced ``last`` (it is past its start, training), or it ended / timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if stamp(last) not in (None, before):
            return True
        time.sleep(0.01)
    return False


def load(path: Path) -> tuple[bool, int | None, str]:
    try:
        return True, int(load_checkpoint(path)["iteration"]), ""
    except CheckpointError as e:
        return False, None, str(e)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--min-delay", type=float, default=0.5)
    p.add_argument("--max-delay", type=float, default=5.0)
    p.add_argument("--dir", help="run in this (new) directory and keep it (default: a temporary one)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)

    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="kill_resume_")
    root = Path(args.dir or tmp.name)
    run, last, best = root / "run", root / "run" / "checkpoints" / "last.pt", root / "run" / "checkpoints" / "best.pt"
    start = metarl("train", "sinusoid", "--logdir", str(run), "--set", "checkpoint_every=1",
                   "--set", "num_iterations=100000")
    resume = metarl("train", "--resume", str(run))
    shown = [" ".join(a.replace(str(run), "RUN") for a in cmd[2:]) for cmd in (start, resume)]
    print(f"# {shown[0]}  (then {shown[1]}); SIGKILL {args.min_delay:g}-{args.max_delay:g} s "
          f"after the process wrote its first checkpoint, seed {args.seed}")

    loads_ok = resumes_ok = tmp_before = tmp_after = 0
    stale: list[Path] = []  # what the previous kill left
    killed_at: int | None = None
    line = ""
    t0 = time.monotonic()
    for k in range(1, args.kills + 1):
        before = stamp(last)
        with open(root / f"stderr_{k}.txt", "w") as err:
            proc = subprocess.Popen(resume if k > 1 else start, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        training = wait_for_new_checkpoint(proc, last, before, timeout=300)
        if k > 1:  # the resume after kill k - 1: it is past its start, so its stray-file cleanup ran
            left = sum(p.exists() for p in stale)
            ok, it, _ = load(last)
            continued = training and ok and it is not None and killed_at is not None and it > killed_at
            resumes_ok += continued
            tmp_after += left
            print(f"{line}; resume {'ok' if continued else 'FAILED'} (iteration {it}), {left} stray left")
        if not training:
            proc.kill()
            proc.wait()
            print(f"kill {k:2d}: the process never wrote a checkpoint (exit {proc.returncode}):\n"
                  f"{(root / f'stderr_{k}.txt').read_text()[-2000:]}")
            return 1
        delay = rng.uniform(args.min_delay, args.max_delay)
        time.sleep(delay)
        proc.kill()  # SIGKILL
        proc.wait()
        ok, killed_at, why = load(last)
        best_ok = load(best)[0] if best.exists() else True
        ok = ok and best_ok
        loads_ok += ok
        stale = sorted(run.rglob("*.tmp"))
        tmp_before += len(stale)
        line = (f"kill {k:2d}: after {delay:4.2f} s, last.pt {'loads' if ok else 'DOES NOT LOAD: ' + why} "
                f"(iteration {killed_at}), {len(stale)} .tmp file(s) before resume")

    # the resume after the last kill runs to its end (--time-limit: one iteration, then a checkpoint)
    done = subprocess.run([*resume, "--time-limit", "0.0001"], env=ENV, capture_output=True, text=True)
    ok, it, _ = load(last)
    left = sum(p.exists() for p in stale)
    continued = done.returncode == 0 and ok and it is not None and killed_at is not None and it > killed_at
    resumes_ok += continued
    tmp_after += left
    anywhere = len(list(run.rglob("*.tmp")))
    print(f"{line}; resume {'ok' if continued else 'FAILED: ' + done.stderr[-500:]} (iteration {it}, exit "
          f"{done.returncode}), {left} stray left, {anywhere} .tmp in the run after it ended")
    print(f"summary: kills {args.kills}, loads ok {loads_ok}/{args.kills}, resumes ok {resumes_ok}/{args.kills}, "
          f"tmp files seen before resume {tmp_before}, tmp files after the next start {tmp_after + anywhere} "
          f"({time.monotonic() - t0:.0f} s)")
    if tmp is not None:
        tmp.cleanup()
    return 0 if loads_ok == resumes_ok == args.kills and tmp_after + anywhere == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
