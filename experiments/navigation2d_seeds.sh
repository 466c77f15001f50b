#!/usr/bin/env bash
# 2D navigation across seeds (RESULTS.md "2D navigation across seeds"): `navigation2d_lvc` trained as
# a new user would (`metarl train navigation2d_lvc --seed S`) for each seed, each evaluated on the
# same 400 held-out goals (`--seed 1`, as every 2D-navigation table) after 0..3 steps, then all runs
# pooled: mean over seeds, and the interquartile mean with a stratified-bootstrap 95% interval
# (Agarwal et al. 2021).
# Usage: bash experiments/navigation2d_seeds.sh [OUT_DIR] [SEED ...] [--set key=value ...]  (default seeds 1-5)
#   8-15 minutes per seed on one core (measured: 490-885 s of training); runs that exist are resumed unless finished. The `--set`
#   arguments go to `metarl train` when a run starts or resumes (--set num_iterations=1000 extends
#   finished 500-iteration runs; e.g. --set sampler.num_workers=1 --set update_threads=1
#   to keep a run on one core).
set -euo pipefail
source "$(dirname "$0")/runs_lib.sh"
out=${1:-runs/navigation2d-seeds}
shift || true
seeds=()
while [ $# -gt 0 ] && [[ $1 != -* ]]; do seeds+=("$1"); shift; done
extra=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3 4 5)
mkdir -p "$out"
runs=()
for s in "${seeds[@]}"; do
  dir=$out/seed-$s
  run_seed "$dir" navigation2d_lvc "$s" ${extra[@]+"${extra[@]}"}
  runs+=("$dir")
done
metarl evaluate "${runs[@]}" --tasks 400 --steps 3 --seed 1 --out "$out/pooled.json"
