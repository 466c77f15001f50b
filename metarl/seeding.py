"""Seeds of evaluation streams, kept apart from the training streams of the same seed.

Training draws its tasks from generators seeded with ``cfg.seed``; an evaluation with
``--seed S`` must not replay them when ``S == cfg.seed`` (held-out tasks would be training
tasks). Evaluation therefore seeds from ``SeedSequence([S, EVAL_STREAM])``.
"""

from __future__ import annotations

import numpy as np

EVAL_STREAM = 0x5EEDE7A1


def eval_seed(seed: int) -> int:
    """A 63-bit seed for the held-out evaluation streams named by ``seed``."""
    return int(np.random.SeedSequence([int(seed), EVAL_STREAM]).generate_state(1, np.uint64)[0] >> 1)
