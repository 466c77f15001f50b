#!/usr/bin/env bash
# Reproduces one locomotion row of Finn et al. 2017 (sec. 5.3, Fig. 5) from scratch: MAML, the
# pretrained baseline and, where the task has one (goal velocity), the oracle, trained with the configs
# TASK.yaml, TASK_pretrain.yaml and TASK_oracle.yaml; then `metarl evaluate` of MAML beside them (and a
# randomly initialised policy) after 0..3 policy-gradient steps on 40 held-out tasks: the table in
# OUT_DIR/maml/eval-40.json, the adaptation curves in OUT_DIR/maml/eval-40.png; then again with the step
# sizes of the paper's test scripts (OUT_DIR/maml/eval-40-paper-steps.{json,png}, what Figure 5 shows), and on
# the paper's own test goals (OUT_DIR/maml/eval-finn2017.json; experiments/versus_paper.py compares).
# Usage: bash experiments/locomotion.sh TASK [OUT_DIR] [SEED] [--set key=value ...]
#   TASK: halfcheetah_vel, halfcheetah_dir, ant_vel, ant_dir or ant_goal (default OUT_DIR:
#   runs/TASK-paper, SEED 1). Runs that exist are resumed unless finished, so the script can be run
#   again after an interruption. Extra arguments go to `metarl train` when a run starts or resumes
#   (--set num_iterations=N extends finished shorter runs), e.g. one core
#   per run (--set sampler.num_workers=1 --set update_threads=1) or a quick dry run:
#   bash experiments/locomotion.sh ant_vel /tmp/ant 1 --set num_iterations=2 --set meta_batch_size=2 \
#     --set env.episodes_per_task=2
# The paper's Figure 5 from several tasks and seeds: python experiments/figure5.py fig5.png DIR1/maml/eval-40-paper-steps.json ...
set -euo pipefail
tasks="halfcheetah_vel halfcheetah_dir ant_vel ant_dir ant_goal"
task=${1:-}
if [[ " $tasks " != *" $task "* ]]; then
  echo "locomotion.sh: unknown task '$task'; use one of: $tasks" >&2
  exit 2
fi
shift
out=runs/$task-paper
seed=1
source "$(dirname "$0")/rl_common.sh"
baselines=(--baseline pretrained="$out/pretrain")
train maml "$task"
train pretrain "${task}_pretrain"
if metarl configs | grep "^${task}_oracle " > /dev/null; then  # not -q: an early exit would break the pipe (pipefail)
  train oracle "${task}_oracle"
  baselines+=(--baseline oracle="$out/oracle")
fi
# Every evaluation scores the task's own reward: without the half-cheetahs' training-only pitch cost, where a
# run was trained with it (--set env.kwargs.pitch_cost_weight=W; envs/locomotion.py).
scoring=()
case $task in halfcheetah_*) scoring=(--set env.kwargs.pitch_cost_weight=0) ;; esac
metarl evaluate "$out/maml" --tasks 40 --steps 3 --seed "$eval_seed" "${baselines[@]}" ${scoring[@]+"${scoring[@]}"} \
  --out "$out/maml/eval-40.json" --plot "$out/maml/eval-40.png"
# The paper's test scripts (maml_rl's maml_examples/test_maml_*.py): lr on the first step and a fraction
# of it on each further one, and the baselines' own step sizes.
case $task in
  halfcheetah_vel) later=0.5; lrs=(--baseline-lr pretrained=0.02 --baseline-lr random=0.1) ;;
  ant_dir) later=0.01; lrs=(--baseline-lr pretrained=0.2 --baseline-lr random=1.0) ;;
  *) later=0.5; lrs=(--baseline-lr pretrained=0.2 --baseline-lr random=1.0) ;;
esac
metarl evaluate "$out/maml" --tasks 40 --steps 3 --seed "$eval_seed" "${baselines[@]}" "${lrs[@]}" \
  --set test_lr_after_first=$later ${scoring[@]+"${scoring[@]}"} --out "$out/maml/eval-40-paper-steps.json" --plot "$out/maml/eval-40-paper-steps.png"
# And on the paper's own 40 goals (all but AntGoal, which the paper did not run), scored with its reward (rllab's
# control cost of the clipped action), to pair with its per-goal returns.
if [ "$task" != ant_goal ]; then
  metarl evaluate "$out/maml" --task-set finn2017 --steps 3 --seed "$eval_seed" "${baselines[@]}" "${lrs[@]}" \
    --set test_lr_after_first=$later --set env.kwargs.clip_ctrl_cost=true ${scoring[@]+"${scoring[@]}"} \
    --out "$out/maml/eval-finn2017.json"
  echo "against the paper, goal for goal: python experiments/versus_paper.py $out/maml/eval-finn2017.json"
fi
