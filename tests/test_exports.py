"""The weights-only ``.safetensors`` exports beside the checkpoints, and the config/hparams in TensorBoard."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import metarl
from metarl.checkpoint import CheckpointError
from metarl.config import config_from_dict
from metarl.training import train

torch.set_num_threads(1)


def tiny_cfg(**over):
    data = {
        "benchmark": "sinusoid", "name": "tiny", "seed": 3, "num_iterations": 2, "meta_batch_size": 4,
        "log_every": 1, "checkpoint_every": 1, "eval": {"every": 1, "tasks": 5, "test_tasks": 5},
        "inner": {"test_steps": 2, "learn_lr": True},  # learned inner lrs travel in the export too
    }
    data.update(over)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train(tiny_cfg(), logdir=tmp_path_factory.mktemp("exp") / "run", quiet=True)


def test_safetensors_export_loads_like_the_checkpoint(run_dir):
    ck = run_dir / "checkpoints"
    for name in ("last", "best"):
        assert (ck / f"{name}.safetensors").is_file(), name
    assert not list(ck.glob(".*.tmp"))
    a, b = metarl.load(ck / "last.pt"), metarl.load(ck / "last.safetensors")
    assert b.iteration == a.iteration == 2 and b.config == a.config
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    assert isinstance(b.lr, dict) and all(torch.equal(a.lr[k], b.lr[k]) for k in a.lr)
    x = torch.linspace(-5, 5, 10).unsqueeze(-1)
    y = torch.sin(x)
    pa, pb = a.adapt(x, y), b.adapt(x, y)
    assert torch.allclose(a.predict(pa, x), b.predict(pb, x))
    assert b.predict(pb, x).shape == (10, 1)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a metarl weights export"):
        metarl.load(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="corrupt"):
        metarl.load(tmp_path / "junk.safetensors")


def test_tensorboard_gets_config_text_and_hparams(run_dir):
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    values = [v for f in sorted(run_dir.glob("events.out.tfevents.*"))
              for ev in event_file_loader.EventFileLoader(str(f)).Load() if ev.HasField("summary")
              for v in ev.summary.value]
    texts = [v for v in values if v.tag.startswith("config") and v.metadata.plugin_data.plugin_name == "text"]
    assert len(texts) == 1
    text = texts[0].tensor.string_val[0].decode()
    assert text.startswith("```yaml") and "meta_batch_size: 4" in text
    hp = {v.tag: v for v in values if v.metadata.plugin_data.plugin_name == hp_metadata.PLUGIN_NAME}
    assert {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG} <= set(hp)
    data = plugin_data_pb2.HParamsPluginData.FromString(hp[hp_metadata.EXPERIMENT_TAG].metadata.plugin_data.content)
    metric_tags = {m.name.tag for m in data.experiment.metric_infos}
    assert {"val/mse_post", "val/mse_pre", "train/loss_post"} <= metric_tags
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hp[hp_metadata.SESSION_START_INFO_TAG].metadata.plugin_data.content).session_start_info
    assert start.hparams["meta_batch_size"].number_value == 4
    assert start.hparams["inner.learn_lr"].number_value == 1  # torch logs bools as numbers
    assert start.hparams["benchmark"].string_value == "sinusoid"
