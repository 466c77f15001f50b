"""A test-time screen: the pre-update episodes sampled with temporally correlated (AR(1)) action noise, scored as
``experiments/sampling_seeds.py`` scores runs (RESULTS.md, "HalfCheetahVel: a per-episode latent").

  python experiments/coloured_noise.py --rho 0.8 RUN [RUN ...] --seeds 2001-2002 --tasks 40 [--set KEY=VALUE ...]

Every argument after ``--rho`` is ``sampling_seeds.py``'s. Per-step Gaussian noise averages out over an episode,
so all pre-update episodes of a HalfCheetahVel task run at much the same speed; noise correlated over time
(``eps_t = rho eps_{t-1} + sqrt(1 - rho^2) eta_t``, unit variance at every step) makes whole episodes differ.
Only the pre-update episodes of the first step (shared parameters) are coloured; the inner step keeps the
policy's own log-probs (as ``explore_std`` does) and the adapted policies sample with white noise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from metarl.rl import sampler as sampler_module


def coloured(noise: torch.Tensor, rho: float) -> torch.Tensor:
    """AR(1) noise along the first (time) axis of white ``noise [T, ...]``: the same marginal N(0, 1) at
    every step, correlation ``rho ** k`` between steps k apart; ``rho = 0`` returns ``noise``."""
    if not 0 <= rho < 1:
        raise ValueError(f"--rho {rho}: expected a number in [0, 1)")
    if rho == 0:
        return noise
    out = noise.clone()
    keep = math.sqrt(1 - rho * rho)
    for t in range(1, noise.shape[0]):
        out[t] = rho * out[t - 1] + keep * noise[t]
    return out


@contextlib.contextmanager
def coloured_pre_update(rho: float) -> Iterator[None]:
    """Inside the block, samplers colour the action noise of rollouts with shared (pre-update) parameters."""
    real_draw, real_sample = sampler_module.draw_noise, sampler_module.VecSampler.sample
    shared = {"on": False}

    def draw_noise(dist, seeds: Sequence[int], horizon: int) -> torch.Tensor:
        noise = real_draw(dist, seeds, horizon)
        return coloured(noise, rho) if shared["on"] else noise

    def sample(self, policy, params, tasks, *, per_task=False):
        shared["on"] = not per_task
        try:
            return real_sample(self, policy, params, tasks, per_task=per_task)
        finally:
            shared["on"] = False

    sampler_module.draw_noise, sampler_module.VecSampler.sample = draw_noise, sample
    try:
        yield
    finally:
        sampler_module.draw_noise, sampler_module.VecSampler.sample = real_draw, real_sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--rho", type=float, required=True, help="AR(1) coefficient in [0, 1)")
    args, rest = parser.parse_known_args(argv)
    if not 0 <= args.rho < 1:
        print(f"coloured_noise: --rho {args.rho}: expected a number in [0, 1), e.g. 0.8", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("sampling_seeds", Path(__file__).with_name("sampling_seeds.py"))
    assert spec is not None and spec.loader is not None
    seeds_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds_script)
    with coloured_pre_update(args.rho):
        return seeds_script.main(rest)


if __name__ == "__main__":
    sys.exit(main())
