"""Scoring a run on another prepared dataset (``evaluate RUN --data OTHER --split all``): every
case of OTHER, read from OTHER's files, whatever folds or splits OTHER has."""

from __future__ import annotations

import json

import pandas as pd

from conftest import copy_run, run_cli


def test_a_segmenter_scores_every_case_of_another_dataset(seg_run, synth_data, tmp_path):
    run = copy_run(seg_run, tmp_path / "seg")
    proc = run_cli("evaluate", str(run), "--data", str(synth_data), "--split", "all",
                   "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    per_case = pd.read_csv(run / "eval-data-all/per_case.csv")
    manifest = pd.read_csv(synth_data / "manifest.csv")
    assert sorted(per_case["case_id"]) == sorted(manifest.loc[manifest["mask"].notna()
                                                              & (manifest["mask"] != ""),
                                                              "case_id"])
    metrics = json.loads((run / "eval-data-all/metrics.json").read_text())
    assert 0 <= metrics["dice"] <= 1 and metrics["n"] == len(per_case)


def test_a_fold_run_scores_another_dataset_without_folds(learn_data, synth_data, tmp_path):
    """A run trained with --fold K on one dataset, scored on all of another that has no folds."""
    from conftest import FAST_CLS

    run = tmp_path / "fold1"
    assert run_cli("train-cls", str(learn_data), *FAST_CLS, "--epochs", "1", "--fold", "1",
                   "--run-dir", str(run)).returncode == 0
    assert "fold" not in pd.read_csv(synth_data / "splits.csv").columns
    proc = run_cli("evaluate", str(run), "--data", str(synth_data), "--split", "all",
                   "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    predictions = pd.read_csv(run / "eval-data-all/predictions.csv")
    assert len(predictions) == int(pd.read_csv(synth_data / "manifest.csv")["label"]
                                   .isin(["benign", "malignant"]).sum())
    assert predictions["p_malignant"].between(0, 1).all()
    assert not (run / "eval-test").exists()  # only the split asked for is written
