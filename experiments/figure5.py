"""The paper's Figure 5 from `metarl evaluate` outputs: one panel per benchmark, MAML and its baselines
after 0..K steps, mean and 95% interval over the held-out tasks and the runs (seeds) given for it.

Usage: python experiments/figure5.py [--paper] OUT.png EVAL.json [EVAL.json ...]
  e.g. python experiments/figure5.py results/figure5.png runs/*-paper*/maml/eval-40.json
  --paper adds the paper's own MAML and pretrained curves (metarl/rl/finn2017_figure5.json) as dotted lines
"""

from __future__ import annotations

import json
import sys

from metarl.evaluate import plot_panels


def main(argv: list[str]) -> int:
    paper = "--paper" in argv
    argv = [a for a in argv if a != "--paper"]
    if len(argv) < 2 or not argv[0].endswith(".png"):
        print("usage: python experiments/figure5.py [--paper] OUT.png EVAL.json [EVAL.json ...]", file=sys.stderr)
        return 2
    results = []
    for path in argv[1:]:
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"figure5: cannot read {path}: {e}; give the eval JSON files `metarl evaluate --out` wrote",
                  file=sys.stderr)
            return 2
    plot_panels(results, argv[0], paper=paper)
    print(f"wrote {argv[0]} ({len(results)} evaluations)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
