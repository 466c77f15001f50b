"""Peak memory of one second-order meta-iteration, with and without gradient checkpointing.

The setting of the MAML paper's Omniglot 20-way 1-shot runs (Finn et al. 2017, arXiv 1703.03400,
sec. 5.2 and appendix A.1; ``omniglot_20w1s.yaml``) but with 15 query examples per class (the
config, as the paper's code, has one; 15 holds more activations, the case memory matters in), meta-batch 16
(vmapped 4 tasks at a time, the config's ``task_chunk``), 5 inner steps at lr 0.1, second order,
the 4-block conv net with 64 filters, Adam. Each variant runs in a fresh process (peak resident
memory never decreases within one), through :class:`~metarl.fewshot.learner.SupervisedMAML`'s
``train_step``, ``inner.checkpoint`` off (``stored``) and on (``checkpoint``):

- memory: on the CPU the peak resident set size during the meta-iterations minus the resident
  size once everything is built, before the first (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``;
  elsewhere ``getrusage`` maxrss); on CUDA ``torch.cuda.max_memory_allocated`` minus the allocated
  memory before the first meta-iteration;
- time: seconds per meta-iteration after ``--warmup`` untimed ones.

The images are synthetic (binary 28x28, the shape of the preprocessed Omniglot drawings): memory and
time do not depend on the pixel values.

Run: ``metarl bench memory`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

VARIANTS = {"stored": False, "checkpoint": True}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def measure(args: argparse.Namespace, checkpoint: bool) -> dict[str, float]:
    """Build the learner, run ``warmup + iterations`` meta-iterations; peak memory above the built state and s/it."""
    from metarl.fewshot.episodes import FewShotTasks
    from metarl.fewshot.learner import SupervisedMAML
    from metarl.fewshot.models import Conv4

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = (rng.random((100, 20, 1, 28, 28)) < 0.1).astype(np.uint8) * 255
    tasks = FewShotTasks(images, ways=args.ways, shots=args.shots, query=args.query)
    val = tasks.sample(1, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    learner = SupervisedMAML(
        Conv4(1, args.ways, filters=args.filters), tasks, val, loss="ce", meta_batch_size=args.meta_batch,
        inner_lr=args.inner_lr, inner_steps=args.inner_steps, first_order=False, learn_lr=False, outer_lr=1e-3,
        grad_clip=0.0, seed=0, device=args.device, task_chunk=args.chunk, checkpoint=checkpoint,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    exact = _reset_peak()
    base_rss = _status_mb("VmRSS") if exact else _maxrss_mb()
    for it in range(1, args.warmup + 1):  # in the peak: memory the allocator keeps after it is no baseline
        learner.train_step(it, log=False)
    t0 = time.perf_counter()
    for it in range(args.warmup + 1, args.warmup + args.iterations + 1):
        learner.train_step(it, log=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - t0) / args.iterations
    out = {"s_per_it": seconds, "base_rss_mb": float(base_rss or 0.0),
           "peak_rss_mb": float((_status_mb("VmHWM") if exact else None) or _maxrss_mb())}
    out["rss_mb"] = out["peak_rss_mb"] - out["base_rss_mb"]
    if device.type == "cuda":
        out["cuda_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print each variant's peak memory and time per meta-iteration and the ratios. Returns 0."""
    p = argparse.ArgumentParser(prog="metarl bench memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=1, help="timed meta-iterations per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed meta-iterations first (same process)")
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=0.1)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--chunk", type=int, default=4, help="tasks per vmap call (omniglot_20w1s: 4; 0: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--variants", default="stored,checkpoint")
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args, VARIANTS[args.child])))
        return 0
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--child"]
    print(f"{args.ways}-way {args.shots}-shot, {args.query} query/class, meta-batch {args.meta_batch} (vmap chunks "
          f"of {args.chunk or args.meta_batch}), {args.inner_steps} inner steps, second order, conv4 ({args.filters} "
          f"filters), synthetic 28x28 images, device {args.device}, torch {torch.__version__}; {args.warmup} warm-up "
          f"+ {args.iterations} timed meta-iteration(s), each variant in a fresh process")
    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, "-m", "metarl.benchmarks.memory", *passed, "--child", variant]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        results[variant] = r
        mem = f"peak RSS {r['rss_mb']:8.0f} MB above the built state ({r['base_rss_mb']:.0f} MB)"
        if "cuda_mb" in r:
            mem += f", peak CUDA allocated {r['cuda_mb']:.0f} MB"
        print(f"{variant:>10}: {r['s_per_it']:7.2f} s/meta-iteration, {mem}", flush=True)
    if {"stored", "checkpoint"} <= set(results):
        s, c = results["stored"], results["checkpoint"]
        key = "cuda_mb" if "cuda_mb" in s else "rss_mb"
        print(f"checkpoint / stored: memory {c[key] / s[key]:.2f}x, time {c['s_per_it'] / s['s_per_it']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
