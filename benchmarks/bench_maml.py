"""Sinusoid meta-iteration speed, batched vs plain loop (same as `metarl bench maml`)."""

from metarl.benchmarks.maml import main

raise SystemExit(main())
