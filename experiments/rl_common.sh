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

source "$(dirname "${BASH_SOURCE[0]}")/runs_lib.sh"

train() { # NAME CONFIG: runs/NAME from CONFIG (started, resumed or skipped: run_seed)
  run_seed "$out/$1" "$2" "$seed" ${extra[@]+"${extra[@]}"}
}
