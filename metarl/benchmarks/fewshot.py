"""Meta-iteration throughput for few-shot classification: vmap over tasks vs a per-task loop.

The setting of the MAML paper's Omniglot runs (Finn et al. 2017, arXiv 1703.03400, sec.
5.2): 5-way 1-shot, meta-batch 32, one inner step with lr 0.4, second-order meta-gradient,
the 4-block conv net, Adam; but 15 query examples per class by default (the paper's code uses
15 for MiniImagenet and one for Omniglot: ``--query 1``), so that the query pass weighs as in
the heavier setting. Both variants compute the
same maths on the same episodes, in one process:

- ``batched``: :func:`metarl.maml.adapt_batched` (``torch.func.vmap`` over tasks; per-task
  convolution weights become one grouped convolution) and a vmapped query loss;
- ``loop``: :func:`metarl.maml.adapt` and the query loss for one task at a time in Python.

A meta-iteration is: inner adaptation on the support sets, query loss, meta-gradient,
Adam step. Episodes are sampled beforehand (sampling time is reported separately). Peak
memory is the process's peak resident set size during each phase (Linux: the peak is
reset between phases through ``/proc/self/clear_refs``; elsewhere ``getrusage`` maxrss,
which never decreases, so the later phase shows the max of both) and, on CUDA, the
allocator's peak. Omniglot is used when it is found under the data root; otherwise
synthetic binary images of the same shape (the timing does not depend on the pixels).

On one CPU thread both variants are compute-bound and the loop keeps each task's
activations in cache, so vmap over the whole meta-batch is not faster there (``--chunk 4``
vmaps 4 tasks at a time); vmap's gain is in removing per-task kernel launches and Python
dispatch, i.e. on GPUs and many-core CPUs.

Run: ``python benchmarks/bench_fewshot.py --iterations 5`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from metarl.fewshot.download import DatasetNotFoundError
from metarl.fewshot.episodes import FewShotTasks
from metarl.fewshot.models import Conv4, cross_entropy_loss
from metarl.fewshot.omniglot import omniglot_tasks
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import adapt, adapt_batched, params_of
from metarl.progress import progress


def _peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _tasks(args: argparse.Namespace) -> tuple[FewShotTasks, str]:
    if not args.synthetic:
        try:
            tasks = omniglot_tasks("trainval", ways=args.ways, shots=args.shots, query=args.query,
                                   root=args.root, cache_dir=args.cache_dir)
            return tasks, f"Omniglot vinyals trainval ({tasks.num_classes} classes with rotations)"
        except DatasetNotFoundError as e:
            print(f"[bench] Omniglot not found ({e}); using synthetic images", file=sys.stderr)
    rng = np.random.default_rng(0)
    images = (rng.random((200, 20, 1, 28, 28)) < 0.1).astype(np.uint8) * 255
    return FewShotTasks(images, ways=args.ways, shots=args.shots, query=args.query), "synthetic 28x28"


def make_meta_step(variant: str, model: torch.nn.Module, opt: torch.optim.Optimizer, *, lr: float, steps: int,
                   first_order: bool, chunk: int = 0) -> Callable[[TaskBatch], float]:
    """One meta-iteration (adapt, query loss, meta-gradient, Adam step) -> mean query loss.

    ``variant="batched"`` vmaps over all tasks at once, or over chunks of ``chunk`` tasks
    (a Python loop over chunks) when ``chunk > 0``; ``"loop"`` handles one task at a time.
    """
    loss_fn = cross_entropy_loss(model)

    def batched(b: TaskBatch) -> torch.Tensor:
        params = params_of(model)
        size = chunk if chunk > 0 else b.num_tasks
        total = 0.0
        for lo in range(0, b.num_tasks, size):
            xs, ys = b.x_support[lo:lo + size], b.y_support[lo:lo + size]
            fast = adapt_batched(loss_fn, params, (xs, ys), lr=lr, steps=steps, first_order=first_order)
            total = total + torch.func.vmap(loss_fn)(fast, (b.x_query[lo:lo + size],
                                                            b.y_query[lo:lo + size])).sum()
        return total / b.num_tasks

    def loop(b: TaskBatch) -> torch.Tensor:
        params = params_of(model)
        losses = []
        for i in range(b.num_tasks):
            fast = adapt(loss_fn, params, (b.x_support[i], b.y_support[i]), lr=lr, steps=steps,
                         first_order=first_order)
            losses.append(loss_fn(fast, (b.x_query[i], b.y_query[i])))
        return torch.stack(losses).mean()

    outer = {"batched": batched, "loop": loop}[variant]

    def step(b: TaskBatch) -> float:
        opt.zero_grad(set_to_none=True)
        loss = outer(b)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def main(argv: Sequence[str] | None = None) -> int:
    """Print meta-iterations/s of both variants, their ratio and peak memory. Returns 0."""
    p = argparse.ArgumentParser(prog="bench_fewshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=5, help="timed meta-iterations per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed meta-iterations per variant first")
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--inner-lr", type=float, default=0.4)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--root", default=None, help="data root (else $METARL_DATA, else ~/.cache/metarl)")
    p.add_argument("--cache-dir", default=None, help="Omniglot cache folder (default under the root)")
    p.add_argument("--synthetic", action="store_true", help="use synthetic images even if Omniglot is found")
    p.add_argument("--variants", default="loop,batched", help="comma-separated, run in this order")
    p.add_argument("--chunk", type=int, default=0,
                   help="batched: vmap over chunks of this many tasks (0: the whole meta-batch at once)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    tasks, source = _tasks(args)
    g = torch.Generator().manual_seed(0)
    n_batches = args.warmup + args.iterations
    t0 = time.perf_counter()
    batches = [tasks.sample(args.meta_batch, g) for _ in range(n_batches)]
    sample_s = (time.perf_counter() - t0) / n_batches
    batches = [b.to(device) for b in batches]

    print(f"data: {source}; {args.ways}-way {args.shots}-shot, {args.query} query/class, meta-batch "
          f"{args.meta_batch}, {args.inner_steps} inner step(s), "
          f"{'first' if args.first_order else 'second'}-order, conv4 ({args.filters} filters), device "
          f"{device}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print(f"sampling: {sample_s * 1e3:.1f} ms per meta-batch (CPU)")
    results = {}
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        model = Conv4(1, args.ways, filters=args.filters).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = make_meta_step(variant, model, opt, lr=args.inner_lr, steps=args.inner_steps,
                              first_order=args.first_order, chunk=args.chunk)
        exact_peak = _peak_reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for b in batches[: args.warmup]:
            step(b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        timed = progress(batches[args.warmup:], desc=f"bench {variant}", leave=False)
        losses = [step(b) for b in timed]  # float() syncs each step
        dt = (time.perf_counter() - t0) / args.iterations
        mem = f"peak RSS {_peak_rss_mb():.0f} MB" + ("" if exact_peak else " (process-wide)")
        if device.type == "cuda":
            mem += f", peak CUDA {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
        results[variant] = dt
        print(f"{variant:>8}: {1 / dt:7.3f} meta-it/s ({dt * 1e3:8.1f} ms/it), {mem}, "
              f"last query loss {losses[-1]:.4f}")
    if "loop" in results and "batched" in results:
        print(f"speed-up batched / loop: {results['loop'] / results['batched']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
