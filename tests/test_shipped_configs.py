"""Configs shipped in the package, by name: ``base:`` inheritance, ``metarl configs``, ``metarl config show``.

``tests/fixtures/configs_before_base/`` holds the configs as they were before inheritance (one full file
each, ``experiments/configs/`` at commit 546c8f7, except the Omniglot query counts, since set to the papers'
code: as many query as support examples per class); every shipped config must resolve to exactly what its
old file gave.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from metarl.cli import main
from metarl.config import (
    CONFIG_DIR,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    read_config_data,
    shipped_configs,
)

torch.set_num_threads(1)

BEFORE = Path(__file__).resolve().parent / "fixtures" / "configs_before_base"
OLD = sorted(BEFORE.glob("*.yaml"))
#: the configs that state every key; all others are a few lines on a base
FULL = {"sinusoid", "navigation2d", "omniglot_5w1s", "miniimagenet_5w1s"}


def test_every_old_config_is_still_shipped():
    assert {p.stem for p in OLD} <= set(shipped_configs())
    assert len(OLD) == 25


@pytest.mark.parametrize("old", OLD, ids=[p.stem for p in OLD])
def test_shipped_config_resolves_as_the_old_file(old):
    assert config_to_dict(load_config(old.stem)) == config_to_dict(load_config(old))


@pytest.mark.parametrize("name", sorted(set(shipped_configs()) - FULL))
def test_variants_state_only_their_departures(name):
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert "base" in data
    n_keys = sum(len(v) if isinstance(v, dict) else 1 for v in data.values())
    assert n_keys <= 15, f"{name}: {n_keys} keys"


def test_configs_lists_names_and_descriptions(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = dict(line.split(None, 1) for line in lines)
    assert set(by_name) == set(shipped_configs()) and "_locomotion" not in by_name
    assert by_name["sinusoid"].startswith("Sinusoid regression, Finn et al. 2017")
    assert by_name["navigation2d_fast"].startswith("MAML-TRPO on Navigation2D-v0 at under 0.5 s")


def test_config_show_prints_the_resolved_config_with_help(capsys):
    assert main(["config", "show", "navigation2d", "--set", "trpo.max_kl=0.02"]) == 0
    out = capsys.readouterr().out
    assert "max_kl: 0.02" in out and "# KL trust region delta" in out
    assert "  id: metarl/Navigation2D-v0" in out and "# Gymnasium id (see `metarl envs`)" in out
    assert "inner:" in out and "# inner loop" in out
    # the output is itself a config file: it resolves to the same config
    assert config_to_dict(config_from_dict(yaml.safe_load(out))) == config_to_dict(
        load_config("navigation2d", ["trpo.max_kl=0.02"]))


def test_train_by_name_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "sinusoid", "--set", "num_iterations=2", "--set", "meta_batch_size=2",
                 "--set", "eval.every=2", "--set", "eval.tasks=2", "--set", "log_every=1", "--logdir", "run"])
    assert code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["name"] == "sinusoid" and saved["num_iterations"] == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_unknown_name_is_one_line_suggesting_the_close_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "navigaton2d"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'navigaton2d' does not exist" in err and "metarl configs" in err
    assert "did you mean navigation2d" in err and f"{len(shipped_configs())} shipped" in err
    assert main(["config", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' does not exist" in err and "did you mean" not in err and "metarl configs" in err


def test_a_path_still_works(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("benchmark: sinusoid\nname: mine\n")
    assert load_config(p).name == "mine"
    assert load_config(str(p)).name == "mine"


def test_base_merges_sections_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("base: sinusoid\ninner:\n  lr: 0.5\n  steps: 2\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../base.yaml\nname: child\ninner:\n  steps: 3\ntask:\n  shots: 5\n")
    cfg = load_config(child)
    ref = load_config("sinusoid")
    assert (cfg.name, cfg.inner.lr, cfg.inner.steps, cfg.task.shots) == ("child", 0.5, 3, 5)
    assert cfg.inner.test_steps == ref.inner.test_steps and cfg.task.amplitude == ref.task.amplitude
    assert cfg.num_iterations == ref.num_iterations
    assert "base" not in read_config_data(child)


def test_a_base_cycle_is_refused(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"makes a cycle"):
        load_config(tmp_path / "a.yaml")
    assert main(["train", str(tmp_path / "a.yaml")]) == 2
    assert "cycle" in capsys.readouterr().err
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match=r"makes a cycle"):
        load_config(tmp_path / "self.yaml")


def test_bad_base_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("base: navigaton2d\n")
    with pytest.raises(ConfigError, match=r"base: got 'navigaton2d'.*not a shipped config.*navigation2d"):
        load_config(p)
    p.write_text("base: [sinusoid]\n")
    with pytest.raises(ConfigError, match=r"base: got \['sinusoid'\]"):
        load_config(p)
    p.write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml' does not exist"):
        load_config(p)


def test_the_locomotion_base_needs_an_env():
    with pytest.raises(ConfigError, match=r"expected a string"):
        load_config(CONFIG_DIR / "_locomotion.yaml")


def test_each_locomotion_task_of_the_reproduction_script_ships_its_configs():
    """experiments/locomotion.sh TASK trains TASK and TASK_pretrain (and TASK_oracle where shipped): each
    task it accepts has them, as a pretrain run of the same env, and every locomotion MAML config is a task of it."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "locomotion.sh"
    line = next(x for x in script.read_text().splitlines() if x.startswith("tasks="))
    tasks = line.split("=", 1)[1].strip('"').split()
    names = set(shipped_configs())
    assert {n for n in names if n.startswith(("halfcheetah_", "ant_")) and "_" not in n.split("_", 1)[1]} == set(tasks)
    for task in tasks:
        maml = load_config(task)
        for variant in (f"{task}_pretrain", f"{task}_oracle"):
            if variant == f"{task}_oracle" and variant not in names:
                continue
            cfg = load_config(variant)
            assert cfg.algorithm == "pretrain" and cfg.env.id == maml.env.id, variant
        assert f"{task}_pretrain" in names
