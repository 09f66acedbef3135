"""Tests of the synthetic BrEaST generator (breastus_cli.data.synth).

The generator is what every other test, the demo and the benchmarks run on, so these tests pin
the layout (exactly the real BrEaST one), the quirks ``prepare`` must survive, determinism,
refusals, and that the two classes differ the way BI-RADS says and are learnable without
TensorFlow.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull

from breastus_cli.data import synth
from breastus_cli.data.imaging import read_luminance, read_mask
from breastus_cli.data.synth import (
    COLUMNS,
    DICTIONARY_SHEET,
    IMAGE_DIR_NAME,
    SHEET_NAME,
    WORKBOOK_NAME,
    SynthResult,
    SynthSettings,
    case_stem,
    make_synthetic_breast,
)
from breastus_cli.errors import InputError, UsageError

REAL_COLUMNS = [
    "CaseID", "Image_filename", "Mask_tumor_filename", "Mask_other_filename", "Pixel_size",
    "Age", "Tissue_composition", "Signs", "Symptoms", "Shape", "Margin", "Echogenicity",
    "Posterior_features", "Halo", "Calcifications", "Skin_thickening", "Interpretation",
    "BIRADS", "Verification", "Diagnosis", "Classification",
]


def _names(cell: object) -> list[str]:
    """File names of one workbook cell ('&'-joined; empty cells are NaN)."""
    if not isinstance(cell, str) or not cell.strip():
        return []
    return [part for part in cell.split("&") if part]


def _sheet(result: SynthResult) -> pd.DataFrame:
    return pd.read_excel(result.workbook, sheet_name=SHEET_NAME, dtype=object)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthResult, pd.DataFrame]:
    """The default-size dataset (60 cases) most tests inspect."""
    out = tmp_path_factory.mktemp("synth") / "breast"
    result = make_synthetic_breast(SynthSettings(out=out, cases=60, seed=11))
    return result, _sheet(result)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthResult, pd.DataFrame]:
    """120 cases for the geometry and learnability checks."""
    out = tmp_path_factory.mktemp("synth_big") / "breast"
    result = make_synthetic_breast(SynthSettings(out=out, cases=120, seed=0))
    return result, _sheet(result)


# ----------------------------------------------------------------------------- layout


def test_layout_is_the_real_one(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    result, _ = ds
    assert result.workbook == result.out / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
    assert result.image_dir == result.out / "BrEaST-Lesions_USG-images_and_masks"
    assert (result.workbook.name, result.image_dir.name) == (WORKBOOK_NAME, IMAGE_DIR_NAME)
    # the real layout, plus synth.json: breastus's marker (only such a folder --overwrite replaces)
    assert sorted(p.name for p in result.out.iterdir()) == sorted([WORKBOOK_NAME, IMAGE_DIR_NAME,
                                                                   "synth.json"])
    # Nothing left beside OUT by the build-then-rename (no staging folders).
    assert [p.name for p in result.out.parent.iterdir()] == [result.out.name]


def test_workbook_sheets_and_columns(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    result, _ = ds
    sheets = pd.read_excel(result.workbook, sheet_name=None)
    assert list(sheets) == ["BrEaST-Lesions-USG clinical dat", "Data Dictionary"]
    assert SHEET_NAME == "BrEaST-Lesions-USG clinical dat"
    assert DICTIONARY_SHEET == "Data Dictionary"
    clinical = sheets[SHEET_NAME]
    assert list(clinical.columns) == REAL_COLUMNS == list(COLUMNS)
    assert clinical.shape == (60, 21)
    dictionary = sheets["Data Dictionary"]
    assert dictionary.shape == (21, 2)
    assert list(dictionary.columns) == ["type", "description"]
    assert dictionary["type"].iloc[0] == "Case_ID"
    assert list(dictionary["type"].iloc[1:]) == REAL_COLUMNS[1:]


def test_counts_equal_settings(ds: tuple[SynthResult, pd.DataFrame], tmp_path: Path) -> None:
    result, df = ds
    # Defaults: normal = max(1, round(60 * 4/256)) = 1; malignant = round(59 * 0.39) = 23.
    assert result.counts == {"benign": 36, "malignant": 23, "normal": 1}
    assert df["Classification"].value_counts().to_dict() == result.counts

    small = make_synthetic_breast(
        SynthSettings(out=tmp_path / "s", cases=12, seed=3, normal=2, malignant_fraction=0.5,
                      min_side=64, max_side=96)
    )
    assert small.counts == {"benign": 5, "malignant": 5, "normal": 2}
    assert _sheet(small)["Classification"].value_counts().to_dict() == small.counts


def test_case_ids_names_and_class_order(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    _, df = ds
    assert list(df["CaseID"]) == list(range(1, 61))
    assert list(df["Image_filename"]) == [f"case{i:03d}.png" for i in range(1, 61)]
    lesion = df["Classification"] != "normal"
    assert list(df.loc[lesion, "Mask_tumor_filename"]) == [
        f"case{i:03d}_tumor.png" for i in df.loc[lesion, "CaseID"]
    ]
    assert df.loc[~lesion, "Mask_tumor_filename"].isna().all()
    # Shuffled by class, not all benign first: the label changes many times down the sheet.
    labels = list(df["Classification"])
    changes = sum(a != b for a, b in itertools.pairwise(labels))
    assert changes >= 15
    assert case_stem(7, 60) == "case007"
    assert case_stem(7, 999) == "case007"
    assert case_stem(7, 1000) == "case0007"


def test_every_listed_file_exists_and_every_file_is_listed(
    ds: tuple[SynthResult, pd.DataFrame],
) -> None:
    result, df = ds
    listed: list[str] = []
    for column in ("Image_filename", "Mask_tumor_filename", "Mask_other_filename"):
        for cell in df[column]:
            listed.extend(_names(cell))
    assert len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in result.image_dir.iterdir())
    assert sorted(listed) == on_disk
    others = [n for n in on_disk if "_other" in n]
    assert len(others) == result.other_masks >= 3
    assert len(on_disk) == 60 + 59 + result.other_masks


# ----------------------------------------------------------------------------- pixels


def test_images_are_rgba_of_varied_sizes(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    result, df = ds
    sizes = []
    for name in df["Image_filename"]:
        with Image.open(result.image_dir / name) as image:
            assert image.mode == "RGBA"
            sizes.append(image.size)
    widths = np.array([w for w, _ in sizes])
    heights = np.array([h for _, h in sizes])
    assert min(widths.min(), heights.min()) >= 128
    assert max(widths.max(), heights.max()) <= 256
    assert len(set(sizes)) >= 30  # sizes vary per case
    assert (widths >= heights).mean() >= 0.7  # mostly landscape, like real scans


def test_masks_match_images_and_are_nonempty(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    result, df = ds
    allowed = {(0, 0, 0, 0), (255, 255, 255, 255), (255, 255, 255, 75)}
    for _, row in df.iterrows():
        image_path = result.image_dir / row["Image_filename"]
        size = Image.open(image_path).size
        tumor = _names(row["Mask_tumor_filename"])
        if row["Classification"] == "normal":
            assert tumor == []
            assert _names(row["Mask_other_filename"]) == []
            continue
        assert len(tumor) == 1
        for name in tumor + _names(row["Mask_other_filename"]):
            with Image.open(result.image_dir / name) as mask:
                assert mask.mode == "RGBA"
                assert mask.size == size
                values = {tuple(v) for v in np.unique(np.asarray(mask).reshape(-1, 4), axis=0)}
            assert values <= allowed, (name, values - allowed)
        lesion = read_mask([result.image_dir / n for n in tumor], shape=(size[1], size[0]))
        # Lesion 0.3%..25% of the image, and wholly away from the image border.
        assert 0.003 < lesion.mean() < 0.25
        assert not (lesion[0].any() or lesion[-1].any() or lesion[:, 0].any()
                    or lesion[:, -1].any())
        for name in _names(row["Mask_other_filename"]):
            other = read_mask([result.image_dir / name], shape=lesion.shape)
            assert other.sum() > 0
            assert not (other & lesion).any(), f"{name} overlaps the lesion"


def test_lesion_mask_is_the_drawn_lesion(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    """The mask sits on a visible lesion: malignant interiors are much darker than their rim."""
    result, df = ds
    ratios = []
    for _, row in df[df["Classification"] == "malignant"].iterrows():
        gray = read_luminance(result.image_dir / row["Image_filename"]).astype(float)
        mask = read_mask([result.image_dir / row["Mask_tumor_filename"]], shape=gray.shape)
        ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask)
        ratios.append(gray[mask].mean() / max(1.0, gray[ring].mean()))
    ratios_arr = np.array(ratios)
    assert np.median(ratios_arr) < 0.5
    assert (ratios_arr < 0.8).mean() >= 0.9


def test_other_masks_and_ampersand_cells(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    _, df = ds
    other = df["Mask_other_filename"].dropna()
    multi = [cell for cell in other if "&" in cell]
    assert len(multi) >= 1
    for cell in multi:
        stem = cell.split("_other")[0]
        assert cell == f"{stem}_other1.png&{stem}_other2.png"
    assert 2 <= len(other) <= 6  # ~5% of 59 lesion cases, at least 2
    # Descriptor columns carry '&'-joined multi-labels too, as in the real workbook.
    for column in ("Margin", "Interpretation"):
        assert df[column].astype(str).str.contains("&").sum() >= 3, column


def test_alpha_75_quirk(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    """One mask has alpha-75 border pixels (real case010); convert('L') > 127 is still right."""
    result, df = ds
    quirky = []
    for name in df["Mask_tumor_filename"].dropna():
        rgba = np.asarray(Image.open(result.image_dir / name))
        if (rgba[..., 3] == 75).any():
            quirky.append(name)
            lesion = rgba[..., 3] > 0
            binary = np.asarray(Image.open(result.image_dir / name).convert("L")) > 127
            assert np.array_equal(binary, lesion)
            assert (rgba[..., 3] == 75).sum() >= 10
    assert len(quirky) == 1


def test_tint_and_transparency_quirks(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    result, df = ds
    tinted = transparent = hidden = 0
    for name in df["Image_filename"]:
        rgba = np.asarray(Image.open(result.image_dir / name)).astype(int)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        visible = alpha > 0
        if (np.abs(rgb[..., 0] - rgb[..., 2])[visible] > 3).mean() > 0.1 or (
            np.abs(rgb[..., 0] - rgb[..., 1])[visible] > 3
        ).mean() > 0.1:
            tinted += 1
        if (alpha == 0).any():
            transparent += 1
            if rgb[alpha == 0].max() > 0:
                hidden += 1
                # A plain convert('RGB') shows the hidden pixels; compositing on black hides them.
                plain = np.asarray(Image.open(result.image_dir / name).convert("L"))
                composited = read_luminance(result.image_dir / name)
                assert composited[alpha == 0].max() == 0
                assert plain[alpha == 0].mean() > 50
    assert 20 <= tinted <= 34  # ~45% of 60 (real: 120/256)
    assert 5 <= transparent <= 10  # ~12% of 60 (real: 31/256)
    assert 1 <= hidden < transparent  # "in some of those", as in the real 7/31


def test_workbook_values_are_plausible(ds: tuple[SynthResult, pd.DataFrame]) -> None:
    _, df = ds
    benign = df[df["Classification"] == "benign"]
    malignant = df[df["Classification"] == "malignant"]
    normal = df[df["Classification"] == "normal"]

    pixel = df["Pixel_size"].astype(float)
    assert pixel.between(0.00434, 0.01389).all()
    assert pixel.nunique() > 30
    ages = df["Age"]
    assert 3 <= (ages == "not available").sum() <= 18  # ~15% of 60
    numeric = [a for a in ages if a != "not available"]
    assert all(isinstance(a, int) and 18 <= a <= 87 for a in numeric)

    birads = df["BIRADS"]
    assert {type(v) for v in birads} == {int, str}  # mixed, as in the real workbook
    assert set(birads) <= {1, 2, 3, "4a", "4b", "4c", 5}
    assert set(normal["BIRADS"]) == {1}
    assert set(malignant["BIRADS"]) <= {"4b", "4c", 5}
    assert benign["BIRADS"].isin([2, 3, "4a"]).mean() >= 0.6

    assert (benign["Shape"].isin(["oval", "round"])).mean() >= 0.8
    assert (malignant["Shape"] == "irregular").mean() >= 0.7  # 93% expected; 23 cases
    assert (benign["Margin"] == "circumscribed").mean() >= 0.7
    assert malignant["Margin"].str.startswith("not circumscribed - ").all()
    assert (malignant["Posterior_features"].isin(["shadowing", "combined"])).mean() >= 0.5
    assert set(malignant["Verification"]) == {"confirmed by biopsy"}
    for column in ("Shape", "Margin", "Echogenicity", "Posterior_features", "Halo",
                   "Calcifications", "Interpretation", "Verification", "Diagnosis"):
        assert set(normal[column]) == {"not applicable"}, column


# ----------------------------------------------------------------------------- behaviour


def _digests(result: SynthResult) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(result.image_dir.iterdir())}


def test_deterministic_per_seed(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> SynthResult:
        return make_synthetic_breast(
            SynthSettings(out=tmp_path / name, cases=24, seed=seed, min_side=96, max_side=160)
        )

    first, again, other = run("a", 5), run("b", 5), run("c", 6)
    assert _digests(first) == _digests(again)
    pd.testing.assert_frame_equal(_sheet(first), _sheet(again))
    pd.testing.assert_frame_equal(
        pd.read_excel(first.workbook, sheet_name=DICTIONARY_SHEET),
        pd.read_excel(again.workbook, sheet_name=DICTIONARY_SHEET),
    )
    first_d, other_d = _digests(first), _digests(other)
    same = [k for k in first_d if other_d.get(k) == first_d[k]]
    assert same == []  # a different seed changes every image
    assert not _sheet(first).equals(_sheet(other))


def test_refuses_nonempty_out_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    settings = SynthSettings(out=out, cases=6, seed=1, min_side=64, max_side=80)
    make_synthetic_breast(settings)
    before = _digests(SynthResult(out, out / WORKBOOK_NAME, out / IMAGE_DIR_NAME, {}, 0, 0.0))

    with pytest.raises(InputError) as info:
        make_synthetic_breast(SynthSettings(out=out, cases=6, seed=2, min_side=64, max_side=80))
    assert "exists and is not empty" in info.value.message
    assert "--overwrite" in info.value.message
    assert info.value.exit_code == 2

    # With --overwrite the old dataset is replaced as a whole.
    (out / IMAGE_DIR_NAME / "stray.txt").write_text("old")
    replaced = make_synthetic_breast(
        SynthSettings(out=out, cases=6, seed=2, min_side=64, max_side=80, overwrite=True)
    )
    assert not (out / IMAGE_DIR_NAME / "stray.txt").exists()
    assert _digests(replaced) != before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging or old copies left

    # An empty folder is fine without --overwrite.
    empty = tmp_path / "empty"
    empty.mkdir()
    make_synthetic_breast(SynthSettings(out=empty, cases=5, seed=1, min_side=64, max_side=64))
    assert (empty / WORKBOOK_NAME).exists()


def test_overwrite_never_deletes_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not written by breastus"):
        make_synthetic_breast(SynthSettings(out=out, cases=5, overwrite=True))
    assert (out / "notes.txt").read_text() == "precious"


def test_failure_leaves_no_half_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_save = synth._save_rgba

    def failing_save(array: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if killed half-way
        real_save(array, path)

    monkeypatch.setattr(synth, "_save_rgba", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_breast(SynthSettings(out=tmp_path / "ds", cases=8, min_side=64,
                                            max_side=64))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"cases": 3}, "--cases"),
        ({"cases": 0}, "--cases"),
        ({"seed": -1}, "--seed"),
        ({"malignant_fraction": 0.0}, "--malignant-fraction"),
        ({"malignant_fraction": 1.2}, "--malignant-fraction"),
        ({"malignant_fraction": float("nan")}, "--malignant-fraction"),
        ({"min_side": 16}, "--min-side"),
        ({"min_side": 200, "max_side": 100}, "--max-side"),
        ({"normal": -1}, "--normal"),
        ({"cases": 10, "normal": 9}, "--normal"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path: Path, changes: dict, option: str) -> None:
    settings = SynthSettings(out=tmp_path / "ds", **changes)
    with pytest.raises(UsageError) as info:
        make_synthetic_breast(settings)
    assert option in info.value.message
    assert info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []  # validated before anything is written


def test_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import breastus_cli.data.synth\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- the classes


def _geometry(mask: np.ndarray) -> tuple[float, float]:
    """(height / width of the bounding box, solidity = area / convex-hull area)."""
    ys, xs = np.nonzero(mask)
    aspect = (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)
    corners = np.concatenate([np.c_[xs + dx, ys + dy] for dx in (0, 1) for dy in (0, 1)])
    return float(aspect), float(mask.sum() / ConvexHull(corners).volume)


def test_geometry_separates_the_classes(big: tuple[SynthResult, pd.DataFrame]) -> None:
    """Benign: wider than tall and convex; malignant: taller than wide and less convex."""
    result, df = big
    stats: dict[str, list[tuple[float, float]]] = {"benign": [], "malignant": []}
    for _, row in df[df["Classification"] != "normal"].iterrows():
        mask = read_mask([result.image_dir / row["Mask_tumor_filename"]])
        stats[row["Classification"]].append(_geometry(mask))
    benign, malignant = np.array(stats["benign"]), np.array(stats["malignant"])
    # Measured (seed 0): aspect 0.69 vs 1.29, solidity 0.96 vs 0.87.
    assert benign[:, 0].mean() < 0.8
    assert malignant[:, 0].mean() > 1.1
    assert (benign[:, 0] < 1.05).mean() >= 0.9
    assert (malignant[:, 0] > 0.9).mean() >= 0.9
    assert benign[:, 1].mean() > 0.94
    assert benign[:, 1].mean() - malignant[:, 1].mean() > 0.05


def test_classes_are_learnable_without_tensorflow(big: tuple[SynthResult, pd.DataFrame]) -> None:
    """A linear model on 32x32 thumbnails separates unseen cases (ROC AUC >= 0.8)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result, df = big
    df = df[df["Classification"] != "normal"].reset_index(drop=True)
    features = []
    for name in df["Image_filename"]:
        gray = read_luminance(result.image_dir / name)
        thumb = Image.fromarray(gray).resize((32, 32), Image.Resampling.BILINEAR)
        features.append(np.asarray(thumb, dtype=np.float32).ravel() / 255.0)
    x = np.stack(features)
    y = (df["Classification"] == "malignant").to_numpy()
    half = len(y) // 2
    assert min(y[:half].sum(), y[half:].sum()) >= 10

    # Fit on one half, score the other half (cases it never saw), then the other way round.
    aucs = []
    for train, test in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
        model.fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
    # Measured 0.89 and 0.90 (seed 0; over seeds 0-7 mean 0.89): learnable, not trivial.
    assert min(aucs) >= 0.8, f"ROC AUC {aucs} on unseen cases"
