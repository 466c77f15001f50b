"""MAML-TRPO meta-iteration time (same as `metarl bench rl`)."""

from metarl.benchmarks.rl import main

raise SystemExit(main())
