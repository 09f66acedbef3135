"""Training across datasets: ``breastus combine`` and ``train-cls DATA_A DATA_B``; every case
keeps its dataset, split and fold, and evaluation reports each dataset beside the pooled numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_CLS, copy_run, run_cli


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_combine_keeps_each_case_its_dataset_split_and_files(learn_data, synth_data, tmp_path):
    before = {d: _files(d) for d in (learn_data, synth_data)}
    out = tmp_path / "both"
    proc = run_cli("combine", str(learn_data), str(synth_data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    splits = pd.read_csv(out / "splits.csv", keep_default_na=False)
    # both folders are called "data": their parents' names tell them apart
    sources = {"learn_data": learn_data, "prepared_data": synth_data}
    assert sorted(manifest["dataset"].unique()) == sorted(sources)
    for name, folder in sources.items():
        own = pd.read_csv(folder / "manifest.csv", keep_default_na=False)
        own_splits = pd.read_csv(folder / "splits.csv", keep_default_na=False)
        part = manifest[manifest["dataset"] == name]
        assert sorted(part["dataset_case_id"]) == sorted(own["case_id"])
        assert all(c == f"{name}-{o}" for c, o in zip(part["case_id"], part["dataset_case_id"]))
        # every path points at the dataset's own file (nothing copied)
        for rel, original in zip(part["image"], own.set_index("case_id")
                                 .loc[part["dataset_case_id"], "image"]):
            assert (out / rel).resolve() == (folder / original).resolve()
        # a case is test in the combination exactly when it was test in its dataset
        merged = splits.set_index("case_id").loc[[f"{name}-{c}" for c in own_splits["case_id"]]]
        assert list(merged["split"]) == list(own_splits["split"])
    # patients of two hospitals never share an id
    assert manifest.groupby("patient_id")["dataset"].nunique().max() == 1
    # one dataset has 3 folds, the other none: no folds in the combination, and it says so
    assert "fold" not in splits.columns and "--folds" in proc.stderr
    marker = json.loads((out / "prepare.json").read_text())
    assert marker["format"] == "combined" and len(marker["combined"]) == 2
    assert {d["cases"] for d in marker["combined"]} == {
        len(pd.read_csv(d / "manifest.csv")) for d in (learn_data, synth_data)}
    assert before == {d: _files(d) for d in (learn_data, synth_data)}  # sources untouched


def test_combine_refuses_with_one_line(learn_data, synth_data, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    cases = [
        ([str(learn_data)], "at least two"),
        ([str(learn_data), str(learn_data)], "twice"),
        ([str(learn_data), str(synth_data), "--out", str(learn_data / "x")], "inside"),
        ([str(learn_data), str(synth_data), "--out", str(notes), "--overwrite"],
         "not written by breastus"),
    ]
    for args, words in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "o")]
        proc = run_cli("combine", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr
    assert (notes / "mine.txt").read_text() == "keep" and not (learn_data / "x").exists()


def test_train_on_two_datasets_then_evaluate_each(learn_data, synth_data, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(learn_data), str(synth_data), *FAST_CLS, "--epochs", "1",
                   "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert Path(config["data"]["path"]) == (run / "data").resolve()
    n_train = sum(int((pd.read_csv(d / "splits.csv")["split"] == "train").sum())
                  for d in (learn_data, synth_data))
    assert config["data"]["n_train"] == n_train  # both datasets' training cases

    proc = run_cli("evaluate", str(run), "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "eval-test/metrics.json").read_text())
    per = metrics["by_dataset"]
    assert sorted(per) == ["learn_data", "prepared_data"]
    assert sum(p["n"] for p in per.values()) == metrics["n"]
    predictions = pd.read_csv(run / "eval-test/predictions.csv")
    for name, numbers in per.items():
        part = predictions[predictions["dataset"] == name]
        assert len(part) == numbers["n"]
        y_pred = (part["p_malignant"] >= metrics["threshold"]).astype(int)
        malignant = part["y_true"] == 1
        if malignant.any():
            assert abs(numbers["sensitivity"] - y_pred[malignant].mean()) < 1e-6
    report = (run / "eval-test/report.md").read_text()
    assert "Per dataset" in report and "learn_data" in report and "prepared_data" in report
    # replaying the run reads its combined dataset (config.json names RUN/data)
    again = tmp_path / "again"
    proc = run_cli("train-cls", "--config", str(run / "config.json"), "--run-dir", str(again))
    assert proc.returncode == 0, proc.stderr
    replay = json.loads((again / "config.json").read_text())
    assert replay["data"]["manifest_sha256"] == config["data"]["manifest_sha256"]
    assert replay["data"]["n_train"] == n_train


def test_train_on_two_datasets_refuses_a_used_run_dir(learn_data, synth_data, tmp_path):
    run = tmp_path / "busy"
    run.mkdir()
    (run / "mine.txt").write_text("keep")
    proc = run_cli("train-cls", str(learn_data), str(synth_data), *FAST_CLS, "--epochs", "1",
                   "--run-dir", str(run))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]


def test_another_dataset_gets_its_own_evaluation_folder(cls_evaluated, synth_data, tmp_path):
    """Scoring a run on another dataset never replaces the run's own evaluation."""
    run = copy_run(cls_evaluated, tmp_path / "run")
    own = (run / "eval-test/metrics.json").read_text()
    threshold = run / "threshold.json"
    before = threshold.read_text() if threshold.exists() else None
    proc = run_cli("evaluate", str(run), "--data", str(synth_data), "--split", "test",
                   "--bootstrap", "0", "--target-sensitivity", "0.9")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "eval-data-test/metrics.json").read_text())
    assert (run / "eval-test/metrics.json").read_text() == own
    # a threshold chosen on another dataset's validation cases stays in that evaluation
    assert "chosen on validation" in metrics["threshold_source"]
    assert (threshold.read_text() if threshold.exists() else None) == before


def test_cross_validation_across_two_datasets_reports_each(tmp_path):
    """cv cls DATA_A DATA_B: fold K of each dataset is fold K of the combination; the pooled
    out-of-fold numbers come per dataset too."""
    from conftest import make_dataset

    a = make_dataset(tmp_path / "a", cases=24, seed=1, sides=(64, 80), ratio=(0.7, 0.15, 0.15),
                     split_seed=1, folds=2)
    b = make_dataset(tmp_path / "b", cases=24, seed=2, sides=(64, 80), ratio=(0.7, 0.15, 0.15),
                     split_seed=1, folds=2)
    out = tmp_path / "cv"
    args = ["cv", "cls", str(a), str(b), "--folds", "2", *FAST_CLS, "--epochs", "1",
            "--out", str(out), "--bootstrap", "50"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    splits = pd.read_csv(out / "data/splits.csv")
    for name, folder in (("a_data", a), ("b_data", b)):
        own = pd.read_csv(folder / "splits.csv")
        mine = splits.set_index("case_id").loc[[f"{name}-{c}" for c in own["case_id"]], "fold"]
        assert list(mine) == list(own["fold"])
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["by_dataset"]) == ["a_data", "b_data"]
    assert sum(d["n"] for d in summary["by_dataset"].values()) == summary["n"]
    assert "Per dataset" in (out / "summary.md").read_text()
    again = run_cli(*args)  # the same command resumes: nothing retrained, same view
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(out / "data/splits.csv").equals(splits)


def test_a_segmenter_is_scored_per_dataset(seg_run, synth_data, tmp_path):
    from conftest import make_dataset

    small = make_dataset(tmp_path / "small", cases=12, seed=5, sides=(64, 80),
                         ratio=(0.5, 0.25, 0.25), split_seed=1)
    both = tmp_path / "both"
    assert run_cli("combine", str(synth_data), str(small), "--out", str(both)).returncode == 0
    run = copy_run(seg_run, tmp_path / "seg")
    proc = run_cli("evaluate", str(run), "--data", str(both), "--split", "all",
                   "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "eval-both-all/metrics.json").read_text())
    per_case = pd.read_csv(run / "eval-both-all/per_case.csv")
    assert sorted(metrics["by_dataset"]) == sorted(per_case["dataset"].unique())
    for name, numbers in metrics["by_dataset"].items():
        part = per_case[per_case["dataset"] == name]
        assert numbers["n"] == len(part)
        assert numbers["dice"] == pytest.approx(part["dice"].mean())
