# Sourced by the reproduction scripts (not run): resumable runs.

finished() { # RUN_DIR [N]: its last logged iteration is N (default: its config's num_iterations)
  local want=${2:-}
  [ -n "$want" ] || want=$(awk '$1 == "num_iterations:" {print $2}' "$1/config.yaml" 2>/dev/null)
  [ -n "$want" ] && [ -f "$1/metrics.csv" ] && tail -n 1 "$1/metrics.csv" | grep -q "^$want,"
}

run_seed() { # RUN_DIR CONFIG SEED [--set key=value ...]: start the run, resume it if it stopped early, skip it
  # if it finished. The --set arguments apply to a start and to a resume, so --set num_iterations=N extends
  # a finished shorter run to N.
  local dir=$1 config=$2 seed=$3 want= a
  shift 3
  for a in "$@"; do [[ $a == num_iterations=* ]] && want=${a#num_iterations=}; done
  if [ ! -f "$dir/checkpoints/last.pt" ]; then
    # --overwrite: a start killed before its first checkpoint left a directory without one
    metarl train "$config" --seed "$seed" --logdir "$dir" --overwrite "$@"
  elif ! finished "$dir" "$want"; then
    metarl train --resume "$dir" "$@"
  fi
}
