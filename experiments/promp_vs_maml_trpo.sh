#!/usr/bin/env bash
# ProMP beside MAML-TRPO at equal wall-clock budgets (RESULTS.md, "ProMP beside MAML-TRPO").
# For each seed, MAML-TRPO and ProMP train side by side, one core each (one torch thread, one
# physics worker), each stopped by the same --time-limit; then the best checkpoint of each
# (by its validation return after one step) is evaluated after 0..3 steps on the same held-out
# tasks: 400 goals for navigation2d, 40 velocities for halfcheetah_vel.
# Usage: bash experiments/promp_vs_maml_trpo.sh TASK MINUTES [OUT_DIR] [SEED ...]
#   TASK: navigation2d (MAML-TRPO config navigation2d_lvc.yaml) or halfcheetah_vel (halfcheetah_vel.yaml).
#   A run that has a checkpoint is not trained again; its evaluation is redone. Needs `metarl` on
#   PATH (e.g. PATH=.venv/bin:$PATH after `make bootstrap`).
set -euo pipefail
task=$1
minutes=$2
out=${3:-runs/promp-vs-maml-$task}
shift $(( $# < 3 ? $# : 3 ))
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2)
case $task in
  navigation2d) maml=navigation2d_lvc; n_eval=400 ;;
  halfcheetah_vel) maml=halfcheetah_vel; n_eval=40 ;;
  *) echo "TASK must be navigation2d or halfcheetah_vel, got '$task'" >&2; exit 2 ;;
esac
mkdir -p "$out"
one_core=(--set update_threads=1 --set sampler.num_workers=1)
for seed in "${seeds[@]}"; do
  for algo in maml promp; do
    config=$([ $algo = maml ] && echo "$maml" || echo "${task}_promp")  # a shipped config (metarl configs)
    dir=$out/$algo-s$seed
    if [ ! -f "$dir/checkpoints/last.pt" ]; then
      metarl train "$config" --seed "$seed" --logdir "$dir" --overwrite --time-limit "$minutes" "${one_core[@]}" \
        > "$dir.log" 2>&1 &
    fi
  done
  for job in $(jobs -p); do wait "$job" || { echo "a training run failed; see $out/*-s$seed.log" >&2; exit 1; }; done
  for algo in maml promp; do
    metarl evaluate "$out/$algo-s$seed/checkpoints/best.pt" --tasks "$n_eval" --steps 3 --seed 1 \
      --out "$out/$algo-s$seed/eval-$n_eval.json" > "$out/$algo-s$seed.eval.log" 2>&1 &
  done
  wait
done
