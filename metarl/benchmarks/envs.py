"""Environment throughput: this machine's MuJoCo limit, Gymnasium's own loop, and our batched sampler.

One process, one run (``metarl bench envs`` / ``python benchmarks/bench_envs.py``) measures, in
env-steps per second (one env-step = one ``env.step``, i.e. ``frame_skip = 5`` MuJoCo steps):

(a) the limit: ``mujoco.mj_step(model, data, nstep=5)`` on Gymnasium's HalfCheetah-v5 model in
    a tight loop on one core, and on all cores with ``mujoco.batch.Batch(nthread=cores)``;
(b) Gymnasium's HalfCheetah-v5: one env in a loop, and ``SyncVectorEnv`` (random actions,
    and with the policy in the loop);
(c) :func:`metarl.rl.sampler.make_sampler` with a 2x64 tanh Gaussian MLP policy in the loop:
    HalfCheetahVel for the paper's workload (40 tasks x 20 episodes x 200 steps,
    Finn et al. 2017 sec. 5.3) and Navigation2D at batch 800 (40 x 20, 100 steps), plus
    Navigation2D's batched env stepped alone (to show what the policy costs).

It then prints the ratios the project tracks: sampler / all-core limit (target >= 0.7),
sampler / the reference implementation's ~10,000 env-steps/s (a figure quoted, not measured
here; target >= 4), sampler / SyncVectorEnv (target >= 2) and Navigation2D / 1.5M.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import batch as mj_batch

from metarl.envs.vector import default_num_workers, make_vec
from metarl.maml import detach_params, params_of
from metarl.progress import progress
from metarl.rl.policies import GaussianMLPPolicy, policy_distribution, sample_actions
from metarl.rl.sampler import make_sampler

#: env-steps/s of the reference PyTorch MAML-RL implementation on HalfCheetahVel (quoted).
REFERENCE_STEPS_PER_S = 10_000.0


def _rate(steps: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return steps / (time.perf_counter() - t0)


def raw_mj_step_one_core(steps: int) -> float:
    env = gym.make("HalfCheetah-v5").unwrapped
    model, data = env.model, mujoco.MjData(env.model)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (1000, model.nu))
    frame_skip = env.frame_skip

    def run() -> None:
        for i in range(steps):
            data.ctrl[:] = ctrl[i % 1000]
            mujoco.mj_step(model, data, nstep=frame_skip)

    return _rate(steps, run)


def raw_mj_step_all_cores(num_envs: int, steps: int, threads: int) -> float:
    env = gym.make("HalfCheetah-v5").unwrapped
    batch = mj_batch.Batch(env.model, nsim=num_envs, nthread=threads)
    ctrl = batch.bind("ctrl")
    noise = np.random.default_rng(0).uniform(-1, 1, (8, num_envs, env.model.nu))

    def run() -> None:
        for i in range(steps):
            ctrl[:] = noise[i % 8]
            batch.step(nstep=env.frame_skip)

    return _rate(num_envs * steps, run)


def gymnasium_single(steps: int) -> float:
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, 6)).astype(np.float32)

    def run() -> None:
        for i in range(steps):
            env.step(actions[i % 1000])

    return _rate(steps, run)


def gymnasium_sync_vector(num_envs: int, steps: int, policy: GaussianMLPPolicy | None) -> float:
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5") for _ in range(num_envs)])
    obs, _ = vec.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, num_envs, 6)).astype(np.float32)
    generator = torch.Generator().manual_seed(0)
    params = detach_params(params_of(policy)) if policy is not None else {}

    def run() -> None:
        nonlocal obs
        for i in range(steps):
            if policy is None:
                a = actions[i % 8]
            else:
                with torch.no_grad():
                    obs_t = torch.as_tensor(obs, dtype=torch.float32)
                    dist = policy_distribution(policy, params, obs_t, per_task=False)
                    a = sample_actions(dist, generator).numpy()
                    dist.log_prob(torch.from_numpy(a))
            obs, *_ = vec.step(a)

    rate = _rate(num_envs * steps, run)
    vec.close()
    return rate


def sampler_rate(env_id: str, n_tasks: int, episodes: int, horizon: int | None, workers: int, repeats: int) -> float:
    with make_sampler(env_id, episodes_per_task=episodes, num_workers=workers, seed=0, horizon=horizon) as sampler:
        tasks = sampler.sample_tasks(n_tasks, np.random.default_rng(0))
        probe = gym.make(env_id)
        policy = GaussianMLPPolicy(probe.observation_space.shape[0], probe.action_space.shape[0], (64, 64), "tanh")
        params = detach_params(params_of(policy))
        best = 0.0
        for _ in progress(range(repeats), desc=f"sampling {env_id}", unit="batch", leave=False):
            t0 = time.perf_counter()
            episodes_out = sampler.sample(policy, params, tasks)
            elapsed = time.perf_counter() - t0
            steps = int(sum(float(e.masks.sum()) for e in episodes_out))
            best = max(best, steps / elapsed)
    return best


def navigation_env_alone(num_envs: int, steps: int) -> float:
    vec = make_vec("metarl/Navigation2D-v0", num_envs)
    vec.reset(vec.env.sample_tasks(num_envs, np.random.default_rng(0)))
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-0.1, 0.1, (8, num_envs, 2)).astype(np.float32))

    def run() -> None:
        for i in range(steps):
            vec.step(actions[i % 8])

    return _rate(num_envs * steps, run)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print env-steps/s and ratios; returns 0.

    Each sampler figure is the best of ``--repeats`` timed calls (Navigation2D: at least 3),
    the first of which includes building the batched env (milliseconds).
    """
    parser = argparse.ArgumentParser(prog="metarl bench envs", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--tasks", type=int, default=40, help="tasks per sampler call (paper: 40)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task (paper: 20)")
    parser.add_argument("--workers", type=int, default=None, help="physics threads (default: all cores)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads for the policy")
    parser.add_argument("--repeats", type=int, default=1, help="timed sampler calls (best is reported)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.torch_threads)
    workers = args.workers or default_num_workers()
    n_tasks, episodes = (4, 5) if args.quick else (args.tasks, args.episodes)
    horizon = 50 if args.quick else None  # None: the registered 200 (HalfCheetah) / 100 (Navigation)
    raw_steps, gym_steps, vec_steps = (500, 300, 20) if args.quick else (20_000, 5_000, 200)
    batch = n_tasks * episodes

    print(
        f"metarl bench envs: {platform.processor() or platform.machine()}, {workers} physics thread(s), "
        f"torch {torch.__version__} on {args.torch_threads} thread(s), MuJoCo {mujoco.__version__}, "
        f"gymnasium {gym.__version__}"
    )
    print(f"HalfCheetah: {n_tasks} tasks x {episodes} episodes (batch {batch}); policy 2x64 tanh Gaussian MLP\n")
    rows: list[tuple[str, float]] = []

    def report(name: str, rate: float) -> float:
        rows.append((name, rate))
        print(f"  {name:<58s} {rate:>12,.0f} env-steps/s", flush=True)
        return rate

    one_core = report("(a) raw mj_step, HalfCheetah-v5 model, 1 core", raw_mj_step_one_core(raw_steps))
    limit = report(
        f"(a) raw mj_step, mujoco.batch x{batch}, {workers} threads",
        raw_mj_step_all_cores(batch, max(2 * raw_steps // batch, 5), workers),
    )
    report("(b) Gymnasium HalfCheetah-v5, one env, random actions", gymnasium_single(gym_steps))
    sync = report(
        f"(b) Gymnasium SyncVectorEnv x{episodes}, random actions", gymnasium_sync_vector(episodes, vec_steps, None)
    )
    policy = GaussianMLPPolicy(17, 6, (64, 64), "tanh")
    sync_policy = report(
        f"(b) Gymnasium SyncVectorEnv x{episodes}, policy in the loop",
        gymnasium_sync_vector(episodes, vec_steps, policy),
    )
    ours = report(
        f"(c) metarl sampler HalfCheetahVel {n_tasks}x{episodes}x{horizon or 200}, policy",
        sampler_rate("metarl/HalfCheetahVel-v0", n_tasks, episodes, horizon, workers, args.repeats),
    )
    nav = report(
        f"(c) metarl sampler Navigation2D {n_tasks}x{episodes}x{horizon or 100}, policy",
        sampler_rate("metarl/Navigation2D-v0", n_tasks, episodes, horizon, workers, max(args.repeats, 3)),
    )

    report(f"(c) Navigation2D batched env alone x{batch}, no policy", navigation_env_alone(batch, 100))

    ratios = [
        (f"sampler / raw mj_step on {workers} threads", ours / limit, ">= 0.70"),
        ("sampler / raw mj_step on 1 core", ours / one_core, ""),
        (f"sampler / reference ~{REFERENCE_STEPS_PER_S:,.0f} (quoted)", ours / REFERENCE_STEPS_PER_S, ">= 4"),
        ("sampler / SyncVectorEnv, random actions", ours / sync, ">= 2"),
        ("sampler / SyncVectorEnv, policy in the loop", ours / sync_policy, ""),
        ("Navigation2D / 1,500,000", nav / 1.5e6, ">= 1"),
    ]

    print("\nratios [target]:")
    for name, value, target in ratios:
        print(f"  {name:<46s} {value:6.2f}" + (f"   [{target}]" if target else ""))
    return 0
