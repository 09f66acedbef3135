#!/usr/bin/env bash
# Reproduce the reference study's classification on the real BrEaST-Lesions_USG data:
# rows with a tumor mask (252 cases), 80/10/10 split, MobileNetV2 and ResNet50 (ImageNet
# weights, Adam), evaluated on the test split with malignant sensitivity, specificity, AUC and
# 95% bootstrap CIs, then the two models side by side (the study's Table I).
#
# Usage: examples/classify_breast.sh PATH/TO/BrEaST-Lesions_USG [WORK_DIR]
#
# ImageNet weights come from the Keras cache (~/.keras/models). Without network (compute
# nodes), run `breastus weights download` on a machine with internet and copy the folder; or
# set WEIGHTS=none to train from scratch.
# Time on a 2-core CPU, estimated from the training throughput of MobileNetV2 at 224 px (~30
# images/s): about 5 minutes for MobileNetV2 (30 epochs) and 20-25 minutes for ResNet50.
set -euo pipefail
breast=${1:?usage: $0 PATH/TO/BrEaST-Lesions_USG [WORK_DIR]}
work=${2:-work/breast}
weights=${WEIGHTS:-imagenet}
lr=${LR:-1e-4}
epochs=${EPOCHS:-30}

breastus prepare "$breast" --out "$work/data" --overwrite
breastus split "$work/data" --ratio 0.8 0.1 0.1 --seed 42
for model in mobilenetv2 resnet50; do
  run="$work/runs/$model"
  rm -rf "$run"
  breastus train-cls "$work/data" --model "$model" --weights "$weights" --lr "$lr" \
    --epochs "$epochs" --img-size 224 --batch-size 16 --run-dir "$run"
  breastus evaluate "$run"                              # threshold 0.5, as the study
  breastus evaluate "$run" --target-sensitivity 0.9     # what a clinician asks for
done
breastus evaluate "$work/runs/mobilenetv2" "$work/runs/resnet50"
