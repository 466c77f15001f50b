"""Seeds of evaluation streams, kept apart from the training streams of the same seed.

Training draws its tasks from generators seeded with ``cfg.seed``; an evaluation with
``--seed S`` must not replay them when ``S == cfg.seed`` (held-out tasks would be training
tasks). Evaluation therefore seeds from ``SeedSequence([S, EVAL_STREAM])``.
"""

from __future__ import annotations

import numpy as np

EVAL_STREAM = 0x5EEDE7A1
#: Validation during training (best checkpoint selection): apart from training and evaluation.
VALIDATION_STREAM = 0x7A11DA7E


def eval_seed(seed: int) -> int:
    """A 63-bit seed for the held-out evaluation streams named by ``seed``."""
    return int(np.random.SeedSequence([int(seed), EVAL_STREAM]).generate_state(1, np.uint64)[0] >> 1)


def validation_seed(seed: int) -> int:
    """A 63-bit seed for the validation tasks and episodes of a run with seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), VALIDATION_STREAM]).generate_state(1, np.uint64)[0] >> 1)
