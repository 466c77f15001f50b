#!/usr/bin/env bash
# GPU check (a few minutes): the meta-update runs on CUDA while sampling stays on the CPU.
# Run on a machine with a GPU from the repository root: bash benchmarks/gpu_check.sh
# Prints the device, a short sinusoid run and a short Navigation2D MAML-TRPO run with
# --device cuda next to the same run on the CPU, and the few-shot meta-iteration benchmark
# (vmap over tasks against a per-task loop) on the GPU, and the MAML-TRPO meta-iteration
# benchmark with its meta-update on the GPU and on the CPU.
# PY picks the interpreter (default: .venv/bin/python, made by scripts/bootstrap.sh if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  [ -x .venv/bin/python ] || bash scripts/bootstrap.sh
  PY=.venv/bin/python
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
out=${OUT:-$(mktemp -d)}
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "device", torch.cuda.get_device_name(0))
PY
for dev in cuda cpu; do
  /usr/bin/time -f "sinusoid 2000 its on $dev: %e s" $PY -m metarl train sinusoid \
    --set num_iterations=2000 --set eval.every=1000 --device $dev --logdir "$out/sin-$dev"
  /usr/bin/time -f "navigation2d 5 its on $dev: %e s" $PY -m metarl train navigation2d \
    --set num_iterations=5 --set policy.hidden=[64,64] --set policy.activation=tanh --device $dev \
    --logdir "$out/nav-$dev"
  $PY - "$out/nav-$dev/metrics.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))[1:]
s = sorted(float(r["time/sample_s"]) for r in rows); u = sorted(float(r["time/update_s"]) for r in rows)
print(f"  median sampling {s[len(s)//2]:.2f} s, meta-update {u[len(u)//2]:.2f} s, "
      f"last post-update return {float(rows[-1]['train/return_post']):.1f}")
PY
done
$PY - "$out/nav-cuda" <<'PY'
import sys, torch
state = torch.load(sys.argv[1] + "/checkpoints/last.pt", map_location="cpu", weights_only=False)
print("checkpoint iteration", state["iteration"], "device in config:", state["config"]["device"])
PY
echo "few-shot meta-iterations on cuda (5-way 1-shot, meta-batch 32, second order):"
$PY -m metarl bench fewshot --device cuda --synthetic --iterations 20 --warmup 3 --variants loop,batched
echo "MAML-TRPO 2D-navigation meta-iterations (post-update Fisher on 5 tasks, ls_rescale), update on cuda then cpu:"
for dev in cuda cpu; do
  chunk=$([ $dev = cuda ] && echo 0 || echo 4)
  $PY -m metarl bench rl --iterations 5 --update-threads 0 --fisher-tasks 5 --fisher post \
    --set trpo.ls_rescale=true --set device=$dev --set trpo.task_chunk=$chunk
done
