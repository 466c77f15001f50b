"""Configs are validated before any work starts; bad ones fail with a message and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metarl.cli import main
from metarl.config import CONFIG_DIR, ConfigError, SinusoidConfig, config_from_dict, load_config

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    if not path.stem.startswith("_"):  # `_NAME`: a shared base, completed by the configs on it
        cfg = load_config(path)
        assert cfg.name == path.stem
    # a comment on every key line
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: key without a comment: {line!r}"


def test_defaults_and_overrides():
    cfg = config_from_dict({"benchmark": "sinusoid"}, [("inner.lr", 0.1), ("task.shots", 5)])
    assert isinstance(cfg, SinusoidConfig)
    assert cfg.inner.lr == 0.1 and cfg.task.shots == 5 and cfg.meta_batch_size == 25


@pytest.mark.parametrize(
    "data, overrides, pattern",
    [
        ({"benchmark": "sinusoid", "lerning_rate": 1}, [], r"unknown key 'lerning_rate'"),
        ({"benchmark": "sinusoid"}, [("inner.lrr", 0.1)], r"unknown key 'inner.lrr'.*allowed here: .*lr"),
        ({"benchmark": "sinusoid"}, [("inner.lr", -0.1)], r"inner.lr: got -0.1; allowed: a number > 0"),
        ({"benchmark": "sinusoid"}, [("meta_batch_size", 0)], r"meta_batch_size: got 0; allowed: a number > 0"),
        ({"benchmark": "sinusoid"}, [("num_iterations", "many")], r"num_iterations: got 'many'; expected an integer"),
        ({"benchmark": "sinusoid"}, [("inner.first_order", "yes please")], r"inner.first_order: .*true or false"),
        ({"benchmark": "sinusoid"}, [("device", "tpu")], r"device: got 'tpu'; allowed: one of \['cpu', 'cuda'\]"),
        ({"benchmark": "sinsoid"}, [], r"benchmark: got 'sinsoid'"),
        ({"benchmark": "sinusoid", "inner": 3}, [], r"inner: got 3; expected a section"),
        ({"benchmark": "sinusoid"}, [("eval.test_tasks", 0)], r"eval.test_tasks: got 0"),
    ],
)
def test_config_errors_name_key_value_and_allowed(data, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(data, overrides)


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_cli_bad_config_exits_2_with_message(tmp_path, capsys):
    p = write(tmp_path, {"benchmark": "sinusoid", "inner": {"lr": -1.0}})
    assert main(["train", str(p), "--logdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "inner.lr: got -1.0; allowed: a number > 0" in err
    assert not (tmp_path / "run").exists(), "no work may start before validation"


def test_cli_bad_override_and_missing_file(tmp_path, capsys):
    p = write(tmp_path, {"benchmark": "sinusoid"})
    assert main(["train", str(p), "--set", "inner.steps=-2"]) == 2
    assert "inner.steps: got -2" in capsys.readouterr().err
    assert main(["train", str(p), "--set", "noequals"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_invalid_yaml(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("inner: [unclosed\n")
    assert main(["train", str(p)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cuda_requested_without_cuda_fails_early(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = write(tmp_path, {"benchmark": "sinusoid", "num_iterations": 5})
    assert main(["train", str(p), "--device", "cuda", "--logdir", str(tmp_path / "r")]) == 2
    assert "device: got 'cuda' but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["evaluate", str(bad)]) == 2
    assert f"checkpoint '{bad}' is corrupt" in capsys.readouterr().err
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert main(["train", "--resume", str(empty_run)]) == 2
    assert "without checkpoints/last.pt" in capsys.readouterr().err
