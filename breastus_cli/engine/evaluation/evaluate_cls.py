"""``breastus evaluate`` of a classifier: p(malignant) per case (whole images, or lesion crops
from the ground-truth or a segmenter's masks), the threshold, metrics with bootstrap CIs, the
fused classifier's numbers beside the CNN's; RUN/eval-<split>/predictions.csv, metrics.json.

The threshold and the fused classifier are the run's (threshold.json, fusion.json), or those
the calibration step (evaluation/calibrate.py) just chose when evaluate was asked to."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.imaging import read_luminance, save_png
from breastus_cli.data.roi import write_roi_crops
from breastus_cli.engine.apply import fusion, postprocess
from breastus_cli.engine.apply.images import lesion_crop
from breastus_cli.engine.apply.inference import open_run
from breastus_cli.engine.apply.masks import predicted_masks
from breastus_cli.engine.evaluation.eval_cases import (
    by_dataset, check_not_own_data, check_partner_unseen, data_dir, is_other_dataset,
    split_cases,
)
from breastus_cli.engine.evaluation.eval_settings import (
    Calibration, CalibrateSettings, EvalResult, EvalSettings, command_line,
)
from breastus_cli.engine.runs.cvdir import is_cv_dir
from breastus_cli.engine.runs.provenance import (
    CHOSEN_ON_VALIDATION, masks_source,
)
from breastus_cli.engine.runs.rundir import THRESHOLD_RULE, check_same_split, read_threshold
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.metrics import as_score, classification_metrics
from breastus_cli.errors import InputError, UsageError, WorkError

#: metrics.json's ``roi_source`` of a lesion-centred classifier scored on ground-truth crops
ORACLE_ROI = "ground-truth masks (oracle: upper bound)"


def p_malignant(loaded: Any, images: list[str], batch_size: int) -> np.ndarray:
    """p(malignant) of each prepared image through the one inference path."""
    return as_score(loaded.run_files(images, batch_size)[:, 1])  # as predictions.csv has it


def cls_images(frame: Any, config: dict[str, Any] | RunConfig,
                settings: EvalSettings | CalibrateSettings, out_dir: Path,
                role: str, source: str, prefix: str = "") -> tuple[list[str], list[bool] | None]:
    """What the classifier sees: whole images, or lesion crops from the ground-truth masks
    (``source='gt'``) or from the segmenter's masks (``'seg'``); with crops, whether a lesion
    was found (an empty mask falls back to the whole image). Crops are written to
    ``out_dir/<prefix>roi-<source>-<role>/``."""
    margin = RunConfig.of(config).roi_margin
    if margin is None:  # a whole-image classifier
        return list(frame["image_path"]), None
    if source == "gt":
        if (frame["mask_path"] == "").any():
            raise InputError("ground-truth crops need a lesion mask for every case")
        return (write_roi_crops(frame, out_dir / f"{prefix}roi-gt-{role}", margin),
                [True] * len(frame))
    folder = out_dir / f"{prefix}roi-seg-{role}"
    folder.mkdir(parents=True, exist_ok=True)
    paths, found = [], []
    masks = predicted_masks(Path(settings.seg_run), list(frame["image_path"]),
                            settings.batch_size, tta=settings.tta)
    for case_id, image_path, mask in zip(frame["case_id"], frame["image_path"], masks):
        image, _, hit = lesion_crop(read_luminance(image_path), mask, margin)
        target = folder / f"{case_id}.png"
        save_png(image, target)
        paths.append(str(target))
        found.append(hit)
    return paths, found


def partner_scores(partner: Path, frames: dict[str, Any],
                   settings: EvalSettings | CalibrateSettings, out_dir: Path, data: Path,
                   run_config: dict[str, Any] | RunConfig, also_unseen: list[Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], float]:
    """A second classifier's p(malignant) on each named frame (through the one inference
    path: whole images, or lesion crops from ``--seg-run`` when it is lesion-centred), and its
    own decision threshold. It must not have trained on those cases, nor on ``also_unseen``'s
    (the cases the fusion fitted on them will score)."""
    config = RunConfig.read(partner)
    if config.task != "cls":
        raise InputError(f"--fuse-with {partner} is a '{config.task}' run, not a classifier")
    check_partner_unseen(partner, config, data, [*frames.values(), *(also_unseen or [])],
                         run_config)
    roi = config.roi_margin is not None
    loaded = open_run(partner, "cls", config=config, tta=settings.tta)
    scores = {}
    for role, frame in frames.items():
        images, _ = cls_images(frame, config, settings, out_dir, role,
                                "seg" if roi else "gt", prefix="partner-")
        scores[role] = p_malignant(loaded, images, settings.batch_size)
    return scores, read_threshold(partner, config).value


def check_seg_run(seg_run: Path | None, roi: bool, fused: bool, data: Path, split: str) -> None:
    """Refuse (exit 2) a ``--seg-run`` that nothing uses (a whole-image classifier without a
    fused classifier), a segmenter fold ensemble of this very dataset, or a segmenter whose
    dataset has been re-split since it trained."""
    if seg_run is None:
        return
    if not roi and not fused:
        raise UsageError("--seg-run is for lesion-centred classifiers (trained with --roi mask) "
                         "and fused ones (--fusion descriptors)")
    if is_cv_dir(seg_run):
        check_not_own_data(seg_run, data, "--seg-run")  # a segmenter fold ensemble
    elif split != "all":
        check_same_split(seg_run, RunConfig.read(seg_run), data)


def evaluate_cls(settings: EvalSettings, config: RunConfig, start: float,
                 calibration: Calibration | None = None) -> EvalResult:
    """Score a classifier on ``settings.split``; ``calibration``: what the calibration step
    chose for this evaluation (its threshold and fused classifier then apply)."""

    data = data_dir(settings, config)
    frame = split_cases(data, settings.split, config)
    frame = frame[frame["label"].isin(["benign", "malignant"])].reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"no case in split '{settings.split}' of {data}")
    loaded = open_run(settings.run_dir, "cls", config=config, tta=settings.tta)
    # another dataset: its own folder, no threshold.json
    other = is_other_dataset(settings, config, data)
    out_dir = settings.out_dir(other=other)
    out_dir.mkdir(parents=True, exist_ok=True)
    roi = config.roi_margin is not None
    source = "seg" if roi and settings.seg_run is not None else "gt"
    fused = (calibration.fusion if calibration is not None and calibration.fusion is not None
             else fusion.read(Path(settings.run_dir)))
    check_seg_run(settings.seg_run, roi, fused is not None, data, settings.split)
    images, found = cls_images(frame, config, settings, out_dir, settings.split, source)
    p = p_malignant(loaded, images, settings.batch_size)
    if not np.isfinite(p).all():
        raise WorkError(f"{settings.run_dir}: the model outputs non-finite probabilities "
                        f"for {int((~np.isfinite(p)).sum())} case(s); the training diverged")
    y = (frame["label"] == "malignant").to_numpy().astype(int)

    extra: dict[str, Any] = {}
    if roi:
        # ground-truth crops need the answer (the lesion mask) at test time: an oracle
        crops_from = ("segmentation run " + str(settings.seg_run) if source == "seg"
                      else "ground-truth masks")
        extra["roi_source"] = crops_from if source == "seg" else ORACLE_ROI
        extra["roi"] = {"crops_from": crops_from, "oracle": source == "gt",
                        "lesion_found": int(sum(found or [])), "n": int(len(frame))}
        if source == "seg":  # which segmenter, as fields (runs/provenance.py), and its mask
            # post-processing (engine/apply/postprocess.py)
            extra["roi"].update(masks_source(settings.seg_run, out_dir))
            extra["roi"]["mask_postprocess"] = postprocess.of(settings.seg_run).method
    chosen_now = calibration.threshold if calibration is not None else None
    if chosen_now is not None:  # chosen on the validation cases by the calibration step
        threshold, source_text = float(chosen_now["threshold"]), str(chosen_now["source"])
        extra["validation_sensitivity"] = chosen_now["validation_sensitivity"]
        extra["validation_n"] = chosen_now["validation_n"]
    elif settings.threshold is not None:
        threshold = float(settings.threshold)
        source_text = f"given with --threshold {threshold:g}"
    else:  # the one rule: the run's threshold.json (chosen on validation), else 0.5
        chosen = loaded.decision  # a fold ensemble's: the median of its folds' thresholds
        threshold, source_text = chosen.value, chosen.source
        # chosen on the validation cases of the run's own dataset: optimistic on a split of it
        # that holds them; another dataset's cases took no part (--target-sensitivity with
        # --split val/all is refused in EvalSettings)
        if settings.split in ("val", "all") and not other \
                and chosen.chosen_on == CHOSEN_ON_VALIDATION:
            extra["threshold_note"] = (f"the threshold was chosen on the validation cases, "
                                       f"which split '{settings.split}' reports on: its "
                                       "sensitivity and specificity are optimistic")

    metrics = classification_metrics(y, p, threshold, n_bootstrap=settings.n_bootstrap,
                                     seed=settings.seed)
    p_gt = None
    if roi and source == "seg":
        # the cost of imperfect segmentation: the same classifier on ground-truth crops
        gt_images, _ = cls_images(frame, config, settings, out_dir, settings.split, "gt")
        p_gt = p_malignant(loaded, gt_images, settings.batch_size)
        extra["ground_truth_roi"] = {
            k: v for k, v in classification_metrics(y, p_gt, threshold,
                                                     n_bootstrap=settings.n_bootstrap,
                                                     seed=settings.seed).items()
            if k in ("auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "ci")}
    fusion_columns: dict[str, np.ndarray] = {}
    partner = (Path(settings.fuse_with) if settings.fuse_with is not None else
               fusion.partner_dir(Path(settings.run_dir), fused)
               if fused is not None and fused.partner is not None and settings.seg_run is not None
               else None)
    p_partner: dict[str, np.ndarray] = {}
    partner_threshold = 0.5
    if partner is not None:
        p_partner, partner_threshold = partner_scores(partner, {settings.split: frame}, settings,
                                                      out_dir, data, config)
    if fused is not None and settings.seg_run is not None:
        extra["fusion"], fusion_columns = fusion.score_run(
            fused, frame, p, threshold, Path(settings.seg_run), out_dir, settings.batch_size,
            settings.n_bootstrap, settings.seed, p_partner.get(settings.split), partner_threshold)
    per_dataset = by_dataset(frame, lambda m: {
        k: v for k, v in classification_metrics(y[m], p[m], threshold,
                                                n_bootstrap=settings.n_bootstrap,
                                                seed=settings.seed).items()
        if k in ("n", "n_malignant", "auc", "sensitivity", "specificity", "accuracy",
                 "balanced_accuracy", "ci")})
    if per_dataset:  # a combined dataset: each hospital's own numbers beside the pooled ones
        extra["by_dataset"] = per_dataset
    metrics.update({"split": settings.split, "threshold_source": source_text,
                    "threshold_rule": THRESHOLD_RULE,
                    "run_dir": str(settings.run_dir), "model": config.model,
                    "fold": config.fold, **extra})
    predictions = pd.DataFrame({
        "case_id": frame["case_id"], "image": frame["image"], "y_true": y,
        "label": frame["label"], "p_malignant": p,  # rounded where made (as_score)
        "y_pred": (p >= threshold).astype(int),
    })
    if "dataset" in frame.columns:
        predictions.insert(1, "dataset", frame["dataset"])
    if found is not None:
        predictions["lesion_found"] = np.asarray(found, dtype=int)
    if p_gt is not None:  # pooled by cv --seg-cv beside the predicted-crop numbers
        predictions["p_malignant_gt_roi"] = p_gt
        predictions["y_pred_gt_roi"] = (p_gt >= threshold).astype(int)
    for name, values in fusion_columns.items():  # the fused classifier's, beside the CNN's
        predictions[name] = values
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    write_json(out_dir / "metrics.json", metrics)
    command = command_line(settings)
    return EvalResult(run_dir=Path(settings.run_dir), out_dir=out_dir, task="cls",
                      split=settings.split, metrics=metrics, frame=predictions, config=config.raw,
                      command=command, threshold_source=source_text,
                      seconds=round(time.perf_counter() - start, 2), extra=extra, data=data,
                      other=other or settings.ensemble, calibration=calibration)

