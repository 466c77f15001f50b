"""The built wheel: what a user's `pip install metarl` puts into site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, cwd=out,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("metarl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_wheel_holds_the_configs_license_and_type_marker(wheel_names: list[str]) -> None:
    assert "metarl/py.typed" in wheel_names
    assert any(n.endswith("licenses/LICENSE") for n in wheel_names)
    for name in ("sinusoid", "navigation2d", "navigation2d_promp", "halfcheetah_vel", "omniglot_5w1s"):
        assert f"metarl/configs/{name}.yaml" in wheel_names
    assert "metarl/rl/finn2017_figure5.json" in wheel_names  # the paper's curves, for `figure5.py --paper`


def test_environments_install_as_metarl_envs_and_nothing_named_envs_at_the_top(wheel_names: list[str]) -> None:
    """A PyPI package named `envs`, or a user's own `envs/` folder, cannot shadow or overwrite them."""
    for module in ("__init__", "navigation", "locomotion", "tasks", "vector", "physics"):
        assert f"metarl/envs/{module}.py" in wheel_names
    assert not [n for n in wheel_names if n.split("/")[0] == "envs"]


def test_a_users_own_envs_folder_does_not_shadow_the_environments(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    code = "import gymnasium, metarl.envs; gymnasium.make('metarl/Navigation2D-v0'); print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
