"""experiments/inner_step.py: how far one inner step moves a policy, against closed forms."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from metarl.cli import main as metarl_main
from metarl.maml import params_of
from metarl.rl.episodes import Episodes
from metarl.rl.policies import GaussianMLPPolicy
from tests.scripts import load_experiment
from tests.test_rl_average import TINY_NAV

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_experiment("inner_step")


def _episodes(n: int, t: int = 5, b: int = 3, obs_dim: int = 3) -> Episodes:
    g = torch.Generator().manual_seed(0)
    masks = torch.ones(n, t, b)
    masks[:, 3:, 0] = 0.0  # one episode ends early: its padding must not count
    zeros = torch.zeros(n, t, b)
    return Episodes(torch.randn(n, t, b, obs_dim, generator=g), torch.zeros(n, t, b, 2), zeros, masks, zeros)


def test_a_shifted_mean_is_measured_in_standard_deviations(script):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(4,), init_std=0.5)
    theta = {k: v.detach() for k, v in params_of(policy).items()}
    shift = torch.tensor([[0.1, -0.3], [0.2, 0.0]])  # per task, added to the output bias: mu moves by it everywhere
    fast = {k: v.unsqueeze(0).expand(2, *v.shape).clone() for k, v in theta.items()}
    fast["mu.2.bias"] = fast["mu.2.bias"] + shift
    out = script.step_size(policy, theta, fast, _episodes(2))
    # both tasks have the same live states, so the means over states are the means over the two tasks
    assert out["mean_shift_in_std"] == pytest.approx(float((shift.abs() / 0.5).mean()), rel=1e-5)
    assert out["kl"] == pytest.approx(float((shift**2 / (2 * 0.25)).sum(-1).mean()), rel=1e-5)


def test_a_changed_std_has_the_gaussian_kl(script):
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(4,), init_std=1.0)
    theta = {k: v.detach() for k, v in params_of(policy).items()}
    fast = {k: v.unsqueeze(0).clone() for k, v in theta.items()}
    fast["log_std"] = fast["log_std"] + math.log(2.0)  # sigma 1 -> 2, mean unchanged
    out = script.step_size(policy, theta, fast, _episodes(1))
    assert out["mean_shift_in_std"] == 0.0
    assert out["kl"] == pytest.approx(2 * (math.log(2.0) + 1 / 8 - 0.5), rel=1e-5)  # per dim: log 2 + 1/(2*4) - 1/2


def test_configs_and_a_checkpoint(tmp_path, script, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_NAV, "num_iterations": 1}))
    run = tmp_path / "run"
    assert metarl_main(["train", str(cfg), "--logdir", str(run)]) == 0
    out = tmp_path / "s.json"
    ckpt = run / "checkpoints" / "last.pt"
    assert script.main([f"{cfg}:torch", f"{cfg}:xavier", str(ckpt), "--tasks", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["init"] for r in rows] == ["torch", "xavier", "torch"]
    assert all(r["kl"] > 0 and r["mean_shift_in_std"] > 0 for r in rows)
    assert all(-1 <= r["cos_meta_vs_pretrain_gradient"] <= 1 for r in rows)
    assert rows[0]["kl"] != rows[1]["kl"]  # another initial policy
    assert "KL(pre || post)" in capsys.readouterr().out


def test_a_vanishing_step_leaves_the_pretrained_gradient(tmp_path, script):
    """With a step that barely moves the policy the meta-gradient is the gradient without adaptation (cosine 1);
    a real step turns it away."""
    rows = []
    for lr in (1e-7, 2.0):
        cfg = tmp_path / f"lr{lr}.yaml"
        cfg.write_text(yaml.safe_dump({**TINY_NAV, "inner": {**TINY_NAV["inner"], "lr": lr}}))
        rows.append(script.measure(f"{cfg}:torch", 3, 1))
    tiny, real = (r["cos_meta_vs_pretrain_gradient"] for r in rows)
    assert rows[0]["kl"] < 1e-9 < rows[1]["kl"]
    assert tiny == pytest.approx(1.0, abs=1e-4) and real < 0.99


def test_bad_input_is_one_line(tmp_path, script, capsys):
    assert script.main(["ant_dir:he"]) == 2
    assert "CONFIG:INIT" in capsys.readouterr().err
    assert script.main([str(tmp_path / "none.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert script.main([str(tmp_path / "junk.pt")]) == 2
    assert "not a metarl checkpoint" in capsys.readouterr().err
    assert script.main(["ant_dir:torch", "--tasks", "0"]) == 2
    assert "at least 1 task" in capsys.readouterr().err
