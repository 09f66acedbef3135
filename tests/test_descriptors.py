"""Lesion descriptors on drawn shapes with known answers; seg evaluate's descriptors.csv and
metrics block; predict --seg-run's descriptor columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image
from skimage.draw import disk, ellipse, polygon

from breastus_cli.engine.stats.descriptors import (
    ALL_COLUMNS,
    DESCRIPTORS,
    describe,
    describe_both_units,
    describe_many,
)

SIZE = 200


def _disc(radius: int = 60) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[disk((SIZE // 2, SIZE // 2), radius)] = True
    return mask


def _ellipse(rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[ellipse(SIZE // 2, SIZE // 2, rows, cols)] = True
    return mask


def _star(points: int = 5, outer: float = 80, inner: float = 35) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False) - np.pi / 2
    radius = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    mask = np.zeros((SIZE, SIZE), bool)
    rr, cc = polygon(SIZE / 2 + radius * np.sin(angles), SIZE / 2 + radius * np.cos(angles),
                     mask.shape)
    mask[rr, cc] = True
    return mask


def test_descriptor_names_are_the_agreed_api():
    assert DESCRIPTORS == ("taller_than_wide", "circularity", "solidity", "eccentricity",
                           "ellipse_residual", "irregularity", "lobulation", "extent",
                           "echo_contrast", "heterogeneity", "posterior")


def test_disc_is_round_solid_smooth_and_parallel():
    d = describe(_disc())
    assert d["circularity"] > 0.85 and d["solidity"] > 0.98 and d["eccentricity"] < 0.2
    assert 1.0 <= d["irregularity"] < 1.1
    assert d["lobulation"] == 0 and d["not_parallel"] == 0.0 and d["components"] == 1
    assert d["ellipse_residual"] < 0.05
    assert set(DESCRIPTORS) <= set(d)


def test_tall_ellipse_is_not_parallel_and_wide_one_is():
    tall, wide = describe(_ellipse(70, 30)), describe(_ellipse(30, 70))
    assert tall["taller_than_wide"] > 1 and tall["not_parallel"] == 1.0
    assert wide["taller_than_wide"] < 1 and wide["not_parallel"] == 0.0
    assert tall["eccentricity"] > 0.8 and tall["ellipse_residual"] < 0.05
    assert tall["lobulation"] == 0


def test_star_is_irregular_and_lobulated():
    disc, star = describe(_disc()), describe(_star())
    assert star["solidity"] < disc["solidity"] - 0.2
    assert star["circularity"] < disc["circularity"] - 0.3
    assert star["irregularity"] > disc["irregularity"] + 0.1
    assert star["lobulation"] >= 4
    assert star["ellipse_residual"] > 0.2


def test_lobulation_counts_deep_notches_only():
    centre = SIZE // 2
    shallow, deep = _disc(), _disc()  # radius 60: a defect counts from 6 px deep
    shallow[centre - 10:centre + 10, centre + 57:] = False  # 3 px deep
    deep[centre - 5:centre + 5, centre + 35:] = False  # 25 px deep
    deep[centre + 35:, centre - 5:centre + 5] = False
    assert describe(shallow)["lobulation"] == 0
    assert describe(deep)["lobulation"] == 2


def test_calibrated_pixel_size_gives_mm_and_no_px_keys():
    mask = np.zeros((150, 150), bool)
    mask[40:90, 20:120] = True  # 100 px wide, 50 px high
    d = describe(mask, pixel_size_mm=0.1)
    assert d["area_mm2"] == pytest.approx(50, rel=0.01)
    assert d["width_mm"] == pytest.approx(10) and d["height_mm"] == pytest.approx(5)
    assert not any(k.endswith("_px") for k in d)
    assert d["log_area"] == pytest.approx(math.log(50), rel=1e-3)
    assert d["taller_than_wide"] == pytest.approx(0.5) and d["extent"] == pytest.approx(1)


@pytest.mark.parametrize("pixel", [None, 0.0, -1.0, float("nan")])
def test_without_pixel_size_only_px_keys(pixel):
    mask = np.zeros((150, 150), bool)
    mask[40:90, 20:120] = True
    d = describe(mask, pixel_size_mm=pixel)
    assert (d["width_px"], d["height_px"], d["area_px"]) == (100, 50, 5000)
    assert not any(k.endswith(("_mm", "_mm2")) for k in d)
    assert d["log_area"] == pytest.approx(math.log(5000))


def test_two_blobs_count_and_largest_described():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[disk((60, 60), 40)] = True
    mask[disk((160, 160), 15)] = True
    alone = np.zeros((SIZE, SIZE), bool)
    alone[disk((60, 60), 40)] = True
    image = np.full((SIZE, SIZE), 90, np.uint8)
    d, expected = describe(mask, image), describe(alone, image)
    assert d["components"] == 2 and expected["components"] == 1
    assert {k: v for k, v in d.items() if k != "components"} == \
        {k: v for k, v in expected.items() if k != "components"}


def test_empty_mask_is_nan_with_zero_components():
    d = describe(np.zeros((50, 50), bool), np.zeros((50, 50), np.uint8), 0.1)
    assert d["components"] == 0
    assert all(math.isnan(v) for k, v in d.items() if k != "components")
    assert set(DESCRIPTORS) <= set(d) and "area_mm2" in d and "area_px" not in d


def _lesion_image(lesion: int, background: int = 180) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(25, 45)
    image = np.full(mask.shape, background, np.uint8)
    image[mask] = lesion
    return mask, image


def test_dark_lesion_in_bright_image_has_positive_echo_contrast():
    mask, image = _lesion_image(60)
    d = describe(mask, image)
    assert d["echo_contrast"] == pytest.approx(120)
    assert d["heterogeneity"] == pytest.approx(0)
    noisy = image.astype(int) + np.random.default_rng(0).integers(-20, 21, image.shape)
    assert describe(mask, noisy)["heterogeneity"] > 5


def test_posterior_shadowing_and_enhancement():
    mask, image = _lesion_image(100)
    below = slice(SIZE // 2 + 26, SIZE // 2 + 45)  # rows just under the lesion's box
    shadow, bright = image.copy(), image.copy()
    shadow[below, :] = 20
    bright[below, :] = 250
    assert describe(mask, shadow)["posterior"] < 0
    assert describe(mask, bright)["posterior"] > 0
    low = np.zeros_like(mask)
    low[-20:, 50:150] = True  # touches the bottom: no band below
    assert math.isnan(describe(low, image)["posterior"])


def test_without_image_intensity_is_nan():
    d = describe(_disc())
    assert all(math.isnan(d[k]) for k in ("echo_contrast", "heterogeneity", "posterior"))
    assert not math.isnan(d["circularity"])


def test_image_of_another_size_is_an_input_error():
    from breastus_cli.errors import InputError

    with pytest.raises(InputError, match="differ in size"):
        describe(_disc(), np.zeros((10, 10), np.uint8))


def test_both_units_and_many():
    d = describe_both_units(_disc(), None, None)
    assert set(d) == set(ALL_COLUMNS) and math.isnan(d["area_mm2"]) and d["area_px"] > 0
    d = describe_both_units(_disc(), None, 0.2)
    assert d["area_mm2"] == pytest.approx(d["area_px"] * 0.04)
    frame = describe_many([_disc(), _star()], None, None)
    assert len(frame) == 2 and list(frame.columns[:len(DESCRIPTORS)]) == list(DESCRIPTORS)


# ---- seg evaluate --------------------------------------------------------------------------

def test_seg_evaluate_writes_descriptors_for_truth_and_prediction(seg_evaluated):
    out = seg_evaluated / "eval-test"  # the shared U-Net's evaluation (conftest)
    table = pd.read_csv(out / "descriptors.csv")
    per_case = pd.read_csv(out / "per_case.csv")
    assert list(table["case_id"]) == list(per_case["case_id"])
    assert list(table.columns[:2]) == ["case_id", "label"]
    for name in (*DESCRIPTORS, "log_area", "components", "not_parallel"):
        assert f"gt_{name}" in table.columns and f"pred_{name}" in table.columns
    assert table["gt_circularity"].notna().all() and (table["gt_components"] >= 1).all()
    block = json.loads((out / "metrics.json").read_text())["descriptors"]
    assert set(block) == {*DESCRIPTORS, "log_area"}
    for name in ("solidity", "circularity", "log_area", "echo_contrast"):
        entry = block[name]
        assert entry["n"] > 2
        assert math.isfinite(entry["mae"]) and math.isfinite(entry["spearman"])
    assert "Descriptor agreement" in (out / "report.md").read_text()


# ---- predict --seg-run ---------------------------------------------------------------------

def test_predict_writes_descriptor_columns(learn_data, seg_run, tmp_path):
    manifest = pd.read_csv(learn_data / "manifest.csv")
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, name in enumerate(manifest["image"][:3]):
        Image.open(learn_data / name).save(scans / f"scan{i}.png")
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(scans / "blank.png")  # nothing found
    out = tmp_path / "out"
    proc = run_cli("predict", str(scans), "--seg-run", str(seg_run), "--out", str(out),
                   "--pixel-size", "0.1")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    for name in ALL_COLUMNS:
        assert name in pred.columns
    found = pred[pred["lesion_area_px"].astype(int) > 0]
    empty = pred[pred["lesion_area_px"].astype(int) == 0]
    assert len(found) >= 1
    assert np.isfinite(found["circularity"].astype(float)).all()
    assert (found["area_px"].astype(float) <= found["lesion_area_px"].astype(float)).all()
    assert found["area_mm2"].astype(float).to_numpy() == pytest.approx(
        found["area_px"].astype(float).to_numpy() * 0.01)
    for name in (*DESCRIPTORS, "area_px", "area_mm2", "log_area"):
        assert (empty[name] == "").all(), name  # a blank image: no lesion is expected
    assert (empty["components"].astype(float) == 0).all()


def test_predict_descriptor_cells_empty_where_no_lesion_or_no_pixel_size():
    from breastus_cli.engine.stats.descriptors import describe_both_units
    from breastus_cli.engine.apply.predict_output import COLUMNS
    from breastus_cli.engine.apply.predict_rows import descriptor_cells

    image = np.full((60, 80), 120, np.uint8)
    none = descriptor_cells(describe_both_units(np.zeros((60, 80), bool), image, 0.1))
    assert set(none) == set(ALL_COLUMNS) and set(ALL_COLUMNS) <= set(COLUMNS)
    assert none["components"] == 0 and all(v == "" for k, v in none.items() if k != "components")
    mask = np.zeros((60, 80), bool)
    mask[10:30, 20:60] = True
    cells = descriptor_cells(describe_both_units(mask, image, None))
    assert (cells["width_px"], cells["height_px"], cells["area_px"]) == (40, 20, 800)
    assert cells["width_mm"] == cells["height_mm"] == cells["area_mm2"] == ""
    assert cells["heterogeneity"] == 0 and cells["components"] == 1
