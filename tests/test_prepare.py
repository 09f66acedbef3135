"""`prepare` on the BrEaST layout: what it keeps, what it skips and why, what it refuses."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastus_cli.data.prepare import PrepareSettings, prepare
from breastus_cli.errors import InputError, UsageError
from conftest import SHEET, breast_row, require_shared_breast, rgba_image, run_cli, write_breast


def _prep(src, out, **kw):
    return prepare(PrepareSettings(source=src, out=out, **kw))


def test_keeps_cases_with_tumor_masks_and_writes_the_layout(tmp_path):
    rows = [breast_row(1), breast_row(2, "malignant"), breast_row(3, "normal"),
            breast_row(4, Mask_tumor_filename="case004_tumor.png&case004_tumor2.png"),
            breast_row(5, "malignant", Mask_other_filename="case005_other1.png&case005_other2.png")]
    src = write_breast(tmp_path / "src", rows)
    result = _prep(src, tmp_path / "data")
    assert result.format == "breast"
    assert (result.rows_read, result.kept) == (5, 4)
    assert result.counts == {"benign": 2, "malignant": 2}
    assert [(s.case_id, s.reason, s.value) for s in result.skipped] == [
        ("case003", "no tumor mask", "normal")]

    data = tmp_path / "data"
    manifest = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    assert list(manifest.columns[:10]) == ["case_id", "patient_id", "image", "mask", "label",
                                           "pixel_size_mm", "source", "width", "height",
                                           "lesion_area_px"]
    assert "birads" in manifest.columns and "age" in manifest.columns
    assert manifest["case_id"].tolist() == ["case001", "case002", "case004", "case005"]
    row = manifest.iloc[0]
    assert row["image"] == "seg/images/case001.png" and row["mask"] == "seg/masks/case001.png"
    assert row["pixel_size_mm"] == pytest.approx(0.1)  # 0.01 cm -> 0.1 mm
    assert (row["width"], row["height"]) == (40, 30)
    for _, r in manifest.iterrows():
        assert (data / r["image"]).is_file() and (data / r["mask"]).is_file()
        assert (data / "cls" / r["label"] / f"{r['case_id']}.png").is_file()
        assert not os.path.isabs(r["image"])
    # stored images are single-channel luminance at the original size
    stored = Image.open(data / "seg/images/case001.png")
    assert stored.mode == "L" and stored.size == (40, 30)
    mask = np.asarray(Image.open(data / "seg/masks/case001.png"))
    assert set(np.unique(mask)) == {0, 255} and int((mask > 0).sum()) == 15 * 10
    report = json.loads((data / "prepare.json").read_text())
    assert report["counts"] == {"read": 5, "kept": 4, "skipped": 1}
    assert report["skipped"] == [{"case_id": "case003", "value": "normal", "reason": "no tumor mask"}]
    assert len(report["manifest_sha256"]) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_tumor_masks_are_united_and_other_masks_only_on_request(tmp_path):
    src = tmp_path / "src"
    write_breast(src, [breast_row(1, Mask_other_filename="case001_other1.png")])
    folder = src / "BrEaST-Lesions_USG-images_and_masks"
    other = np.zeros((30, 40, 4), dtype=np.uint8)
    other[20:25, 30:35] = 255
    Image.fromarray(other, "RGBA").save(folder / "case001_other1.png")
    plain = _prep(src, tmp_path / "a")
    with_other = _prep(src, tmp_path / "b", include_other_masks=True)
    area = lambda d: int((np.asarray(Image.open(d / "seg/masks/case001.png")) > 0).sum())  # noqa: E731
    assert plain.kept == with_other.kept == 1
    assert area(tmp_path / "a") == 150 and area(tmp_path / "b") == 175
    # without the flag the 'other' mask is kept apart, so training can still add it
    manifest = pd.read_csv(tmp_path / "a/manifest.csv", keep_default_na=False)
    assert manifest.loc[0, "other_mask"] == "seg/other/case001.png"
    other = np.asarray(Image.open(tmp_path / "a/seg/other/case001.png")) > 0
    assert int(other.sum()) == 25
    assert pd.read_csv(tmp_path / "b/manifest.csv", keep_default_na=False).loc[0, "other_mask"] == ""


@pytest.mark.parametrize(
    ("row", "reason", "value"),
    [
        (breast_row(2, Image_filename="case099.png"), "image file not found", "case099.png"),
        (breast_row(2, Mask_tumor_filename="case099_tumor.png"), "tumor mask not found",
         "case099_tumor.png"),
        (breast_row(2, Image_filename="../outside.png"),
         "file name points outside the dataset folder", "../outside.png"),
        (breast_row(2, Image_filename="/etc/hostname"),
         "file name points outside the dataset folder", "/etc/hostname"),
        (breast_row(2, Classification="borderline"), "unknown class", "borderline"),
    ],
)
def test_row_level_problems_are_skipped_and_listed(tmp_path, row, reason, value):
    src = write_breast(tmp_path / "src", [breast_row(1), row], files=False)
    folder = src / "BrEaST-Lesions_USG-images_and_masks"
    for name in ("case001.png", "case002.png"):
        rgba_image(40, 30, 0).save(folder / name)
    for name in ("case001_tumor.png", "case002_tumor.png"):
        Image.new("L", (40, 30), 255).save(folder / name)
    (tmp_path / "outside.png").write_bytes((folder / "case001.png").read_bytes())
    result = _prep(src, tmp_path / "data")
    assert result.kept == 1
    assert [(s.case_id, s.reason, s.value) for s in result.skipped] == [("case002", reason, value)]
    listed = json.loads((tmp_path / "data/prepare.json").read_text())["skipped"]
    assert listed == [{"case_id": "case002", "value": value, "reason": reason}]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("corrupt", "corrupt image"),
        ("text", "not an image"),
        ("empty", "empty file"),
        ("mask_size", "mask size differs from image"),
        ("empty_mask", "tumor mask is empty"),
    ],
)
def test_unreadable_files_are_skipped(tmp_path, damage, reason):
    src = write_breast(tmp_path / "src", [breast_row(1), breast_row(2)])
    folder = src / "BrEaST-Lesions_USG-images_and_masks"
    image, mask = folder / "case002.png", folder / "case002_tumor.png"
    if damage == "corrupt":
        image.write_bytes(image.read_bytes()[:60])
    elif damage == "text":
        image.write_text("this is not a picture")
    elif damage == "empty":
        image.write_bytes(b"")
    elif damage == "mask_size":
        Image.new("L", (41, 30), 255).save(mask)
    elif damage == "empty_mask":
        Image.new("L", (40, 30), 0).save(mask)
    result = _prep(src, tmp_path / "data")
    assert result.kept == 1
    assert len(result.skipped) == 1
    assert result.skipped[0].case_id == "case002" and reason in result.skipped[0].reason


def test_strict_fails_on_a_problem_row_but_not_on_normal_cases(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1), breast_row(2, "normal")])
    assert _prep(src, tmp_path / "ok", strict=True).kept == 1  # policy skips are not problems
    (src / "BrEaST-Lesions_USG-images_and_masks/case001_tumor.png").unlink()
    write_breast(src, [breast_row(1), breast_row(3)], files=False)
    rgba_image(40, 30, 1).save(src / "BrEaST-Lesions_USG-images_and_masks/case003.png")
    Image.new("L", (40, 30), 255).save(src / "BrEaST-Lesions_USG-images_and_masks/case003_tumor.png")
    with pytest.raises(InputError, match=r"--strict: 1 row\(s\).*case001: tumor mask not found"):
        _prep(src, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "cli"), "--strict")
    assert proc.returncode == 2
    assert "tumor mask not found" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_workbook_sheet_and_columns_exit_2_naming_them(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1)])
    book = src / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"

    frame = pd.read_excel(book, sheet_name=SHEET)
    with pd.ExcelWriter(book) as writer:
        frame.drop(columns=["Classification"]).to_excel(writer, sheet_name=SHEET, index=False)
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "d1"), "--format", "breast")
    assert proc.returncode == 2
    assert "Classification" in proc.stderr and "Traceback" not in proc.stderr

    with pd.ExcelWriter(book) as writer:
        frame.drop(columns=["Image_filename"]).to_excel(writer, sheet_name="Other", index=False)
    with pytest.raises(InputError, match=r"no sheet 'BrEaST-Lesions-USG clinical dat'"):
        _prep(src, tmp_path / "d2", format="breast")

    book.unlink()
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "d3"), "--format", "breast")
    assert proc.returncode == 2 and "no clinical workbook" in proc.stderr

    proc = run_cli("prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d4"))
    assert proc.returncode == 2 and "source not found" in proc.stderr


def test_sheet_falls_back_to_the_first_sheet_with_the_columns(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1), breast_row(2, "malignant")])
    book = src / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
    frame = pd.read_excel(book, sheet_name=SHEET)
    with pd.ExcelWriter(book) as writer:
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="Notes", index=False)
        frame.to_excel(writer, sheet_name="Sheet1", index=False)
    assert _prep(src, tmp_path / "data").counts == {"benign": 1, "malignant": 1}


def test_existing_output_is_refused_unless_overwrite_and_kept_on_failure(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1), breast_row(2, "malignant")])
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.txt").write_text("finished work")
    proc = run_cli("prepare", str(src), "--out", str(data))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (data / "precious.txt").read_text() == "finished work"
    # --overwrite replaces only a dataset prepare wrote (issue 11)
    with pytest.raises(InputError, match="not written by breastus"):
        _prep(src, data, overwrite=True)
    assert (data / "precious.txt").read_text() == "finished work"
    (data / "precious.txt").unlink()
    assert _prep(src, data).kept == 2
    (data / "precious.txt").write_text("finished work")
    # a failing overwrite (no usable case) leaves the old folder as it was
    write_breast(src, [breast_row(1, Image_filename="gone.png")], files=False)
    with pytest.raises(InputError, match="no usable case"):
        _prep(src, data, overwrite=True)
    assert (data / "precious.txt").read_text() == "finished work"
    write_breast(src, [breast_row(1), breast_row(2, "malignant")])
    assert _prep(src, data, overwrite=True).kept == 2
    assert not (data / "precious.txt").exists()


def test_out_inside_source_is_refused(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1)])
    with pytest.raises(UsageError, match="--out"):
        _prep(src, src / "data")


def test_workbook_path_is_accepted_as_source(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1)])
    result = _prep(src / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx", tmp_path / "d")
    assert result.kept == 1


def test_synthetic_source_prepares_with_its_quirks(synth_source, tmp_path):
    result = _prep(synth_source, tmp_path / "data", include_other_masks=False)
    workbook = pd.read_excel(next(synth_source.glob("*.xlsx")), sheet_name=SHEET)
    normal = int((workbook["Classification"] == "normal").sum())
    assert result.kept == len(workbook) - normal
    assert [s.reason for s in result.skipped] == ["no tumor mask"] * normal
    assert result.counts["benign"] > 0 and result.counts["malignant"] > 0
    manifest = pd.read_csv(tmp_path / "data/manifest.csv")
    assert manifest["pixel_size_mm"].between(0.0434, 0.1389).all()


@pytest.mark.realdata
def test_real_breast_keeps_252_cases(real_breast):
    source = require_shared_breast()
    result = json.loads((real_breast / "prepare.json").read_text())  # prepare's own record
    assert result["counts"]["kept"] == 252
    assert result["labels"] == {"benign": 154, "malignant": 98}
    assert sorted((s["case_id"], s["reason"]) for s in result["skipped"]) == [
        ("case045", "no tumor mask"), ("case061", "no tumor mask"),
        ("case209", "no tumor mask"), ("case213", "no tumor mask")]
    assert result["image_size"] == {"min_width": 363, "max_width": 1024,
                                    "min_height": 289, "max_height": 618}
    manifest = pd.read_csv(real_breast / "manifest.csv")
    assert manifest["pixel_size_mm"].between(0.0434, 0.139).all()
    # the 7 images with RGB hidden under alpha 0 are black there after compositing
    img = np.asarray(Image.open(source / "BrEaST-Lesions_USG-images_and_masks/case001.png"))
    assert img.shape[2] == 4
