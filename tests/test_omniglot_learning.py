"""Few-shot classification end to end on real Omniglot characters (a class subset, short run)."""

from __future__ import annotations

import torch

from metarl.config import config_from_dict
from metarl.evaluate import evaluate
from metarl.training import train
from tests import SHARED_DATA, needs_shared

torch.set_num_threads(1)
DATA = SHARED_DATA


@needs_shared(DATA / "omniglot" / "images_background.zip")
def test_omniglot_5way_1shot_adapts_on_held_out_characters(tmp_path):
    cfg = config_from_dict({
        "benchmark": "classification", "name": "og-test", "seed": 0, "num_iterations": 60,
        "meta_batch_size": 8, "task_chunk": 4, "log_every": 20, "checkpoint_every": 60,
        "eval": {"every": 60, "tasks": 20, "test_tasks": 100},
        "inner": {"lr": 0.4, "steps": 1, "test_steps": 3},
        "dataset": {"root": str(DATA), "ways": 5, "shots": 1, "query": 5, "max_classes": 400,
                    "cache_dir": str(tmp_path / "cache")},
        "model": {"filters": 32},
    })
    run = train(cfg, logdir=tmp_path / "run", quiet=True)
    res = evaluate(run, n_tasks=100, steps=3, seed=5)  # held-out: the Vinyals test characters
    acc = [s["mean"] for s in res["by_step"]]
    assert res["metric"] == "accuracy"
    assert acc[3] > 0.45, acc  # chance is 0.2
    assert acc[3] > acc[0] + 0.15, acc
