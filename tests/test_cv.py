"""`breastus cv`: every case out of fold once, pooled numbers = sklearn, resumable by fold."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import FAST_CLS, run_cli


def test_every_case_is_out_of_fold_exactly_once(cv_cls, learn_data):
    oof = pd.read_csv(cv_cls / "oof_predictions.csv")
    manifest = pd.read_csv(learn_data / "manifest.csv")
    splits = pd.read_csv(learn_data / "splits.csv").set_index("case_id")
    assert sorted(oof["case_id"]) == sorted(manifest["case_id"])
    assert oof["case_id"].is_unique
    # each case was scored by the model of its own fold, which never trained on it
    assert (oof["fold"].to_numpy() == splits.loc[oof["case_id"], "fold"].to_numpy()).all()
    for k in range(3):
        config = json.loads((cv_cls / f"fold-{k}/config.json").read_text())
        assert config["settings"]["fold"] == k
        assert (cv_cls / f"fold-{k}/eval-test/predictions.csv").is_file()

def test_summary_equals_sklearn_on_pooled_predictions(cv_cls):
    summary = json.loads((cv_cls / "summary.json").read_text())
    oof = pd.read_csv(cv_cls / "oof_predictions.csv")
    y, p, d = oof["y_true"], oof["p_malignant"], oof["y_pred"]
    m = summary["metrics"]
    assert m["auc"]["pooled"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["sensitivity"]["pooled"] == pytest.approx(skm.recall_score(y, d))
    assert m["specificity"]["pooled"] == pytest.approx(skm.recall_score(y, d, pos_label=0))
    assert m["accuracy"]["pooled"] == pytest.approx(skm.accuracy_score(y, d))
    assert m["balanced_accuracy"]["pooled"] == pytest.approx(skm.balanced_accuracy_score(y, d))
    folds = [json.loads((cv_cls / f"fold-{k}/eval-test/metrics.json").read_text())
             for k in range(3)]
    aucs = [f["auc"] for f in folds]
    assert m["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert m["auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    lo, hi = m["auc"]["ci"]
    assert lo <= m["auc"]["pooled"] <= hi
    assert "pooled" in (cv_cls / "summary.md").read_text()

def test_resume_skips_finished_folds(cv_cls, learn_data, tmp_path):
    out = tmp_path / "cv"
    shutil.copytree(cv_cls, out)
    shutil.rmtree(out / "fold-2")
    plan = json.loads((out / "cv.json").read_text())
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                   "--lr", "1e-3", "--out", str(out), "--bootstrap", "300")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "cv.json").read_text()) == plan
    for k in (0, 1):  # untouched
        assert (out / f"fold-{k}/history.csv").read_text() == (
            cv_cls / f"fold-{k}/history.csv").read_text()
    assert (out / "fold-2/eval-test/predictions.csv").is_file()

def test_cv_needs_matching_folds(learn_data, tmp_path):
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "5", *FAST_CLS, "--epochs", "1",
                   "--out", str(tmp_path / "cv"))
    assert proc.returncode == 2 and "--folds 5" in proc.stderr

@pytest.mark.parametrize("kind,weights,lr,epochs", [
    ("cls", "none", 1e-3, 40), ("cls", "imagenet", 1e-4, 20),
    ("seg", "none", 1e-3, 30), ("seg", "imagenet", 0.005, 20)])
def test_learning_rate_and_epochs_default_by_weights(learn_data, tmp_path, kind, weights, lr,
                                                     epochs):
    # --dry-run writes the plan (every training setting) and submits nothing
    out = tmp_path / "cv"
    proc = run_cli("cv", kind, str(learn_data), "--folds", "3", "--weights", weights,
                   "--slurm", "--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    train = json.loads((out / "cv.json").read_text())["train"]
    assert (train["lr"], train["epochs"]) == (lr, epochs)
    given = run_cli("cv", kind, str(learn_data), "--folds", "3", "--weights", weights, "--lr",
                    "0.02", "--epochs", "3", "--slurm", "--dry-run", "--out", str(tmp_path / "g"))
    assert given.returncode == 0, given.stderr
    train = json.loads((tmp_path / "g" / "cv.json").read_text())["train"]
    assert (train["lr"], train["epochs"]) == (0.02, 3)

def test_fusion_needs_a_segmenter(learn_data, tmp_path):
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
                   "--fusion", "descriptors", "--out", str(tmp_path / "cv"))
    assert proc.returncode == 2 and "--seg-cv" in proc.stderr
    assert not (tmp_path / "cv").exists()


def test_a_cv_written_before_the_schedule_options_still_resumes(cv_cls, learn_data, tmp_path):
    """cv.json and config.json from before --lr-schedule/--warmup-epochs/--freeze-bn existed:
    the same command matches them (they trained at a constant rate, batch norms trained) and
    retrains nothing."""
    out = tmp_path / "cv"
    shutil.copytree(cv_cls, out)
    plan = json.loads((out / "cv.json").read_text())
    for key in ("lr_schedule", "warmup_epochs", "freeze_bn"):
        plan["train"].pop(key)
    (out / "cv.json").write_text(json.dumps(plan))
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                   "--lr", "1e-3", "--out", str(out), "--bootstrap", "300")
    assert proc.returncode == 0, proc.stderr
    for k in range(3):
        assert (out / f"fold-{k}/history.csv").read_text() == (
            cv_cls / f"fold-{k}/history.csv").read_text()
