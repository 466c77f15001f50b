#!/usr/bin/env bash
# Creates .venv (if missing) and installs metarl with its test tools into it. Idempotent.
# torch comes first, pinned to 2.13.0 where it is missing: on the project's machines that
# version installs a CPU build from local disk (any other version downloads gigabytes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10), "metarl needs Python 3.10+"'
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.metarl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  $VPY -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
  if ! $VPY -c 'import torch' 2>/dev/null; then
    $VPY -m pip install -q "torch==${METARL_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v -i warning || true
  fi
  $VPY -m pip install -q -e ".[dev]" 2>&1 | grep -v -i -E "warning|^ *!!|wheel_obj|\*{8}|be careful with folders|name as your package|^ *$" || true
  $VPY -c 'import metarl, metarl.envs, torch, gymnasium, mujoco' || { echo "bootstrap: install failed" >&2; exit 1; }
  touch "$stamp"
fi
