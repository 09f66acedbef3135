#!/usr/bin/env bash
# The main job on embedded synthetic data: synth -> prepare -> split.
# Usage: examples/demo.sh [DEMO_DIR]   (make demo runs it with the project's .venv on PATH)
set -euo pipefail
demo=${1:-demo}
echo "== breastus demo in $demo/ =="
rm -rf "$demo"
breastus synth "$demo/source" --cases 80 --seed 0
breastus prepare "$demo/source" --out "$demo/data"
breastus split "$demo/data" --seed 42 --folds 5
echo "== done: dataset in $demo/data (manifest.csv, splits.csv, prepare.json) =="
