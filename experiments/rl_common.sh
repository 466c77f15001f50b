# Shared by the RL reproduction scripts (sourced, not run): argument parsing and resumable runs.
# The sourcing script sets `out` and `seed` (defaults) first; after sourcing, `extra` holds the
# `--set ...` arguments, `eval_seed` the seed of the held-out tasks, and `train NAME CONFIG`
# starts runs/NAME from CONFIG, resumes it if it stopped early, and skips it if it finished.
if [ $# -gt 0 ] && [[ $1 != -* ]]; then out=$1; shift; fi
if [ $# -gt 0 ] && [[ $1 != -* ]]; then seed=$1; shift; fi
extra=("$@")
# held-out tasks: another stream than the training tasks (which are drawn with SEED)
eval_seed=$((seed + 1000))
mkdir -p "$out"

finished() { # RUN_DIR: its last logged iteration is its config's num_iterations
  local want
  want=$(awk '$1 == "num_iterations:" {print $2}' "$1/config.yaml")
  [ -n "$want" ] && [ -f "$1/metrics.csv" ] && tail -n 1 "$1/metrics.csv" | grep -q "^$want,"
}

train() { # NAME CONFIG
  local dir=$out/$1
  if [ ! -f "$dir/checkpoints/last.pt" ]; then
    metarl train "$2" --seed "$seed" --logdir "$dir" --overwrite ${extra[@]+"${extra[@]}"}  # --overwrite: a start killed before its first checkpoint
  elif ! finished "$dir"; then
    metarl train --resume "$dir"
  fi
}
