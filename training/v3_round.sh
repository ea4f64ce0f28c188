#!/usr/bin/env bash
# Model v3 round (rules in training/card_notes.md, written before any member trained):
#   bash training/v3_round.sh DATA_DIR [OUTSIDE_DIR] [RUNS_DIR]
# Trains seeds 8, 9, 10 of the 8-epoch recipe one after another (about 80 minutes each on 2 CPU cores; run it with
# nothing else on the CPU). Each epoch is backed up (BackupAndRestore), so rerunning the same command after a stop
# resumes the member where it was and skips finished ones. When all three exist, selects on the stress set against
# the shipped model (v2.3) and refits the chosen network's population gate. The test split is not read here.
#
# On an accelerator, KERAS_BACKEND=torch (any backend but TensorFlow) fits the three members at once and stops there (each leaves
# fitted.weights.h5 and fit_record.json in its run folder; TensorFlow is not needed for this part). Bring those
# folders back and run the same command with TensorFlow: each member's artifact is written from its fit, then
# selection runs as above.
set -euo pipefail
data=${1:?usage: bash training/v3_round.sh DATA_DIR [OUTSIDE_DIR] [RUNS_DIR]}
outside=${2:-$(dirname "$data")/external}
runs=${3:-runs}
cd "$(dirname "$0")/.."
backend=$(python -c 'import keras; print(keras.backend.backend())' | tail -1)  # KERAS_BACKEND or ~/.keras/keras.json
pids=()
members=()
for seed in 8 9 10; do
  out=$runs/v3_seed$seed
  members+=(--member $out/pneumonia_efficientnet_lite0.keras)
  [ -f $out/pneumonia_efficientnet_lite0.keras ] && continue
  train=(python -m training train --data "$data" --out $out --seed $seed --split-seed 42 --stage1-epochs 0
         --stage2-epochs 8 --unfreeze-blocks all --schedule cosine --stage2-lr 3e-4 --batch-size 64 --rotation 0.055
         --shift 0.1 --zoom-height 0.15 --zoom-width 0.3)
  if [ "$backend" = tensorflow ]; then
    "${train[@]}"
  else
    mkdir -p $out && { "${train[@]}" > $out/fit.log 2>&1 & pids+=($!); }
  fi
done
if [ "$backend" != tensorflow ]; then
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ $failed = 0 ] || { echo "a member failed: see $runs/v3_seed*/fit.log" >&2; exit 1; }
  echo "members fitted on the $backend backend in $runs/v3_seed{8,9,10}; finish with TensorFlow: bash $0 $*"
  exit 0
fi
# The reference is v2.3, the shipped model before this round. The choice replaces the shipped files, so the round
# scores (and 'agreement' later rescores) a copy of v2.3 kept in the runs folder.
reference=$runs/v2_3/pneumonia_efficientnet_lite0.keras
if [ ! -f $reference ]; then
  grep -q '"model_version": "2.3"' model/shipped/pneumonia_efficientnet_lite0.json ||
    { echo "the shipped model is not v2.3: put v2.3's files in $runs/v2_3 (git history has them)" >&2; exit 1; }
  mkdir -p $runs/v2_3 && cp model/shipped/pneumonia_efficientnet_lite0.{keras,tflite,json,history.json} $runs/v2_3/
fi
python -m training select "${members[@]}" --data "$data" --out $runs/v3 --reference $reference --version 3 \
    --outside "$outside"
# Then, as reproduce.sh does for earlier rounds: copy runs/v3 into model/shipped, evaluate --record on test,
# agreement, ood-report, population-report, card, bench.
