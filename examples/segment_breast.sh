#!/usr/bin/env bash
# Reproduce the reference study's segmentation setting on the real BrEaST-Lesions_USG data:
# U-Net with an EfficientNetB2 encoder (segmentation-models), bce+jaccard loss, Adam lr 0.005,
# 20 epochs, 80/10/10 case-level split; evaluated on the test split at each image's original
# size (IoU, Dice with 95% CIs, HD95 in mm, lesion areas in mm^2, overlays).
#
# Usage: examples/segment_breast.sh PATH/TO/BrEaST-Lesions_USG [WORK_DIR]
#
# The encoder's ImageNet weights come from the Keras cache (~/.keras/models); without network
# run `breastus weights download` elsewhere and copy the folder, or set WEIGHTS=none.
# Time on a 2-core CPU: the U-Net trains ~12 images/s at 128 px (BENCHMARKS.md, seg pipeline),
# about 17 s per epoch of 201 images; 256 px has 4x the pixels: roughly 1 minute per epoch,
# 20-25 minutes for the 20 epochs. IMG_SIZE=128 takes about 6 minutes.
set -euo pipefail
breast=${1:?usage: $0 PATH/TO/BrEaST-Lesions_USG [WORK_DIR]}
work=${2:-work/breast}
weights=${WEIGHTS:-imagenet}
img_size=${IMG_SIZE:-256}

breastus prepare "$breast" --out "$work/data" --overwrite
breastus split "$work/data" --ratio 0.8 0.1 0.1 --seed 42
run="$work/runs/unet-efficientnetb2"
rm -rf "$run"
breastus train-seg "$work/data" --backbone efficientnetb2 --loss bce_jaccard --lr 0.005 \
  --epochs 20 --img-size "$img_size" --batch-size 8 --weights "$weights" --run-dir "$run"
breastus evaluate "$run" --split val
breastus evaluate "$run"
