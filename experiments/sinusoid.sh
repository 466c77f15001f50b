#!/usr/bin/env bash
# Reproduces the sinusoid table of RESULTS.md (Finn et al. 2017 sec. 5.1, Fig. 2-3):
# MAML (K=10 and K=5), Meta-SGD (K=10) and the pretrained baseline, 70,000 iterations each,
# then `metarl evaluate` on 600 held-out tasks after 0..10 steps.
# Usage: bash experiments/sinusoid.sh [OUT_DIR] [SEED]      (about 5 minutes per run on one core)
set -euo pipefail
out=${1:-runs/sinusoid-paper}
seed=${2:-0}
cfg=sinusoid  # the shipped config (metarl config show sinusoid)
mkdir -p "$out"
train() { # name, extra --set args...
  local name=$1; shift
  if [ ! -f "$out/$name/checkpoints/last.pt" ]; then
    metarl train "$cfg" --seed "$seed" --logdir "$out/$name" --overwrite "$@"  # --overwrite: a start killed before its first checkpoint
  elif ! grep -q "^70000," "$out/$name/metrics.csv"; then
    metarl train --resume "$out/$name"
  fi
}
train maml-k10
train pretrain --set algorithm=pretrain
train maml-k5 --set task.shots=5 --set task.query=5
train metasgd-k10 --set inner.learn_lr=true
for run in maml-k10 metasgd-k10; do
  metarl evaluate "$out/$run" --tasks 600 --steps 10 --shots 10 --baseline pretrained="$out/pretrain" \
    --out "$out/$run/eval-k10.json" --plot "$out/$run/eval-k10.png"
done
metarl evaluate "$out/maml-k5" --tasks 600 --steps 10 --shots 5 --baseline pretrained="$out/pretrain" \
  --out "$out/maml-k5/eval-k5.json" --plot "$out/maml-k5/eval-k5.png"
