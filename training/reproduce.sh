#!/usr/bin/env bash
# Reproduce the shipped model (v3) and every figure in README.md and model/MODEL_CARD.md.
#   bash training/reproduce.sh DATA_DIR [OUTSIDE_DIR]     (about 9 h on 2 CPU cores; v3's members are 4 h of it,
#   minutes on a GPU: see training/v3_round.sh)
# OUTSIDE_DIR holds the counter-examples for the population gate (default ../shared/data/external; layout in
# training/outside.py).
# Trains into runs/, selects on the shift-stress validation, then copies the chosen artifact and its reports
# into model/shipped/. The official test split is read only after the choice, to report.
set -euo pipefail
data=${1:?usage: bash training/reproduce.sh DATA_DIR [OUTSIDE_DIR]}
outside=${2:-$(dirname "$data")/external}
cd "$(dirname "$0")/.."
shipped=model/shipped
reports=$shipped/reports
mkdir -p "$reports" runs

# v1, the previously shipped recipe (top 8 blocks, 3 + 12 epochs): the reference v2 must beat on the stress set.
# (The committed v1 report, reports/v1_test.json, came from this command in an earlier session.)
[ -f runs/lite0/pneumonia_efficientnet_lite0.keras ] || python -m training train --data "$data" --out runs/lite0

# v2 members: every block fine-tuned with BatchNorm frozen, 3 epochs, warm-up + cosine AdamW (peak 3e-4), batch 64,
# geometric augmentation with anisotropic zoom, on ONE patient-level split (seed 42). The v2.1 round's candidates are
# seeds 1, 3 and 4 (seed 2's files were not kept; seeds 1 and 3 were trained with the earlier Keras-layer augmentation,
# commit 9fd7568, so a rerun here gives other members, as any rerun does). The v2 report, reports/v2_test.json, came
# from 'evaluate' on the v2 model (seed 3) in an earlier session, like reports/v1_test.json.
members=()
for seed in 1 3 4; do
  out=runs/v2_seed$seed
  [ -f $out/pneumonia_efficientnet_lite0.keras ] || python -m training train --data "$data" --out $out --seed $seed \
      --split-seed 42 --stage1-epochs 0 --stage2-epochs 3 --unfreeze-blocks all --schedule cosine --stage2-lr 3e-4 \
      --batch-size 64 --rotation 0.055 --shift 0.1 --zoom-height 0.15 --zoom-width 0.3
  members+=(--member $out/pneumonia_efficientnet_lite0.keras)
done

# v2.1 round on the stress validation (rule in training/card_notes.md): members, their soup, their ensemble, v1.
# (Its reports, reports/v2_1_*.json, are kept; v2.1's test report was made with its own thresholds, Youden's J.)
python -m training select "${members[@]}" --data "$data" --out runs/v2_1 \
    --reference runs/lite0/pneumonia_efficientnet_lite0.keras --version 2.1

# v2.2 round: the fast recipe (2 epochs; stem and blocks 0-3 kept at ImageNet weights: the top 13 of 18 layer groups
# fine-tuned), seeds 5, 6, 7 on the same split, against v2.1 as the reference. The round's default threshold is the
# highest with stress sensitivity >= 0.95; a reference that stays is written out with its thresholds refitted.
fast=()
for seed in 5 6 7; do
  out=runs/v22_seed$seed
  [ -f $out/pneumonia_efficientnet_lite0.keras ] || python -m training train --data "$data" --out $out --seed $seed \
      --split-seed 42 --stage1-epochs 0 --stage2-epochs 2 --unfreeze-blocks 13 --schedule cosine --stage2-lr 3e-4 \
      --batch-size 64 --rotation 0.055 --shift 0.1 --zoom-height 0.15 --zoom-width 0.3
  fast+=(--member $out/pneumonia_efficientnet_lite0.keras)
done
python -m training select "${fast[@]}" --data "$data" --out runs/v2_2 \
    --reference runs/v2_1/pneumonia_efficientnet_lite0.keras --version 2.2
cp runs/v2_2/selection.json "$reports/v2_2_selection.json"
cp runs/v2_2/pneumonia_efficientnet_lite0.{keras,tflite,json,history.json} "$shipped/"
model=$shipped/pneumonia_efficientnet_lite0.keras

# v2.3: the same network, refitted under the v3 rules written before the v3 members train (training/card_notes.md):
# presets screening / balanced (default) / confirmatory in threshold order, and the population gate fitted with the
# counter-examples of OUTSIDE_DIR (outlier exposure), thresholds on the clean validation split.
python -m training evaluate --model "$model" --data "$data" --split test --out "$reports/v2_2_test.json" --no-plots
python -m training refit --model "$model" --data "$data" --outside "$outside" --version 2.3
python -m training evaluate --model "$model" --data "$data" --split test --out "$reports/v2_3_test.json" --no-plots
python -m training agreement --selection "$reports/v2_2_selection.json" --data "$data" --out "$reports/v2_2_agreement.json"

# v3 round (rules in training/card_notes.md, written before its members trained): seeds 8, 9, 10 of the 8-epoch
# recipe, their soup and ensemble against v2.3 on the stress set; the chosen network's population gate refitted by
# the same command. (On an accelerator: KERAS_BACKEND=torch bash training/v3_round.sh ... fits the members, then
# this line finishes them; see the script.)
bash training/v3_round.sh "$data" "$outside"
cp runs/v3/selection.json "$reports/selection.json"
cp runs/v3/pneumonia_efficientnet_lite0.{keras,tflite,json,history.json} "$shipped/"

# Baseline without ImageNet initialisation: same data and split, every layer trained with BatchNorm learning its
# own statistics, no head-only stage. (The committed report was made in the v1 era, when thresholds were chosen on
# the clean validation split; a rerun fits them on the stress set, so its accuracy may differ, not its ROC AUC.)
python -m training train --data "$data" --out runs/scratch --weights none --unfreeze-blocks all \
    --no-freeze-batchnorm --stage1-epochs 0 --stage2-epochs 3 --stage2-lr 0.001
python -m training evaluate --model runs/scratch/pneumonia_efficientnet_lite0.keras --data "$data" \
    --split test --out "$reports/baseline_test.json" --no-plots

# Reporting: the shipped model (recorded into its metadata for the app's held-out readout), every candidate
# scored on test after the choice (did the stress ranking agree?), the OOD gate, the card, the benchmarks.
python -m training evaluate --model "$model" --data "$data" --split test --out "$reports/test.json" --record
python -m training agreement --selection "$reports/selection.json" --data "$data" --out "$reports/agreement.json"
python -m training ood-report --model "$model" --data "$data" --split test --out "$reports/ood.json"
# Population gate II (issue 28): every candidate layer's features of v3, v2.3 and frozen ImageNet Lite0, once.
python -m training gate-features --model v3="$model" --model v2_3=runs/v2_3/pneumonia_efficientnet_lite0.keras \
    --data "$data" --outside "$outside" --out-dir runs/gate
python -m training population-report --model "$model" --data "$data" --outside "$outside" --features runs/gate \
    --layers block4_add block7_add block10_add block14_add top_activation --out "$reports/population.json"
# The heatmaps on test, to report (the map shown first was chosen on validation by select/refit, recorded in the
# metadata; `python -m training explanations --model M --data D` redoes only that): v3 and v2.3's Grad-CAM.
python -m bench faithfulness --data "$data/test" --n 60 --model "$model" \
    --model runs/v2_3/pneumonia_efficientnet_lite0.keras --out bench/faithfulness.json
python -m training card --model "$model" --test-report "$reports/test.json" --ood-report "$reports/ood.json" \
    --baseline-report "$reports/baseline_test.json" --reference-report "$reports/v2_3_test.json" \
    --reference-report "$reports/v2_2_test.json" \
    --reference-report "$reports/v2_1_test.json" \
    --reference-report "$reports/v2_test.json" --reference-report "$reports/v1_test.json" \
    --selection-report "$reports/selection.json" --agreement-report "$reports/agreement.json" \
    --variant-report "$reports/v1_test.json" --variant-report "$reports/variant_v2_test.json" \
    --variant-report "$reports/variant_v3_test.json" --variant-report "$reports/seed7_test.json" \
    --split-probe-report "$reports/split_probe.json" --population-report "$reports/population.json" \
    --faithfulness-report bench/faithfulness.json
python -m bench infill --data "$data/test" --n 30 --out bench/infill.json
# The real server: 3 Chromium sessions, 201 distinct test X-rays in all, a PDF report every 10th; then 8 at once.
python -m bench soak --sessions 3 --uploads 67 --report-every 10 --data "$data/test" --out bench/soak.json
python -m bench soak --sessions 8 --uploads 5 --report-every 0 --data "$data/test" --out bench/concurrency.json
python -m bench --model "$model" --out bench/results.json --repeats 20 --no-training
