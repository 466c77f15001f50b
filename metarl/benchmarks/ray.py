"""The Ray sampler against the local sampler on this machine: seconds per ``sample`` call.

Same workload for both, a 2x64 tanh Gaussian MLP policy with shared parameters:
``navigation2d`` (20 tasks x 20 episodes x 100 steps, the paper's 2D-navigation meta-batch) and
``halfcheetah_vel`` (40 x 20 x 100, the locomotion meta-batch at the reference implementation's
horizon). The local sampler steps all tasks in this process (``--local-workers`` physics
threads, default all cores); the Ray sampler splits them across ``--workers`` actors (one CPU,
one physics thread each) of a local Ray started for the run (or ``--address``). After one
warm-up call each (env and actor start-up, checked to give identical episodes), the timed
calls alternate local, Ray, local, Ray, ... so that a busy machine's load falls on both alike;
the median seconds per call and their ratio are printed (target: Ray within 1.5x of local).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import fields

import gymnasium as gym
import numpy as np
import torch

from metarl.maml import detach_params, params_of
from metarl.progress import progress
from metarl.rl.episodes import Episodes
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.sampler import make_sampler

#: name: (env id, tasks, episodes per task, horizon)
WORKLOADS = {
    "navigation2d": ("metarl/Navigation2D-v0", 20, 20, 100),
    "halfcheetah_vel": ("metarl/HalfCheetahVel-v0", 40, 20, 100),
}
TARGET = 1.5


def _identical(a: list[Episodes], b: list[Episodes]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(getattr(x, f.name), getattr(y, f.name)) for x, y in zip(a, b, strict=True) for f in fields(Episodes)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metarl bench ray", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), action="append",
                    help="repeatable (default: navigation2d and halfcheetah_vel)")
    ap.add_argument("--calls", type=int, default=5, help="timed sample calls per sampler (after 1 warm-up)")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors")
    ap.add_argument("--local-workers", type=int, default=0, help="local physics threads (0: all cores)")
    ap.add_argument("--address", default=None, help="Ray cluster to join (default: start a local Ray)")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.workers < 1:
        ap.error("--calls and --workers must be >= 1")
    from metarl.rl.ray_sampler import RaySampler  # needs the Ray extra: pip install -e .[ray]

    torch.set_num_threads(1)
    status = 0
    for name in args.workload or ["navigation2d", "halfcheetah_vel"]:
        env_id, n_tasks, per_task, horizon = WORKLOADS[name]
        probe = gym.make(env_id)
        obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
        tasks = probe.unwrapped.sample_tasks(n_tasks, np.random.default_rng(0))
        probe.close()
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(obs_dim, act_dim, (64, 64), "tanh")
        params = detach_params(params_of(policy))
        common = dict(episodes_per_task=per_task, seed=0, horizon=horizon)
        local = make_sampler(env_id, num_workers=args.local_workers or None, **common)
        t0 = time.perf_counter()
        remote = RaySampler(env_id, num_workers=args.workers, address=args.address, **common)
        start_s = time.perf_counter() - t0
        try:
            same = _identical(local.sample(policy, params, tasks), remote.sample(policy, params, tasks))
            times: dict[str, list[float]] = {"local": [], "ray": []}
            for _ in progress(range(args.calls), desc=f"bench {name}", unit="call", leave=False):
                for key, sampler in (("local", local), ("ray", remote)):
                    t0 = time.perf_counter()
                    sampler.sample(policy, params, tasks)
                    times[key].append(time.perf_counter() - t0)
        finally:
            local.close()
            remote.close()
        lo, ra = statistics.median(times["local"]), statistics.median(times["ray"])
        steps = n_tasks * per_task * horizon
        print(f"{name}: {n_tasks} tasks x {per_task} episodes x {horizon} steps, 2x64 tanh, "
              f"median of {args.calls} interleaved calls")
        print(f"  local ({args.local_workers or 'all'} cores)  {lo:7.3f} s/call  ({steps / lo:,.0f} env-steps/s)")
        print(f"  ray   ({args.workers} actors) {ra:7.3f} s/call  ({steps / ra:,.0f} env-steps/s; "
              f"start-up {start_s:.1f} s, once)")
        print(f"  ratio ray/local    {ra / lo:7.2f}x  (target <= {TARGET}x; "
              f"identical episodes: {'yes' if same else 'NO'})")
        if not same:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
