"""Sinusoid meta-iteration speed: the batched (vmap) MAML step against a plain per-task loop.

Both compute the same second-order meta-gradient (checked at start) for meta-batch 25,
K = 10, the paper's 1-40-40-1 MLP, and take an Adam step; they are timed interleaved in
one process so that machine load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metarl.fewshot.build import sinusoid_module
from metarl.fewshot.learner import make_loss
from metarl.fewshot.sinusoid import SinusoidTasks
from metarl.maml import adapt_batched, functional_forward, params_of
from metarl.progress import progress


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metarl bench maml", description=__doc__)
    ap.add_argument("--iterations", type=int, default=300, help="timed meta-iterations per variant and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--meta-batch", type=int, default=25)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from metarl.config import SinusoidConfig

    cfg = SinusoidConfig()
    torch.manual_seed(0)
    net = sinusoid_module(cfg)
    tasks = SinusoidTasks(shots=args.shots, query=args.shots)
    gen = torch.Generator().manual_seed(0)
    loss_fn = make_loss(net, "mse")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    alpha = 0.01

    def batched_grads(b):
        theta = params_of(net)
        fast = adapt_batched(loss_fn, theta, (b.x_support, b.y_support), lr=alpha, steps=1)
        loss = torch.func.vmap(loss_fn)(fast, (b.x_query, b.y_query)).mean()
        return torch.autograd.grad(loss, list(theta.values()))

    def loop_grads(b):
        # the plain implementation: autograd.grad with create_graph, one task at a time
        theta = params_of(net)
        losses = []
        for i in range(b.num_tasks):
            inner = ((functional_forward(net, theta, b.x_support[i]) - b.y_support[i]) ** 2).mean()
            g = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
            fast = {k: v - alpha * gk for (k, v), gk in zip(theta.items(), g)}
            losses.append(((functional_forward(net, fast, b.x_query[i]) - b.y_query[i]) ** 2).mean())
        return torch.autograd.grad(torch.stack(losses).mean(), list(theta.values()))

    b = tasks.sample(args.meta_batch, gen)
    err = max((x - y).abs().max().item() for x, y in zip(batched_grads(b), loop_grads(b)))
    print(f"max |batched - loop| meta-gradient difference: {err:.2e}")

    def step(fn):
        batch = tasks.sample(args.meta_batch, gen)
        grads = fn(batch)
        for p, g in zip(net.parameters(), grads):
            p.grad = g
        opt.step()

    times: dict[str, list[float]] = {"batched (vmap)": [], "plain loop": []}
    for _ in progress(range(args.rounds), desc="bench maml", unit="round", leave=False):
        for name, fn in (("batched (vmap)", batched_grads), ("plain loop", loop_grads)):
            for _ in range(10):
                step(fn)
            t = time.perf_counter()
            for _ in range(args.iterations):
                step(fn)
            times[name].append((time.perf_counter() - t) / args.iterations)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"sinusoid meta-iteration, meta-batch {args.meta_batch}, K={args.shots}, second order, "
          f"{args.threads} torch thread(s), median of {args.rounds} rounds x {args.iterations} iterations:")
    for k, v in med.items():
        print(f"  {k:16s} {v * 1e3:7.2f} ms/it  {1 / v:8.1f} it/s   70,000 its in {70_000 * v / 60:5.1f} min")
    print(f"  speed-up batched / loop: {med['plain loop'] / med['batched (vmap)']:.2f}x")
    return 0
