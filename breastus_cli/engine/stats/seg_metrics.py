"""Segmentation metrics per case and over a data set (numpy + scipy.ndimage only).

Per-case conventions (T = truth mask, P = predicted mask, both boolean H x W):

- ``iou = |T & P| / |T | P|``, ``dice = 2|T & P| / (|T| + |P|)``,
  ``precision = |T & P| / |P|``, ``recall = |T & P| / |T|``.
- Both masks empty (a correct "no lesion"): iou = dice = precision = recall = 1.0, hd95 = 0.0.
- Exactly one mask empty: iou = dice = 0.0; hd95 is undefined and reported as None. A ratio
  whose denominator is empty (precision with an empty prediction, recall with an empty truth)
  is 0/0 and is reported as 0.0, so a missed or hallucinated lesion is scored as a failure
  rather than dropped from the average.
- HD95 is the 95th percentile of the *symmetric* surface distances: the distances from every
  boundary pixel of T to the nearest boundary pixel of P, pooled with those from P to T
  (the medpy definition). A boundary pixel is a mask pixel with a 4-neighbour outside the mask
  (mask XOR its binary erosion; the image border counts as outside). Distances are exact
  Euclidean (``scipy.ndimage.distance_transform_edt``), in pixels for ``hd95_px`` and with
  ``sampling`` = pixel size (so anisotropic pixels work) for ``hd95_mm``.
- Areas: pixel counts, and ``pixels * pixel_area_mm2`` when the pixel size is known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from breastus_cli.engine.stats.bootstrap import mean_ci



def _as_mask(name: str, mask: Any) -> np.ndarray:
    """A boolean 2-D array; integer masks count nonzero as lesion (0/1 and 0/255 both work)."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} mask must be 2-D (H x W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind == "f":
        # A probability map passed by mistake would silently become "everything > 0 is lesion".
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(f"{name} mask has values other than 0 and 1: threshold it first")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} mask must be boolean or numeric, got dtype {arr.dtype}")
    return arr != 0


def _sampling(pixel_size_mm: float | Sequence[float] | None) -> tuple[float, float] | None:
    """(row, column) pixel size in mm, or None when unknown."""
    if pixel_size_mm is None:
        return None
    if np.ndim(pixel_size_mm) == 0:
        sizes = (float(pixel_size_mm), float(pixel_size_mm))  # type: ignore[arg-type]
    else:
        sizes = tuple(float(s) for s in pixel_size_mm)  # type: ignore[union-attr]
        if len(sizes) != 2:
            raise ValueError(
                f"pixel_size_mm must be one number or (row, column), got {pixel_size_mm!r}"
            )
    if not all(math.isfinite(s) and s > 0 for s in sizes):
        raise ValueError(f"pixel_size_mm must be positive and finite, got {pixel_size_mm!r}")
    return sizes  # type: ignore[return-value]


def _boundary(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    # border_value=0: a lesion touching the image edge has its boundary on the edge.
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _hd95(truth: np.ndarray, pred: np.ndarray, sampling: tuple[float, float] | None) -> float:
    """95th percentile of the symmetric boundary distances of two non-empty masks."""
    from scipy import ndimage

    bt, bp = _boundary(truth), _boundary(pred)
    # distance_transform_edt measures each nonzero pixel's distance to the nearest zero, so the
    # inverted boundary gives, everywhere, the distance to the nearest boundary pixel.
    to_pred = ndimage.distance_transform_edt(~bp, sampling=sampling)
    to_truth = ndimage.distance_transform_edt(~bt, sampling=sampling)
    distances = np.concatenate([to_pred[bt], to_truth[bp]])
    return float(np.percentile(distances, 95))


def case_metrics(
    truth: np.ndarray, pred: np.ndarray, pixel_size_mm: float | Sequence[float] | None = None
) -> dict[str, Any]:
    """Overlap, boundary distance and area of one predicted mask against its truth mask.

    ``pixel_size_mm`` is one number (square pixels), a (row, column) pair, or None (unknown:
    the mm values are None). See the module docstring for the conventions on empty masks.

    Returns ``{"iou", "dice", "precision", "recall", "hd95_mm", "hd95_px", "true_area_px",
    "pred_area_px", "true_area_mm2", "pred_area_mm2", "intersection_px", "union_px"}`` with
    plain Python numbers (None where undefined); the pixel totals let
    :func:`dataset_metrics` compute the pooled data-set IoU.
    """
    t = _as_mask("truth", truth)
    p = _as_mask("pred", pred)
    if t.shape != p.shape:
        raise ValueError(f"truth and pred masks differ in shape: {t.shape} vs {p.shape}")
    sampling = _sampling(pixel_size_mm)

    inter = int(np.count_nonzero(t & p))
    union = int(np.count_nonzero(t | p))
    n_t = int(np.count_nonzero(t))
    n_p = int(np.count_nonzero(p))

    if n_t == 0 and n_p == 0:
        iou = dice = precision = recall = 1.0
        hd95_px: float | None = 0.0
        hd95_mm: float | None = 0.0 if sampling else None
    else:
        iou = inter / union
        dice = 2.0 * inter / (n_t + n_p)
        precision = inter / n_p if n_p else 0.0
        recall = inter / n_t if n_t else 0.0
        if n_t and n_p:
            hd95_px = _hd95(t, p, None)
            if sampling is None:
                hd95_mm = None
            elif sampling[0] == sampling[1]:
                hd95_mm = hd95_px * sampling[0]  # isotropic: a percentile scales linearly
            else:
                hd95_mm = _hd95(t, p, sampling)
        else:
            hd95_px = hd95_mm = None

    pixel_area = sampling[0] * sampling[1] if sampling else None
    return {
        "iou": float(iou),
        "dice": float(dice),
        "precision": float(precision),
        "recall": float(recall),
        "hd95_mm": hd95_mm,
        "hd95_px": hd95_px,
        "true_area_px": n_t,
        "pred_area_px": n_p,
        "true_area_mm2": n_t * pixel_area if pixel_area is not None else None,
        "pred_area_mm2": n_p * pixel_area if pixel_area is not None else None,
        "intersection_px": inter,
        "union_px": union,
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _defined(per_case: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for case in per_case:
        v = case.get(key)
        if v is not None and math.isfinite(float(v)):
            out.append(float(v))
    return out


def dataset_metrics(
    per_case: list[dict[str, Any]],
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    truth_pred_pixels: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Summarise :func:`case_metrics` results over a data set.

    Returns ``{"n", "iou", "dice", "precision", "recall"`` (means over cases), ``"hd95_mm"``,
    ``"hd95_px"`` (means over cases where defined, else None), ``"hd95_defined"`` (how many),
    ``"median_iou", "median_dice", "ci": {"iou": [lo, hi], "dice": [lo, hi]}`` (percentile
    bootstrap of the mean over cases), ``"dataset_iou"`` (sum of intersections / sum of unions:
    large lesions weigh more, so it differs from the mean IoU), ``"dataset_dice"``,
    ``"empty_predictions"`` (cases with ``pred_area_px == 0``), ``"ci_method"}``.

    The pooled IoU comes from the ``intersection_px`` / ``union_px`` each case carries; a
    caller that accumulated the totals itself may pass ``truth_pred_pixels=(intersection_total,
    union_total)`` instead (it takes precedence). ``dataset_dice`` needs per-case areas.
    """
    if not per_case:
        raise ValueError("no cases to summarise")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    for key in ("iou", "dice"):
        missing = sum(1 for c in per_case if c.get(key) is None)
        if missing:
            raise ValueError(f"{missing} case(s) lack {key!r}; pass case_metrics() results")

    iou = np.array([float(c["iou"]) for c in per_case])
    dice = np.array([float(c["dice"]) for c in per_case])

    # Pooled (data-set level) overlap from pixel totals.
    if truth_pred_pixels is not None:
        if len(truth_pred_pixels) < 2:
            raise ValueError("truth_pred_pixels must be (intersection_total, union_total, ...)")
        inter_total, union_total = int(truth_pred_pixels[0]), int(truth_pred_pixels[1])
    elif all("intersection_px" in c and "union_px" in c for c in per_case):
        inter_total = sum(int(c["intersection_px"]) for c in per_case)
        union_total = sum(int(c["union_px"]) for c in per_case)
    else:
        inter_total = union_total = None  # type: ignore[assignment]
    if inter_total is None:
        dataset_iou = None
    else:
        # No lesion pixel anywhere, predicted or true: every case is a correct "empty".
        dataset_iou = inter_total / union_total if union_total else 1.0
    dataset_dice = None
    if all(k in c for c in per_case for k in ("intersection_px", "true_area_px", "pred_area_px")):
        area_total = sum(int(c["true_area_px"]) + int(c["pred_area_px"]) for c in per_case)
        inter_sum = sum(int(c["intersection_px"]) for c in per_case)
        dataset_dice = 2.0 * inter_sum / area_total if area_total else 1.0

    ci_iou, ci_dice = mean_ci(
        np.stack([iou, dice], axis=1), n_bootstrap, seed, confidence
    )
    hd95_mm = _defined(per_case, "hd95_mm")
    hd95_px = _defined(per_case, "hd95_px")
    return {
        "n": len(per_case),
        "iou": float(iou.mean()),
        "dice": float(dice.mean()),
        "precision": _mean_or_none(_defined(per_case, "precision")),
        "recall": _mean_or_none(_defined(per_case, "recall")),
        "hd95_mm": _mean_or_none(hd95_mm),
        "hd95_px": _mean_or_none(hd95_px),
        "hd95_defined": len(hd95_px),
        "median_iou": float(np.median(iou)),
        "median_dice": float(np.median(dice)),
        "ci": {
            "iou": ci_iou,
            "dice": ci_dice,
        },
        "dataset_iou": None if dataset_iou is None else float(dataset_iou),
        "dataset_dice": dataset_dice,
        "empty_predictions": sum(1 for c in per_case if int(c.get("pred_area_px", 1)) == 0),
        "ci_method": (
            f"percentile bootstrap of the mean, {n_bootstrap} case resamples, {confidence * 100:g}%"
            if n_bootstrap else "none (n_bootstrap=0)"
        ),
    }
