"""No leakage across splits (issue 28): a dataset re-split after it was combined is caught when
a run trained on the combination is scored on it; near-duplicate images (the same scan re-saved,
shifted or re-scaled) are found by ``prepare``, kept in one split and fold by ``split``, and
counted by ``evaluate`` when a run's split did not keep them together."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_dataset, run_cli

TINY = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--batch-size", "16",
        "--epochs", "1", "--cache", "none"]


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---- a combined dataset carries each member's split ---------------------------------------------
def test_a_member_resplit_after_combining_is_refused_when_scored_on_it(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    data3 = make_dataset(tmp_path / "d3", cases=24, seed=5, sides=(64, 80),
                         ratio=(0.6, 0.2, 0.2), split_seed=1)
    comb, run = tmp_path / "comb", tmp_path / "run"
    assert run_cli("combine", str(data), str(data3), "--out", str(comb)).returncode == 0
    proc = run_cli("train-cls", str(comb), *TINY, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert sorted(Path(m["path"]) for m in recorded["members"]) == sorted(
        p.resolve() for p in (data, data3))
    # scored on one member whose split is the combination's: allowed
    proc = run_cli("evaluate", str(run), "--data", str(data3), "--split", "test",
                   "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr

    proc = run_cli("split", str(data3), "--seed", "7", "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    # the leak the record prevents: cases of data3's new test split were trained on
    trained = pd.read_csv(comb / "splits.csv", dtype=str)
    trained = {c.split("-", 1)[1] for c, s in zip(trained["case_id"], trained["split"])
               if s == "train" and c.startswith("d3_data-")}
    now = pd.read_csv(data3 / "splits.csv", dtype=str)
    assert trained & set(now.loc[now["split"] == "test", "case_id"])
    before = sorted(p.name for p in run.iterdir())
    proc = run_cli("evaluate", str(run), "--data", str(data3), "--split", "test",
                   "--bootstrap", "0")
    assert proc.returncode == 2, proc.stderr
    line = _lines(proc.stderr)
    assert len(line) == 1 and "combined dataset" in line[0] and "re-split" in line[0]
    assert str(data3) in line[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    # the combination itself still holds the split the run trained on
    proc = run_cli("evaluate", str(run), "--split", "test", "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    # a member left alone still evaluates; every case (--split all) asks no split question
    for args in (["--data", str(data), "--split", "test"],
                 ["--data", str(data3), "--split", "all"]):
        proc = run_cli("evaluate", str(run), *args, "--bootstrap", "0")
        assert proc.returncode == 0, (args, proc.stderr)


# ---- near-duplicate images -----------------------------------------------------------------------
def _shifted(image: np.ndarray, pixels: int) -> np.ndarray:
    moved = np.zeros_like(image)
    moved[pixels:, pixels:] = image[:-pixels, :-pixels]
    return moved


def _jpeg(image: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=60)
    path.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def twins(synth_data, tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    """(a folder source of 40 distinct synthetic cases plus planted twins, the planted groups):
    4 cases each with a twin shifted by 2 pixels, one re-scaled to 80% and one re-saved as
    JPEG (quality 60); 2 more with only a shifted-and-re-compressed twin."""
    manifest = pd.read_csv(synth_data / "manifest.csv", dtype=str, keep_default_na=False)
    source = tmp_path_factory.mktemp("twins") / "src"
    groups: dict[str, set[str]] = {}
    ids: dict[str, str] = {}
    for n, row in enumerate(manifest.head(40).itertuples()):
        image = np.asarray(Image.open(synth_data / row.image).convert("L"))
        folder = source / row.label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{row.case_id}.png")
        if n < 4:
            Image.fromarray(_shifted(image, 2)).save(folder / f"{row.case_id}_shift.png")
            h, w = image.shape
            Image.fromarray(image).resize((int(w * 0.8), int(h * 0.8)), Image.BILINEAR).save(
                folder / f"{row.case_id}_small.png")
            _jpeg(image, folder / f"{row.case_id}_jpeg.jpg")
            groups[row.case_id] = {row.case_id, *(f"{row.case_id}_{s}"
                                                  for s in ("shift", "small", "jpeg"))}
        elif n < 6:
            _jpeg(_shifted(image, 2), folder / f"{row.case_id}_copy.jpg")
            groups[row.case_id] = {row.case_id, f"{row.case_id}_copy"}
        for case in groups.get(row.case_id, ()):  # the folder reader's ids: <label>_<stem>
            ids[case] = f"{row.label}_{case}"
    return source, {ids[k]: {ids[m] for m in members} for k, members in groups.items()}


def _prepared(twins, tmp_path: Path) -> tuple[Path, dict[str, set[str]]]:
    source, groups = twins
    data = tmp_path / "data"
    proc = run_cli("prepare", str(source), "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    return data, groups


def test_prepare_finds_the_planted_twins_and_only_them(twins, tmp_path):
    data, groups = _prepared(twins, tmp_path)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    found = manifest.groupby("dup_group")["case_id"].apply(set).to_dict()
    planted = {min(members): members for members in groups.values()}
    assert {g: m for g, m in found.items() if len(m) > 1} == planted
    # every other case is its own group, named by itself
    alone = manifest[~manifest["dup_group"].isin(planted)]
    assert (alone["dup_group"] == alone["case_id"]).all() and len(alone) == 40 - len(planted)
    record = json.loads((data / "prepare.json").read_text())["near_duplicates"]
    assert record["threshold"] == 0.95 and record["pairs_found"] == len(record["pairs"])
    assert all(p["similarity"] >= 0.95 for p in record["pairs"])
    paired = {frozenset((p["a"], p["b"])) for p in record["pairs"]}
    for members in groups.values():  # each twin is listed with its original
        original = min(members, key=len)
        assert all(frozenset((original, m)) in paired for m in members - {original})
    # a threshold out of (0, 1] is one line, before anything is written
    proc = run_cli("prepare", str(twins[0]), "--out", str(tmp_path / "bad"),
                   "--dup-threshold", "1.5")
    assert proc.returncode == 2 and len(_lines(proc.stderr)) == 1
    assert "--dup-threshold" in proc.stderr and not (tmp_path / "bad").exists()


def test_distinct_synthetic_cases_are_never_grouped(synth_data):
    manifest = pd.read_csv(synth_data / "manifest.csv", dtype=str, keep_default_na=False)
    assert (manifest["dup_group"] == manifest["case_id"]).all()
    assert json.loads((synth_data / "prepare.json").read_text())[
        "near_duplicates"]["pairs"] == []


def _straddles(splits: pd.DataFrame, groups: dict[str, set[str]], column: str) -> int:
    where = dict(zip(splits["case_id"], splits[column]))
    return sum(len({where[c] for c in members}) > 1 for members in groups.values())


def test_split_keeps_each_twin_group_in_one_split_and_fold(twins, tmp_path):
    data, groups = _prepared(twins, tmp_path)
    for seed in range(6):
        proc = run_cli("split", str(data), "--seed", str(seed), "--folds", "3")
        assert proc.returncode == 0, proc.stderr
        splits = pd.read_csv(data / "splits.csv", dtype=str)
        assert _straddles(splits, groups, "split") == 0
        assert _straddles(splits, groups, "fold") == 0
        # the validation carved from training folds keeps them together too
        from breastus_cli.data.split import select_cases

        val = set(select_cases(data, "val", fold=0, seed=seed)["case_id"])
        train = set(select_cases(data, "train", fold=0, seed=seed)["case_id"])
        assert not any(members & val and members & train for members in groups.values())
    assert "near-duplicate" in proc.stdout
    # the same dataset without dup_group (a manifest prepared before it existed) still
    # splits, by patient only: twins then straddle for some seed, which is what was fixed
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.drop(columns="dup_group").to_csv(data / "manifest.csv", index=False)
    straddled = 0
    for seed in range(6):
        assert run_cli("split", str(data), "--seed", str(seed)).returncode == 0
        straddled += _straddles(pd.read_csv(data / "splits.csv", dtype=str), groups, "split")
    assert straddled > 0


def test_evaluate_counts_test_cases_with_a_twin_in_training(twins, tmp_path):
    """A run whose split did not keep twins together (a manifest without dup_group) is told
    how many test cases have a near-duplicate in training: found from the images, and read
    from dup_group once the manifest has it."""
    data, groups = _prepared(twins, tmp_path)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.drop(columns="dup_group").to_csv(data / "manifest.csv", index=False)
    for seed in range(20):  # a seed whose split puts twins on both sides of train/test
        run_cli("split", str(data), "--seed", str(seed), "--ratio", "0.5", "0.25", "0.25")
        splits = pd.read_csv(data / "splits.csv", dtype=str)
        where = dict(zip(splits["case_id"], splits["split"]))
        expected = sum(where[c] == "test" and any(where[o] == "train" for o in members)
                       for members in groups.values() for c in members)
        if expected:
            break
    assert expected
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(data), *TINY, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("evaluate", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    twins_found = json.loads((run / "eval-test" / "metrics.json").read_text())["near_duplicates"]
    assert twins_found["with_twin_in_training"] == expected
    assert twins_found["source"] == "computed from the images"
    assert twins_found["n"] == int((splits["split"] == "test").sum())
    assert f"{expected} of {twins_found['n']} test cases have a near-duplicate" in " ".join(
        proc.stderr.split())
    assert "near-duplicate" in (run / "eval-test" / "report.md").read_text()
    # the manifest's dup_group gives the same count
    manifest.to_csv(data / "manifest.csv", index=False)
    proc = run_cli("evaluate", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((run / "eval-test" / "metrics.json").read_text())["near_duplicates"]
    assert again["with_twin_in_training"] == expected and again["source"] == "manifest"


@pytest.mark.realdata
def test_real_breast_has_no_near_duplicates(real_breast):
    """BrEaST holds one image per lesion: prepare finds no twin there (its closest distinct
    pair correlates about 0.87, under the 0.95 threshold)."""
    record = json.loads((real_breast / "prepare.json").read_text())["near_duplicates"]
    assert record["pairs"] == [] and record["threshold"] == 0.95
    manifest = pd.read_csv(real_breast / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 252 and (manifest["dup_group"] == manifest["case_id"]).all()
