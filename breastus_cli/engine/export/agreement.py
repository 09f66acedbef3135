"""How closely an export follows the Keras model it came from, on the same inputs: the
tolerances, the measurement and its verdict in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.engine.export.convert import quiet
from breastus_cli.errors import WorkError

#: Largest output difference (probabilities) accepted as "the same model", per export kind;
#: int8 is judged on decisions instead (below): its probabilities move by up to ~0.3.
TOLERANCE = {"savedmodel": 1e-5, "none": 1e-3, "float16": 1e-2, "int8": None,
             "int8-mixed": None}
#: int8 passes when it gives the Keras model's label (at the run's threshold) on at least this
#: share of the sample images (cls) or its mask value (0.5) on this share of the pixels (seg),
#: or when every probability lies within INT8_CLOSE of the Keras one (then only images on the
#: threshold flip). Measured: the test suite's smallcnn (2 epochs, 64 px) 31 of 32 labels, max
#: |dp| 0.004; a MobileNetV2 at 224 px 95% of the labels, max |dp| 0.34 (BENCHMARKS.md).
INT8_MIN_LABEL_AGREEMENT = 0.95
INT8_MIN_PIXEL_AGREEMENT = 0.95
INT8_CLOSE = 0.02


def savedmodel_forward(path: Path, images: np.ndarray) -> np.ndarray:
    tf = backend.tf()
    with quiet():
        loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    outputs = [next(iter(serve(image=tf.constant(images[i:i + 16])).values())).numpy()
               for i in range(0, len(images), 16)]
    return np.concatenate(outputs, axis=0)


def measure_agreement(reference: np.ndarray, outputs: np.ndarray, task: str, threshold: float,
                      format: str = "tflite", quantize: str = "none") -> dict[str, Any]:
    """How closely an export's outputs follow the Keras model's on the same inputs.

    Always: max and mean absolute difference. cls: fraction of images with the same label at
    ``threshold`` on column 1. seg: fraction of pixels with the same mask value at 0.5 and the
    mean over images of the IoU between the two masks (both empty counts as 1).
    """
    reference = np.asarray(reference, np.float64)
    outputs = np.asarray(outputs, np.float64)
    if reference.shape != outputs.shape:
        raise WorkError(f"the exported model outputs shape {outputs.shape[1:]}, the Keras "
                        f"model {reference.shape[1:]}")
    diff = np.abs(reference - outputs)
    tolerance = TOLERANCE["savedmodel" if format == "savedmodel" else quantize]
    int8 = format != "savedmodel" and quantize in ("int8", "int8-mixed")
    result: dict[str, Any] = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "tolerance": tolerance,
    }
    if task == "cls":
        same = (reference[:, 1] >= threshold) == (outputs[:, 1] >= threshold)
        result["label_agreement"] = float(same.mean()) if len(same) else 1.0
        result["threshold"] = float(threshold)
    else:
        a, b = reference >= 0.5, outputs >= 0.5
        result["pixel_agreement"] = float((a == b).mean()) if a.size else 1.0
        axes = tuple(range(1, a.ndim))
        inter = (a & b).sum(axis=axes)
        union = (a | b).sum(axis=axes)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        result["mean_iou"] = float(iou.mean()) if len(iou) else 1.0
        result["threshold"] = 0.5
    if int8 and task == "cls":
        result["min_label_agreement"] = INT8_MIN_LABEL_AGREEMENT
        within = (result["label_agreement"] >= INT8_MIN_LABEL_AGREEMENT
                  or result["max_abs_diff"] <= INT8_CLOSE)
    elif int8:
        result["min_pixel_agreement"] = INT8_MIN_PIXEL_AGREEMENT
        within = (result["pixel_agreement"] >= INT8_MIN_PIXEL_AGREEMENT
                  or result["max_abs_diff"] <= INT8_CLOSE)
    else:
        within = bool(result["max_abs_diff"] <= tolerance)
    if not np.isfinite(outputs).all():
        result["non_finite_outputs"] = int((~np.isfinite(outputs)).sum())
        within = False
    result["within_tolerance"] = bool(within)
    return result


def disagreement(agreement: dict[str, Any]) -> str:
    """What failed the check, in words."""
    if "min_label_agreement" in agreement:
        return (f"same label on {agreement['label_agreement']:.1%} of the images, at least "
                f"{agreement['min_label_agreement']:.0%} required; max |difference| "
                f"{agreement['max_abs_diff']:.3g}")
    if "min_pixel_agreement" in agreement:
        return (f"same mask pixels {agreement['pixel_agreement']:.1%}, at least "
                f"{agreement['min_pixel_agreement']:.0%} required; max |difference| "
                f"{agreement['max_abs_diff']:.3g}")
    if agreement.get("non_finite_outputs"):
        return f"{agreement['non_finite_outputs']} non-finite outputs"
    return (f"max |difference| {agreement['max_abs_diff']:.3g} > tolerance "
            f"{agreement['tolerance']:g}")
