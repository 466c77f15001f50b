#!/usr/bin/env bash
# 2D navigation across seeds (RESULTS.md "2D navigation across seeds"): `navigation2d_lvc` trained as
# a new user would (`metarl train navigation2d_lvc --seed S`) for each seed, each evaluated on the
# same 400 held-out goals (`--seed 1`, as every 2D-navigation table) after 0..3 steps, then all runs
# pooled: mean over seeds, and the interquartile mean with a stratified-bootstrap 95% interval
# (Agarwal et al. 2021).
# Usage: bash experiments/navigation2d_seeds.sh [OUT_DIR] [SEED ...]     (default seeds 1-5)
#   About 11 minutes per seed on one core; runs that exist are resumed unless finished.
set -euo pipefail
out=${1:-runs/navigation2d-seeds}
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3 4 5)
mkdir -p "$out"
runs=()
for s in "${seeds[@]}"; do
  dir=$out/seed-$s
  if [ ! -f "$dir/checkpoints/last.pt" ]; then
    metarl train navigation2d_lvc --seed "$s" --logdir "$dir" --overwrite
  elif ! tail -n 1 "$dir/metrics.csv" | grep -q "^500,"; then
    metarl train --resume "$dir"
  fi
  runs+=("$dir")
done
metarl evaluate "${runs[@]}" --tasks 400 --steps 3 --seed 1 --out "$out/pooled.json"
