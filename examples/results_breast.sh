#!/usr/bin/env bash
# Regenerate RESULTS.md: 5-fold cross-validation on the real BrEaST-Lesions_USG data, every
# model trained from scratch (no pretrained weights: none can be downloaded on this machine nor
# on most clusters' compute nodes), beside the reference study's single 27-image test split.
#
#   1. U-Net EfficientNetB2 segmenter (128 px: chosen on BUS-BRA's validation cases against
#      fold 0's 96, examples/results_busbra.sh step 8c)         breastus cv seg
#   2. MobileNetV2, whole image (160 px: chosen on BUS-BRA's validation cases against fold 0's
#      128, examples/results_busbra.sh step 6d)                 breastus cv cls
#   3. ResNet50, whole image (96 px)                            breastus cv cls
#   4. lesion-centred MobileNetV2 (160 px crops around the lesion, margin 0.2: the crop size and
#      margin chosen on BUS-BRA's validation cases, examples/results_busbra.sh step 10; BrEaST
#      took no part in choosing them): trained on crops from the ground-truth masks, evaluated
#      on crops from step 1's segmenter of the same fold (no ground truth at test time),
#      ground-truth-crop numbers reported beside; fused with the lesion descriptors like step 6
#   5. lesion descriptors of every out-of-fold lesion from its ground-truth mask and from the
#      fold's segmenter's mask (breastus evaluate on each segmentation fold: descriptors.csv)
#   6. step 3's ResNet50 fused with the lesion descriptors (cv cls --fusion descriptors
#      --seg-cv: fitted after training, nothing is retrained): descriptors model on the training
#      folds' ground-truth masks, combination and threshold on validation, test descriptors
#      from the fold's segmenter
#   7. flip test-time augmentation on step 3's folds (evaluate --tta flip)
#   8. step 4's folds fused with the descriptors and the same fold's step-3 ResNet50 score
#      (--fuse-with-cv, the two-view combination of results_busbra.sh step 10)
#
# Usage: examples/results_breast.sh PATH/TO/BrEaST-Lesions_USG [WORK_DIR]
#        (writes RESULTS.md in the current folder, or $OUT)
#
# Input sizes are smaller than the reference study's 224/256 px to stay under two hours on 2
# CPU cores: measured 93 minutes alone with steps 2 and 4 at 128 px (U-Net 36, ResNet50 26,
# each MobileNetV2 12 minutes of training; 2026-11-25), plus about 6 minutes for steps 5-7
# (2026-11-29). At 160 px step 2 took 23 minutes and step 4 24 minutes, with their
# evaluations and fusion (2026-11-30, each partly beside another run). The U-Net at 128 px
# (results_busbra.sh step 8c's choice) trained 56 minutes beside another training; its last
# fold, nearly alone, took 16 s an epoch, about 41 minutes for all five (2026-11-30). Step 8
# takes about 4 minutes. About 2 h in all. On another 2-core machine (AMD EPYC, 2026-11-30),
# whose training steps are 2.0-2.1x faster (benchmarks/train_precision.py float32), steps 2-8
# took 31.9 minutes in one run (times.tsv: MobileNetV2 7.0, ResNet50 14.0, lesion-centred
# 8.2, fusion, TTA and step 8 2.7) and the U-Net about 20 alone (40 beside another
# training): about 52 minutes in all. For a shorter run, lower ResNet50's epochs or the
# U-Net's input size. Resumable: run it again after an interruption and
# finished folds are kept (the wall time reported is then that of the last invocation).
# Every breastus command that runs is timed into $WORK/times.tsv (UTC end time, seconds, exit
# status, command; results_busbra.sh writes the same file), across invocations: the time of a
# whole run is  awk -F'\t' '{s += $2} END {print s / 3600, "h"}' $WORK/times.tsv
# Each classifier's decision threshold is chosen per fold on its validation cases (carved from
# the training folds) to reach malignant sensitivity 0.9 there; AUC does not depend on it.
set -euo pipefail
breast=${1:?usage: $0 PATH/TO/BrEaST-Lesions_USG [WORK_DIR]}
work=${2:-work/results}
out=${OUT:-RESULTS.md}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
start=$(date +%s)
mkdir -p "$work"
commands="$work/commands.sh"
: > "$commands"
. "$here/results_lib.sh"  # log, run, run_unless; each breastus command timed

data="$work/data"
log breastus prepare "$breast" --out "$data" --overwrite  # logged also when already done
log breastus split "$data" --folds 5 --seed 42
if [ ! -f "$data/splits.csv" ]; then
  breastus prepare "$breast" --out "$data" --overwrite
  breastus split "$data" --folds 5 --seed 42
fi

# shared by every run: from scratch, 5 folds, 15% of the training folds for validation
common=(--weights none --folds 5 --val-fraction 0.15 --seed 42)
# (a constant learning rate, the from-scratch default: examples/results_busbra.sh step 6 tried a
# cosine schedule on BUS-BRA's validation cases and kept this)
cls=(--epochs 40 --lr 1e-3 --lr-schedule constant --warmup-epochs 0 --batch-size 16
     --target-sensitivity 0.9)

seg="$work/cv/unet-effb2-128"  # every lesion crop and descriptor below comes from its folds
run breastus cv seg "$data" "${common[@]}" --img-size 128 --epochs 30 --lr 1e-3 \
  --batch-size 8 --out "$seg"
run breastus cv cls "$data" "${common[@]}" "${cls[@]}" --model mobilenetv2 --img-size 160 \
  --out "$work/cv/mobilenetv2-160"
run breastus cv cls "$data" "${common[@]}" "${cls[@]}" --model resnet50 --img-size 96 \
  --out "$work/cv/resnet50"
run breastus cv cls "$data" "${common[@]}" "${cls[@]}" --model mobilenetv2 --img-size 160 \
  --roi mask --roi-margin 0.2 --seg-cv "$seg" --fusion descriptors \
  --out "$work/cv/mobilenetv2-roi160"
for k in 0 1 2 3 4; do  # 5. (folds evaluated by this version have it already)
  fold="$seg/fold-$k"
  run_unless "$fold/eval-test/descriptors.csv" breastus evaluate "$fold" --bootstrap 0
done
run breastus cv cls "$data" "${common[@]}" "${cls[@]}" --model resnet50 --img-size 96 \
  --seg-cv "$seg" --fusion descriptors --out "$work/cv/resnet50"  # 6.
for k in 0 1 2 3 4; do  # 7.
  fold="$work/cv/resnet50/fold-$k"
  run_unless "$fold/eval-test-tta-flip/predictions.csv" \
    breastus evaluate "$fold" --tta flip --bootstrap 0
done
# 8. step 4's folds fused with the lesion descriptors and the same fold's step-3 ResNet50 score
# (--fuse-with-cv: results_busbra.sh step 10's two-view combination, fitted per fold on
# validation; nothing is retrained), in a copy of step 4's folder so that its CNN + descriptors
# fusion stays beside it
two="$work/cv/mobilenetv2-roi160-2v"
log cp -a "$work/cv/mobilenetv2-roi160" "$two.partial"
log mv "$two.partial" "$two"
if [ ! -f "$two/cv.json" ]; then
  rm -rf "$two.partial"
  cp -a "$work/cv/mobilenetv2-roi160" "$two.partial"
  mv "$two.partial" "$two"
fi
run breastus cv cls "$data" "${common[@]}" "${cls[@]}" --model mobilenetv2 --img-size 160 \
  --roi mask --roi-margin 0.2 --seg-cv "$seg" --fusion descriptors \
  --fuse-with-cv "$work/cv/resnet50" --out "$two"

seconds=$(( $(date +%s) - start ))
# the time: this invocation's, and the recipe's measured across invocations (both scripts'
# commands in times.tsv; results_busbra.sh's commands.sh when it has run)
"$python" "$here/write_results.py" "$out" --seconds "$seconds" --commands "$commands" \
  --times "$work/times.tsv" --recipe "$commands" "$work/busbra/commands.sh" \
  --data-dir "$breast" --work-dir "$work" --append "$work/busbra/section.md" \
  --descriptors "$seg" --tta "ResNet50, whole image=$work/cv/resnet50" \
  --two-view "lesion-centred MobileNetV2 + whole-image ResNet50 + lesion descriptors=$two" \
  "MobileNetV2, whole image=$work/cv/mobilenetv2-160" \
  "ResNet50, whole image=$work/cv/resnet50" \
  "lesion-centred MobileNetV2=$work/cv/mobilenetv2-roi160" \
  "U-Net EfficientNetB2=$seg"
