"""Wall time to a held-out 2D-navigation return (same as `metarl bench time-to-result`)."""

from metarl.benchmarks.time_to_result import main

raise SystemExit(main())
