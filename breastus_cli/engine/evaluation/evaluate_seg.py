"""``breastus evaluate`` of a segmenter: per-case IoU, Dice, precision, recall, HD95 and areas
at each image's original size, the mask post-processing (the run's: RUN/postprocess.json, which
the calibration step chose on its validation cases; none without it), lesion descriptors of
predicted against true masks. It reads the run and writes only its own eval folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.imaging import read_luminance, read_mask, save_png
from breastus_cli.engine.apply import postprocess
from breastus_cli.engine.apply.images import to_original_size
from breastus_cli.engine.apply.inference import open_run
from breastus_cli.engine.evaluation.eval_cases import (
    by_dataset, data_dir, is_other_dataset, split_cases,
)
from breastus_cli.engine.evaluation.eval_settings import EvalResult, EvalSettings, command_line
from breastus_cli.engine.runs.rundir import THRESHOLD_RULE, read_threshold
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.descriptors import agreement as descriptor_agreement
from breastus_cli.engine.stats.descriptors import describe
from breastus_cli.engine.stats.seg_metrics import case_metrics, dataset_metrics
from breastus_cli.errors import InputError, WorkError


def truth_mask(case: Any, include_other: bool) -> np.ndarray:
    """A case's ground-truth lesion mask: its mask, united with its 'other' masks when the
    run's settings say so (``include_other_masks``)."""
    paths = [case["mask_path"]]
    if include_other and case.get("other_mask_path"):
        paths.append(case["other_mask_path"])
    return read_mask(paths)


#: where a run without RUN/postprocess.json gets one (evaluate reads the run, never writes it)
NOT_CHOSEN = ("none (not chosen for this run: 'breastus calibrate RUN' chooses it on its "
              "validation cases)")


def seg_postprocess(settings: EvalSettings, loaded: Any) -> Any:
    """The mask post-processing a segmentation evaluation applies: ``--postprocess`` when
    given, else the run's as predict applies it (RUN/postprocess.json, a fold ensemble's
    majority; masks as they are without it, said so with the command that chooses it)."""
    if settings.postprocess is not None:
        return postprocess.Postprocess(settings.postprocess, "given with --postprocess")
    if not settings.ensemble and not (Path(settings.run_dir) / postprocess.POSTPROCESS).is_file():
        return postprocess.Postprocess("none", NOT_CHOSEN)
    return loaded.postprocess


def evaluate_seg(settings: EvalSettings, config: RunConfig, start: float) -> EvalResult:
    """Per-case IoU, Dice, precision, recall, HD95 and areas, scored at each image's original
    size (the predicted probability map is resized back before thresholding)."""

    data = data_dir(settings, config)
    frame = split_cases(data, settings.split, config)
    frame = frame[frame["mask_path"] != ""].reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"no case with a lesion mask in split '{settings.split}' of {data}")
    if settings.threshold is not None:
        threshold = float(settings.threshold)
        threshold_source = f"given with --threshold {threshold:g}"
    else:
        chosen = read_threshold(settings.run_dir, config)
        threshold, threshold_source = chosen.value, chosen.source
    include_other = config.include_other_masks
    loaded = open_run(settings.run_dir, "seg", config=config, tta=settings.tta)
    chosen = seg_postprocess(settings, loaded)
    probabilities = loaded.run_files(list(frame["image_path"]), settings.batch_size)
    if not np.isfinite(probabilities).all():
        raise WorkError(f"{settings.run_dir}: the model outputs non-finite values; the training "
                        "diverged")
    other = is_other_dataset(settings, config, data)
    out_dir = settings.out_dir(other=other)
    mask_dir = out_dir / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows, described = [], []
    for i, case in frame.iterrows():
        truth = truth_mask(case, include_other)
        height, width = truth.shape
        pred = to_original_size(probabilities[i], truth.shape, threshold, chosen.method)[1]
        save_png(pred, mask_dir / f"{case['case_id']}.png")
        pixel = case.get("pixel_size_mm")
        pixel = float(pixel) if pixel is not None and np.isfinite(float(pixel)) else None
        scores = case_metrics(truth, pred, pixel)
        image = read_luminance(case["image_path"])
        image = image if image.shape == truth.shape else None  # intensity descriptors: NaN
        described.append({"case_id": case["case_id"], "label": case["label"],
                          **{f"gt_{k}": v for k, v in describe(truth, image, pixel).items()},
                          **{f"pred_{k}": v for k, v in describe(pred, image, pixel).items()}})
        rows.append({"case_id": case["case_id"], "label": case["label"],
                     "image": case["image"], "mask": case["mask"],
                     "pred_mask": f"masks/{case['case_id']}.png", "pixel_size_mm": pixel,
                     "width": width, "height": height, **scores})
    per_case = pd.DataFrame(rows)
    metrics = dataset_metrics(rows, n_bootstrap=settings.n_bootstrap, seed=settings.seed)
    per_dataset = by_dataset(frame, lambda m: dataset_metrics(
        [row for row, keep in zip(rows, m) if keep], n_bootstrap=settings.n_bootstrap,
        seed=settings.seed))
    if per_dataset:
        metrics["by_dataset"] = per_dataset
        per_case.insert(1, "dataset", frame["dataset"])
    metrics.update({"split": settings.split, "threshold": threshold,
                    "threshold_source": threshold_source, "threshold_rule": THRESHOLD_RULE,
                    "postprocess": chosen.method, "postprocess_source": chosen.source,
                    "run_dir": str(settings.run_dir),
                    "backbone": config.backbone, "fold": config.fold,
                    "scored_at": "original image size"})
    descriptors = pd.DataFrame(described)
    metrics["descriptors"] = descriptor_agreement(descriptors)
    with atomic_path(out_dir / "per_case.csv") as tmp:
        per_case.to_csv(tmp, index=False)
    with atomic_path(out_dir / "descriptors.csv") as tmp:
        descriptors.to_csv(tmp, index=False)
    write_json(out_dir / "metrics.json", metrics)
    return EvalResult(run_dir=Path(settings.run_dir), out_dir=out_dir, task="seg",
                      split=settings.split, metrics=metrics, frame=per_case, config=config.raw,
                      command=command_line(settings), threshold_source=threshold_source,
                      seconds=round(time.perf_counter() - start, 2), data=data,
                      other=other or settings.ensemble)
