#!/usr/bin/env bash
# Reproduces the half-cheetah goal-velocity comparison of Finn et al. 2017 (sec. 5.3, Fig. 5):
# MAML, the pretrained baseline and the oracle (the goal velocity in the observation), trained
# with the configs halfcheetah_vel{,_pretrain,_oracle}.yaml, then `metarl evaluate` of MAML beside
# both baselines (and a randomly initialised policy) after 0..3 policy-gradient steps on 40
# held-out goal velocities.
# Usage: bash experiments/halfcheetah_vel.sh [OUT_DIR] [SEED] [--set key=value ...]
#   Runs that exist are resumed unless finished. Extra arguments go to `metarl train` when a run
#   starts, e.g. a quick dry run:
#   bash experiments/halfcheetah_vel.sh /tmp/hc 1 --set num_iterations=2 --set meta_batch_size=2 \
#     --set env.episodes_per_task=2
set -euo pipefail
out=runs/halfcheetah_vel-paper
seed=1
source "$(dirname "$0")/rl_common.sh"
train maml halfcheetah_vel
train pretrain halfcheetah_vel_pretrain
train oracle halfcheetah_vel_oracle
metarl evaluate "$out/maml" --tasks 40 --steps 3 --seed "$eval_seed" \
  --baseline pretrained="$out/pretrain" --baseline oracle="$out/oracle" \
  --out "$out/maml/eval-40.json" --plot "$out/maml/eval-40.png"
