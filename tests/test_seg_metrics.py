"""Segmentation metrics on hand-made masks with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breastus_cli.engine.stats.seg_metrics import case_metrics, dataset_metrics


def square(top: int, left: int, side: int = 10, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_offset_squares() -> None:
    truth, pred = square(10, 10), square(10, 15)  # overlap 10 x 5 = 50 px, union 150 px
    m = case_metrics(truth, pred)
    assert m["iou"] == pytest.approx(50 / 150)
    assert m["dice"] == pytest.approx(2 * 50 / 200)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["intersection_px"] == 50 and m["union_px"] == 150
    assert m["true_area_px"] == 100 and m["pred_area_px"] == 100
    assert m["hd95_mm"] is None and m["true_area_mm2"] is None and m["pred_area_mm2"] is None


def test_identical_and_disjoint() -> None:
    a = square(5, 5)
    same = case_metrics(a, a.copy(), pixel_size_mm=0.1)
    assert same["iou"] == same["dice"] == same["precision"] == same["recall"] == 1.0
    assert same["hd95_px"] == 0.0 and same["hd95_mm"] == 0.0
    apart = case_metrics(a, square(25, 25))
    assert apart["iou"] == apart["dice"] == apart["precision"] == apart["recall"] == 0.0
    assert apart["hd95_px"] > 0


def test_empty_mask_conventions() -> None:
    empty = np.zeros((20, 20), dtype=bool)
    both = case_metrics(empty, empty, pixel_size_mm=0.2)
    assert both["iou"] == both["dice"] == both["precision"] == both["recall"] == 1.0
    assert both["hd95_px"] == 0.0 and both["hd95_mm"] == 0.0
    assert both["true_area_mm2"] == 0.0

    lesion = square(2, 2, side=5, shape=(20, 20))
    missed = case_metrics(lesion, empty, pixel_size_mm=0.2)
    assert missed["iou"] == missed["dice"] == 0.0
    assert missed["precision"] == 0.0 and missed["recall"] == 0.0  # 0/0 precision -> 0.0
    assert missed["hd95_px"] is None and missed["hd95_mm"] is None

    invented = case_metrics(empty, lesion)
    assert invented["iou"] == invented["dice"] == 0.0
    assert invented["precision"] == 0.0 and invented["recall"] == 0.0  # 0/0 recall -> 0.0
    assert invented["hd95_px"] is None
    json.dumps([both, missed, invented], allow_nan=False)


def test_hd95_of_shifted_square() -> None:
    truth, pred = square(10, 10), square(10, 13)  # the same square shifted right by 3 px
    m = case_metrics(truth, pred, pixel_size_mm=0.5)
    assert m["hd95_px"] == pytest.approx(3.0)
    assert m["hd95_mm"] == pytest.approx(1.5)


def test_hd95_anisotropic_pixels() -> None:
    truth, pred = square(10, 10), square(10, 13)  # shifted along columns
    m = case_metrics(truth, pred, pixel_size_mm=(0.5, 0.2))  # (row, column) mm
    assert m["hd95_px"] == pytest.approx(3.0)
    assert m["hd95_mm"] == pytest.approx(3 * 0.2)
    assert m["true_area_mm2"] == pytest.approx(100 * 0.5 * 0.2)


def test_hd95_ignores_a_few_outlier_pixels_unlike_max() -> None:
    truth = square(5, 5, side=30, shape=(60, 60))
    pred = truth.copy()
    pred[55, 55] = True  # one stray pixel far away
    m = case_metrics(truth, pred)
    assert m["hd95_px"] == pytest.approx(0.0)  # 1 of ~117 boundary pixels is below 5%


def test_areas_with_pixel_size() -> None:
    m = case_metrics(square(0, 0, side=4, shape=(10, 10)), square(0, 0, side=6, shape=(10, 10)),
                     pixel_size_mm=0.25)
    assert m["true_area_px"] == 16 and m["pred_area_px"] == 36
    assert m["true_area_mm2"] == pytest.approx(16 * 0.0625)
    assert m["pred_area_mm2"] == pytest.approx(36 * 0.0625)


def test_mask_input_checks() -> None:
    a = square(1, 1, shape=(20, 20))
    uint8 = a.astype(np.uint8) * 255  # 0/255 masks as read from PNG work
    assert case_metrics(a, uint8)["iou"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        case_metrics(a, np.zeros((20, 21), dtype=bool))
    with pytest.raises(ValueError, match="threshold"):
        case_metrics(a, a * 0.7)
    with pytest.raises(ValueError, match="2-D"):
        case_metrics(a[None], a[None])
    with pytest.raises(ValueError, match="pixel_size"):
        case_metrics(a, a, pixel_size_mm=0.0)


def test_dataset_iou_differs_from_mean_iou() -> None:
    # a large lesion segmented well and a small one missed: pooled IoU is dominated by the
    # large one, the mean over cases weighs both equally.
    big_truth = square(0, 0, side=40, shape=(50, 50))
    big_pred = square(0, 0, side=38, shape=(50, 50))
    small_truth = square(10, 10, side=4, shape=(50, 50))
    small_pred = np.zeros((50, 50), dtype=bool)
    cases = [case_metrics(big_truth, big_pred), case_metrics(small_truth, small_pred)]
    summary = dataset_metrics(cases, n_bootstrap=200)
    assert summary["n"] == 2
    assert summary["iou"] == pytest.approx((38 * 38 / 1600 + 0.0) / 2)
    assert summary["dataset_iou"] == pytest.approx((38 * 38) / (1600 + 16))
    assert summary["dataset_iou"] > summary["iou"] + 0.3
    assert summary["dataset_dice"] == pytest.approx(2 * 38 * 38 / (1600 + 38 * 38 + 16))
    assert summary["empty_predictions"] == 1
    assert summary["hd95_defined"] == 1
    # the caller's own pixel totals take precedence
    assert dataset_metrics(cases, n_bootstrap=0, truth_pred_pixels=(10, 40))["dataset_iou"] == 0.25


def test_dataset_summary_and_bootstrap() -> None:
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(40):
        top, left = rng.integers(5, 20, size=2)
        shift = rng.integers(0, 6)
        cases.append(case_metrics(square(top, left), square(top, left + shift), pixel_size_mm=0.1))
    summary = dataset_metrics(cases, n_bootstrap=1000, seed=2)
    ious = [c["iou"] for c in cases]
    assert summary["iou"] == pytest.approx(np.mean(ious))
    assert summary["median_iou"] == pytest.approx(np.median(ious))
    assert summary["dice"] == pytest.approx(np.mean([c["dice"] for c in cases]))
    assert summary["hd95_mm"] == pytest.approx(np.mean([c["hd95_mm"] for c in cases]))
    for key in ("iou", "dice"):
        lo, hi = summary["ci"][key]
        assert lo <= summary[key] <= hi
        assert hi - lo < 0.2
    assert summary["ci_method"].startswith("percentile bootstrap")
    assert dataset_metrics(cases, n_bootstrap=1000, seed=2)["ci"] == summary["ci"]
    json.dumps(summary, allow_nan=False)


def test_dataset_metrics_without_pixel_size_and_errors() -> None:
    cases = [case_metrics(square(0, 0), square(0, 2))]
    summary = dataset_metrics(cases, n_bootstrap=50)
    assert summary["hd95_mm"] is None and summary["hd95_px"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no cases"):
        dataset_metrics([])
