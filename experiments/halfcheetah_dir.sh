#!/usr/bin/env bash
# Reproduces the half-cheetah forward/backward comparison of Finn et al. 2017 (sec. 5.3, Fig. 5):
# MAML and the pretrained baseline, trained with the configs halfcheetah_dir{,_pretrain}.yaml, then
# `metarl evaluate` of MAML beside the baseline (and a randomly initialised policy) after 0..3
# policy-gradient steps on 40 held-out tasks (each a direction, forward or backward).
# Usage: bash experiments/halfcheetah_dir.sh [OUT_DIR] [SEED] [--set key=value ...]
#   Runs that exist are resumed unless finished. Extra arguments go to `metarl train` when a run
#   starts, e.g. a quick dry run:
#   bash experiments/halfcheetah_dir.sh /tmp/hc 1 --set num_iterations=2 --set meta_batch_size=2 \
#     --set env.episodes_per_task=2
set -euo pipefail
out=runs/halfcheetah_dir-paper
seed=1
source "$(dirname "$0")/rl_common.sh"
train maml halfcheetah_dir
train pretrain halfcheetah_dir_pretrain
metarl evaluate "$out/maml" --tasks 40 --steps 3 --seed "$eval_seed" \
  --baseline pretrained="$out/pretrain" \
  --out "$out/maml/eval-40.json" --plot "$out/maml/eval-40.png"
