"""Env-steps/s of our batched sampler next to MuJoCo's limit and Gymnasium (see metarl.benchmarks.envs)."""
from metarl.benchmarks.envs import main

raise SystemExit(main())
