#!/usr/bin/env bash
# Reproduce the shipped model and every figure in README.md and model/MODEL_CARD.md.
#   bash training/reproduce.sh DATA_DIR        (about 1.5 h on 2 CPU cores)
# Trains into runs/, then copies the artifact and its reports into model/shipped/.
set -euo pipefail
data=${1:?usage: bash training/reproduce.sh DATA_DIR}
cd "$(dirname "$0")/.."
shipped=model/shipped
reports=$shipped/reports
model=runs/lite0/pneumonia_efficientnet_lite0.keras
mkdir -p "$reports"

python -m training train --data "$data" --out runs/lite0
cp runs/lite0/pneumonia_efficientnet_lite0.{keras,json,history.json} "$shipped/"
model=$shipped/pneumonia_efficientnet_lite0.keras

# Baseline without ImageNet initialisation: same data, split, augmentation, loss and calibration, but every
# layer trained with BatchNorm learning its own statistics (random ones can't be frozen), no head-only stage.
python -m training train --data "$data" --out runs/scratch --weights none --unfreeze-blocks all \
    --no-freeze-batchnorm --stage1-epochs 0 --stage2-epochs 10 --stage2-lr 0.001
python -m training evaluate --model runs/scratch/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/baseline_test.json" --no-plots

python -m training evaluate --model "$model" --data "$data" --split test --out "$reports/test.json" --record
python -m training ood-report --model "$model" --data "$data" --split test --out "$reports/ood.json"
python -m training card --model "$model" --test-report "$reports/test.json" --ood-report "$reports/ood.json" \
    --baseline-report "$reports/baseline_test.json"
python -m bench --model "$model" --out bench/results.json
