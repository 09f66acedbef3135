#!/usr/bin/env bash
# The main job on embedded synthetic data, small enough for a laptop CPU (a few minutes):
# synth -> prepare -> split -> train a classifier and a segmenter -> evaluate -> predict.
# Usage: examples/demo.sh [DEMO_DIR]   (make demo runs it with the project's .venv on PATH)
set -euo pipefail
demo=${1:-demo}
echo "== breastus demo in $demo/ =="
rm -rf "$demo"
breastus synth "$demo/source" --cases 120 --seed 0 --min-side 96 --max-side 192
breastus prepare "$demo/source" --out "$demo/data"
breastus split "$demo/data" --seed 42 --ratio 0.7 0.1 0.2
# Pretrained weights need a network or a filled Keras cache; the demo trains from scratch.
breastus train-cls "$demo/data" --model smallcnn --weights none --img-size 64 --epochs 10 \
  --lr 1e-3 --run-dir "$demo/runs/cls"
breastus evaluate "$demo/runs/cls" --target-sensitivity 0.9
breastus train-seg "$demo/data" --weights none --img-size 64 --epochs 4 --run-dir "$demo/runs/seg"
breastus evaluate "$demo/runs/seg"
breastus predict "$demo/source/BrEaST-Lesions_USG-images_and_masks/"case0??.png \
  --cls-run "$demo/runs/cls" --seg-run "$demo/runs/seg" --out "$demo/predictions" \
  --save-masks --save-overlays
echo "== done: reports in $demo/runs/*/eval-test/report.html, predictions in $demo/predictions =="
