"""Few-shot MAML meta-iterations/s, vmap over tasks vs a per-task loop (see metarl.benchmarks.fewshot)."""
from metarl.benchmarks.fewshot import main

raise SystemExit(main())
