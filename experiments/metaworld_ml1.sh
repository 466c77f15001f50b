#!/usr/bin/env bash
# Meta-World ML1 with MAML-TRPO (Yu et al. 2019, arXiv 1910.10897): `metaworld_ml1_ENV` trained for each
# seed, then each run scored by Meta-World's own evaluation (`metarl evaluate RUN --metaworld-official`:
# metaworld.evaluation.metalearning_evaluation, unchanged, on ML1's held-out goals; RUN/metaworld_eval.json)
# then the official results pooled (`metarl evaluate RUN1 RUN2 ... --metaworld-official`: mean success rate with a
# 95% bootstrap interval, OUT_DIR/official_pooled.json; each run's result is reused) and all runs pooled by our own
# evaluation on the same 40 held-out goals (`metarl evaluate RUN1 RUN2 ...`, OUT_DIR/pooled.json).
# Needs the extra: pip install "metarl[metaworld]" (MuJoCo 3.3).
# Usage: bash experiments/metaworld_ml1.sh ENV [OUT_DIR] [SEED ...] [--set key=value ...]
#   ENV: reach, push or pick_place (default OUT_DIR runs/metaworld_ml1_ENV-seeds, seeds 1 and 2). Runs
#   that exist are resumed unless finished. The --set arguments go to `metarl train` when a run starts or
#   resumes (--set num_iterations=N extends finished shorter runs). RESULTS.md's budget: --set
#   num_iterations=20 --set checkpoint_every=1 (4M env steps, about 40 min per seed on 2 cores); a quick dry
#   run: --set num_iterations=1 --set meta_batch_size=2 --set env.episodes_per_task=1
#   --set env.kwargs.max_episode_steps=20. Each run's official evaluation (about 30 min of one core; its
#   output in RUN/metaworld_eval.log) runs in the background while the next seed trains.
set -euo pipefail
source "$(dirname "$0")/runs_lib.sh"
envs="reach push pick_place"
env=${1:-}
if [[ " $envs " != *" $env "* ]]; then
  echo "metaworld_ml1.sh: unknown ML1 env '$env'; use one of: $envs" >&2
  exit 2
fi
shift
out=runs/metaworld_ml1_$env-seeds
if [ $# -gt 0 ] && [[ $1 != -* ]]; then out=$1; shift; fi
seeds=()
while [ $# -gt 0 ] && [[ $1 != -* ]]; do seeds+=("$1"); shift; done
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2)
extra=("$@")
mkdir -p "$out"
runs=()
evals=()  # each run's official evaluation (one process) runs while the next seed trains
for s in "${seeds[@]}"; do
  dir=$out/seed-$s
  run_seed "$dir" "metaworld_ml1_$env" "$s" ${extra[@]+"${extra[@]}"}
  if [ ! -f "$dir/metaworld_eval.json" ]; then
    metarl evaluate "$dir" --metaworld-official --out "$dir/metaworld_eval.json" > "$dir/metaworld_eval.log" 2>&1 &
    evals+=($!)
  fi
  runs+=("$dir")
done
for pid in ${evals[@]+"${evals[@]}"}; do
  wait "$pid" || { echo "metaworld_ml1.sh: an official evaluation failed; see RUN/metaworld_eval.log in $out" >&2; exit 1; }
done
metarl evaluate "${runs[@]}" --metaworld-official --out "$out/official_pooled.json"  # each run's kept: pooling only
metarl evaluate "${runs[@]}" --tasks 40 --seed 1 --out "$out/pooled.json"
