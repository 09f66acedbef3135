"""`split`: case/patient-level, stratified, reproducible; folds; split-folders layout."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from breastus_cli.data.split import SplitSettings, largest_remainder, split_dataset
from breastus_cli.errors import UsageError
from conftest import run_cli


def _manifest(path, n_benign=50, n_malignant=30, images_per_patient=1):
    """A manifest-only dataset (split never opens the images)."""
    rows = []
    for label, n in (("benign", n_benign), ("malignant", n_malignant)):
        for i in range(n):
            patient = f"{label[0]}p{i // images_per_patient:03d}"
            rows.append({"case_id": f"{label[0]}{i:03d}", "patient_id": patient,
                         "image": f"cls/{label}/{label[0]}{i:03d}.png", "mask": "",
                         "label": label})
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "manifest.csv", index=False)
    return path


def _splits(data):
    return pd.read_csv(data / "splits.csv", dtype=str)


def test_largest_remainder_rounding():
    assert largest_remainder(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert largest_remainder(154, (0.8, 0.1, 0.1)) == [123, 15, 16]
    assert largest_remainder(7, (0.8, 0.1, 0.1)) == [5, 1, 1]
    for n in range(0, 60):
        counts = largest_remainder(n, (0.7, 0.2, 0.1))
        assert sum(counts) == n
        assert all(abs(c - n * r) < 1 for c, r in zip(counts, (0.7, 0.2, 0.1)))


def test_every_case_in_exactly_one_split_with_ratios_per_label(tmp_path):
    data = _manifest(tmp_path / "d", 53, 31)
    result = split_dataset(SplitSettings(data=data, seed=3))
    splits = _splits(data)
    assert len(splits) == 84 and splits["case_id"].is_unique
    assert set(splits["split"]) == {"train", "val", "test"}
    for label, n in (("benign", 53), ("malignant", 31)):
        part = splits[splits["label"] == label]
        for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            count = int((part["split"] == name).sum())
            assert abs(count - n * share) <= 1, (label, name, count)
            assert result.table[name][label] == count


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    data = _manifest(tmp_path / "d")
    split_dataset(SplitSettings(data=data, seed=42))
    first = _splits(data)
    split_dataset(SplitSettings(data=data, seed=42))
    assert _splits(data).equals(first)
    split_dataset(SplitSettings(data=data, seed=43))
    assert not _splits(data)["split"].equals(first["split"])


def test_patients_never_span_two_splits_or_folds(tmp_path):
    data = _manifest(tmp_path / "d", 60, 40, images_per_patient=3)
    result = split_dataset(SplitSettings(data=data, seed=1, folds=4))
    assert result.groups == "patient"
    splits = _splits(data)
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    assert (splits.groupby("patient_id")["fold"].nunique() == 1).all()


def test_folds_are_stratified_and_cover_every_case_once(tmp_path):
    data = _manifest(tmp_path / "d", 50, 30)
    result = split_dataset(SplitSettings(data=data, seed=5, folds=5))
    splits = _splits(data)
    assert sorted(splits["fold"].astype(int).unique()) == [0, 1, 2, 3, 4]
    per_fold = splits.groupby(["fold", "label"]).size().unstack()
    assert per_fold["benign"].tolist() == [10] * 5 and per_fold["malignant"].tolist() == [6] * 5
    assert result.fold_source == "stratified-group"
    # the holdout split is still there beside the folds
    assert set(splits["split"]) == {"train", "val", "test"}


def test_published_folds_are_used_when_present(tmp_path):
    data = _manifest(tmp_path / "d", 10, 10)
    manifest = pd.read_csv(data / "manifest.csv")
    manifest["published_fold_5"] = [i % 5 + 1 for i in range(20)]  # 1-based, as published
    manifest.to_csv(data / "manifest.csv", index=False)
    result = split_dataset(SplitSettings(data=data, folds=5))
    assert result.fold_source == "published"
    assert _splits(data)["fold"].astype(int).tolist() == [i % 5 for i in range(20)]
    result = split_dataset(SplitSettings(data=data, folds=5, published_folds=False))
    assert result.fold_source == "stratified-group"


@pytest.mark.parametrize(
    ("settings", "option"),
    [({"ratio": (0.8, 0.3)}, "--ratio"), ({"ratio": (0.5, 0.2, 0.1)}, "--ratio"),
     ({"ratio": (0.8, -0.1, 0.3)}, "--ratio"), ({"folds": 1}, "--folds"),
     ({"folds": 40}, "--folds")],
)
def test_bad_settings_name_the_option(tmp_path, settings, option):
    data = _manifest(tmp_path / "d")
    with pytest.raises(UsageError, match=option):
        split_dataset(SplitSettings(data=data, **settings))


def test_cli_split_prints_counts_and_rejects_bad_input(tmp_path):
    data = _manifest(tmp_path / "d", 20, 10)
    proc = run_cli("split", str(data), "--ratio", "0.6", "0.2", "0.2", "--seed", "9")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "12" in proc.stdout and "benign" in proc.stdout
    splits = _splits(data)
    assert int(((splits["split"] == "train") & (splits["label"] == "benign")).sum()) == 12
    proc = run_cli("split", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "dataset folder not found" in proc.stderr
    proc = run_cli("split", str(data), "--ratio", "0.9", "0.9", "0.9")
    assert proc.returncode == 2 and "--ratio must sum to 1" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("split", str(empty))
    assert proc.returncode == 2 and "breastus prepare" in proc.stderr


def test_a_split_with_no_validation_share_is_refused_in_one_line(tmp_path):
    """``--ratio 1 0 0`` left val and test empty with exit 0 (issue 28): training needs
    validation cases, so a zero validation share is refused before splits.csv is written;
    a zero test share (no test split) stays allowed."""
    data = _manifest(tmp_path / "d", 20, 10)
    for ratio in (("1", "0", "0"), ("0.9", "0", "0.1")):
        proc = run_cli("split", str(data), "--ratio", *ratio)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "--ratio" in lines[0] and "validation" in lines[0]
        assert "Traceback" not in proc.stderr
        assert not (data / "splits.csv").exists()
    proc = run_cli("split", str(data), "--ratio", "0.8", "0.2", "0")
    assert proc.returncode == 0, proc.stderr


def test_materialize_keeps_images_and_masks_together(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    result = split_dataset(SplitSettings(data=data, seed=42, materialize=True))
    splits = _splits(data).set_index("case_id")["split"]
    root = result.materialized
    for name in ("train", "val", "test"):
        images = sorted(p.name for p in (root / "seg" / name / "images").iterdir())
        masks = sorted(p.name for p in (root / "seg" / name / "masks").iterdir())
        assert images == masks and images
        assert all(splits[f[:-4]] == name for f in images)
        for label in ("benign", "malignant"):
            files = [p.name[:-4] for p in (root / "cls" / name / label).iterdir()]
            assert files and all(splits[c] == name for c in files)
    total = sum(1 for _ in (root / "cls").rglob("*.png"))
    assert total == len(splits)
    # a mask file in the split folder is the case's own mask
    case = images[0][:-4]
    assert (root / "seg" / "test" / "masks" / f"{case}.png").read_bytes() == (
        data / "seg" / "masks" / f"{case}.png").read_bytes()


@pytest.mark.realdata
def test_real_breast_split(real_breast, tmp_path):
    (tmp_path / "b").mkdir()  # split reads only the manifest: a copy of it is the dataset
    for name in ("manifest.csv", "prepare.json"):
        shutil.copy(real_breast / name, tmp_path / "b" / name)
    split_dataset(SplitSettings(data=tmp_path / "b", seed=42, folds=5))
    splits = _splits(tmp_path / "b")
    counts = splits.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", "benign"): 123, ("train", "malignant"): 78,
                      ("val", "benign"): 15, ("val", "malignant"): 10,
                      ("test", "benign"): 16, ("test", "malignant"): 10}
    assert np.bincount(splits["fold"].astype(int)).tolist() == [51, 51, 50, 50, 50]
