"""Generic-sampler throughput: any task-protocol id, with the policy in the loop, against Gymnasium's vector envs.

``metarl bench generic [--env-id ID] [--envs 20] [--steps 500] [--workers 2] [--repeats 3]`` measures, in
env-steps per second (one ``env.step`` of one env), on one id (default Meta-World's ML1 reach when
``metaworld`` imports, else examples/goal_pendulum.py's GoalPendulum):

- ours: :class:`metarl.rl.generic_sampler.GenericSampler`, ``--envs`` tasks x 1 episode of ``--steps`` steps
  on ``--workers`` worker processes, each running its tasks' rollouts with a copy of the 2x64 tanh
  Gaussian MLP policy;
- Gymnasium's ``SyncVectorEnv`` and ``AsyncVectorEnv`` over the same ``--envs`` envs, each given its task
  through ``reset(options={"task": ...})``, the same policy (same size, sampling its actions) in the loop;
- a bare loop: one env, random actions, no policy (what one core steps the env at).

The variants run interleaved, ``--repeats`` times each (medians printed), so that a load on the machine
from other processes weighs on all of them alike. The first sampler call (worker start-up) and each vector
env's construction are not timed. It prints each rate and the ratios the project tracks: ours / the better
of Sync and Async (target >= 1.5 on 2 cores) and ours / the bare loop.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.vector import default_num_workers
from metarl.maml import detach_params, params_of
from metarl.rl.generic_sampler import GenericSampler
from metarl.rl.policies import GaussianMLPPolicy

ML1_REACH = "metarl.envs.metaworld:metarl/ML1-reach-v3"
PENDULUM = "goal_pendulum:examples/GoalPendulum-v0"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def default_env_id() -> str:
    """ML1 reach where Meta-World is installed, else the GoalPendulum example (examples/ put on the path)."""
    try:
        import metaworld  # noqa: F401
    except ImportError:
        if str(EXAMPLES) not in sys.path:
            sys.path.insert(0, str(EXAMPLES))
        return PENDULUM
    return ML1_REACH


class TaskOnReset(gym.Wrapper):
    """Resets its env with ``options={"task": task}``: one task per sub-env of a Gymnasium vector env, whose
    ``reset`` passes the same options to every sub-env."""

    def __init__(self, env: gym.Env, task: dict[str, Any]) -> None:
        super().__init__(env)
        self.task = task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return self.env.reset(seed=seed, options={**(options or {}), "task": self.task})


def _factory(env_id: str, task: dict[str, Any]) -> Callable[[], gym.Env]:
    return lambda: TaskOnReset(gym.make(env_id), task)


def ours(env_id: str, tasks: list[dict], policy: torch.nn.Module, steps: int, workers: int) -> Callable[[], float]:
    """A warm :class:`GenericSampler` on ``workers`` processes: each call samples once, returns env-steps/s."""
    sampler = GenericSampler(env_id, episodes_per_task=1, num_workers=workers, seed=0, horizon=steps)
    params = detach_params(params_of(policy))
    sampler.sample(policy, params, tasks)  # start the workers and make the envs

    def run() -> float:
        t0 = time.perf_counter()
        episodes = sampler.sample(policy, params, tasks)
        n = sum(int(e.lengths().sum()) for e in episodes)
        return n / (time.perf_counter() - t0)

    run.close = sampler.close  # type: ignore[attr-defined]
    return run


def gym_vector(kind: type, env_id: str, tasks: list[dict], policy: torch.nn.Module, steps: int) -> Callable[[], float]:
    """A Gymnasium vector env (``SyncVectorEnv`` / ``AsyncVectorEnv``) with ``policy`` sampling the actions."""
    vec = kind([_factory(env_id, t) for t in tasks])
    seeds = list(range(len(tasks)))

    def run() -> float:
        obs, _ = vec.reset(seed=seeds)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(steps):
                actions = policy(torch.as_tensor(obs, dtype=torch.float32)).sample()
                obs, *_ = vec.step(actions.numpy())
        return len(tasks) * steps / (time.perf_counter() - t0)

    run.close = vec.close  # type: ignore[attr-defined]
    return run


def bare(env_id: str, task: dict[str, Any], steps: int) -> Callable[[], float]:
    """One env stepped in a loop with random actions (reset with the task at each episode end)."""
    env = gym.make(env_id)
    env.action_space.seed(0)

    def run() -> float:
        env.reset(seed=0, options={"task": task})
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset(options={"task": task})
        return steps / (time.perf_counter() - t0)

    run.close = env.close  # type: ignore[attr-defined]
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metarl bench generic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env-id", default=None, help=f"a task-protocol id (default {ML1_REACH}, else {PENDULUM})")
    ap.add_argument("--envs", type=int, default=20, help="envs stepped together (tasks x 1 episode)")
    ap.add_argument("--steps", type=int, default=500, help="steps per env and timed run")
    ap.add_argument("--workers", type=int, default=2, help="the generic sampler's worker processes")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed runs of each variant")
    ap.add_argument("--bare-steps", type=int, default=2000, help="steps of the bare single-env loop per run")
    args = ap.parse_args(argv)
    if min(args.envs, args.steps, args.workers, args.repeats, args.bare_steps) < 1:
        ap.error("--envs, --steps, --workers, --repeats and --bare-steps must be >= 1")
    env_id = args.env_id or default_env_id()
    torch.set_num_threads(1)
    probe = gym.make(env_id)
    obs_dim, act_dim = int(np.prod(probe.observation_space.shape)), int(np.prod(probe.action_space.shape))
    tasks = probe.unwrapped.sample_tasks(args.envs, np.random.default_rng(0))
    probe.close()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, (64, 64), "tanh")

    print(f"# {platform.node()}: {default_num_workers()} cores for this process, torch {torch.__version__}, "
          f"gymnasium {gym.__version__}, python {platform.python_version()}")
    print(f"{env_id}: {args.envs} envs x {args.steps} steps, 2x64 tanh Gaussian MLP in the loop, "
          f"median of {args.repeats} interleaved runs")
    variants = {
        f"ours (GenericSampler, {args.workers} workers)": ours(env_id, tasks, policy, args.steps, args.workers),
        "gymnasium SyncVectorEnv": gym_vector(gym.vector.SyncVectorEnv, env_id, tasks, policy, args.steps),
        "gymnasium AsyncVectorEnv": gym_vector(gym.vector.AsyncVectorEnv, env_id, tasks, policy, args.steps),
        "bare single-env loop (random actions)": bare(env_id, tasks[0], args.bare_steps),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(args.repeats):
            for name, run in variants.items():
                rates[name].append(run())
    finally:
        for run in variants.values():
            run.close()  # type: ignore[attr-defined]
    med = {name: statistics.median(r) for name, r in rates.items()}
    width = max(map(len, med))
    for name, r in rates.items():
        runs = ", ".join(f"{x:,.0f}" for x in r)
        print(f"  {name:<{width}}  {med[name]:>10,.0f} env-steps/s  (runs: {runs})")
    ours_rate = med[next(iter(med))]
    best_gym = max(med["gymnasium SyncVectorEnv"], med["gymnasium AsyncVectorEnv"])
    print(f"  ratio ours / better of Sync, Async  {ours_rate / best_gym:.2f}x  (target >= 1.5x)")
    print(f"  ratio ours / bare single-env loop   {ours_rate / med['bare single-env loop (random actions)']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
