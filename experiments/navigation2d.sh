#!/usr/bin/env bash
# Reproduces the 2D-navigation comparison of Finn et al. 2017 (sec. 5.3, Fig. 4): MAML, the
# pretrained baseline and the oracle (the goal in the observation), trained with the configs
# navigation2d{,_pretrain,_oracle}.yaml, then `metarl evaluate` of MAML beside both baselines
# (and a randomly initialised policy) after 0..3 policy-gradient steps, on 40 held-out goals
# (the paper's figure) and on 400 (the reference implementation's numbers).
# Usage: bash experiments/navigation2d.sh [OUT_DIR] [SEED] [--set key=value ...]
#   Runs that exist are resumed unless finished. Extra arguments go to `metarl train` when a run
#   starts or resumes (--set num_iterations=N extends finished shorter runs), e.g. a quick dry run:
#   bash experiments/navigation2d.sh /tmp/nav 1 --set num_iterations=2 --set meta_batch_size=2 \
#     --set env.episodes_per_task=2
set -euo pipefail
out=runs/navigation2d-paper
seed=1
source "$(dirname "$0")/rl_common.sh"
train maml navigation2d
train pretrain navigation2d_pretrain
train oracle navigation2d_oracle
for n in 40 400; do
  metarl evaluate "$out/maml" --tasks "$n" --steps 3 --seed "$eval_seed" \
    --baseline pretrained="$out/pretrain" --baseline oracle="$out/oracle" \
    --out "$out/maml/eval-$n.json" --plot "$out/maml/eval-$n.png"
done
