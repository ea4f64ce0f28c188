#!/usr/bin/env bash
# Reproduce the shipped model and every figure in README.md and model/MODEL_CARD.md.
#   bash training/reproduce.sh DATA_DIR        (about 4 h on 2 CPU cores)
# Trains into runs/, then copies the chosen artifact and its reports into model/shipped/.
set -euo pipefail
data=${1:?usage: bash training/reproduce.sh DATA_DIR}
cd "$(dirname "$0")/.."
shipped=model/shipped
reports=$shipped/reports
mkdir -p "$reports"

# Variant 1 (shipped): top 8 blocks fine-tuned, photometric + geometric augmentation, label smoothing.
python -m training train --data "$data" --out runs/lite0
# Variant 2: deeper fine-tuning (top 12 blocks) plus mixup.
python -m training train --data "$data" --out runs/lite0_v2 --unfreeze-blocks 12 --mixup-alpha 0.2 --stage2-epochs 10
# Variant 3: every block fine-tuned, plus mixup (rule written down before it was trained).
python -m training train --data "$data" --out runs/lite0_v3 --unfreeze-blocks all --mixup-alpha 0.2 --stage2-epochs 8
# Run-to-run spread: the shipped recipe with another seed (another split and initialisation); not a candidate.
python -m training train --data "$data" --out runs/lite0_seed7 --seed 7
# Selection rule, on validation only: lowest validation Brier score (metrics.validation.brier in each JSON).
# Variant 1 won (0.0135 vs 0.0157 and 0.0154); it is copied into model/shipped/.
cp runs/lite0/pneumonia_efficientnet_lite0.{keras,tflite,json,history.json} "$shipped/"
model=$shipped/pneumonia_efficientnet_lite0.keras

# Baseline without ImageNet initialisation: same data, split, augmentation, loss and calibration, but every
# layer trained with BatchNorm learning its own statistics (random ones can't be frozen), no head-only stage.
python -m training train --data "$data" --out runs/scratch --weights none --unfreeze-blocks all \
    --no-freeze-batchnorm --stage1-epochs 0 --stage2-epochs 3 --stage2-lr 0.001

python -m training evaluate --model "$model" --data "$data" --split test --out "$reports/test.json" --record
python -m training evaluate --model runs/lite0_v2/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/variant_v2_test.json" --no-plots
python -m training evaluate --model runs/lite0_v3/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/variant_v3_test.json" --no-plots
python -m training evaluate --model runs/lite0_seed7/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/seed7_test.json" --no-plots
python -m training evaluate --model runs/scratch/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/baseline_test.json" --no-plots
python -m training split-probe --data "$data" --out "$reports/split_probe.json"
python -m training ood-report --model "$model" --data "$data" --split test --out "$reports/ood.json"
python -m training card --model "$model" --test-report "$reports/test.json" --ood-report "$reports/ood.json" \
    --baseline-report "$reports/baseline_test.json" \
    --variant-report "$reports/test.json" --variant-report "$reports/variant_v2_test.json" \
    --variant-report "$reports/variant_v3_test.json" \
    --variant-report "$reports/seed7_test.json" --split-probe-report "$reports/split_probe.json"
python -m bench --model "$model" --out bench/results.json
