"""`breastus cv seg`, lesion-centred and fused cross-validation built on a segmentation CV,
and a segmentation CV used as its fold ensemble."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import FAST_CLS, copy_run, run_cli


def test_cv_seg_pools_dice(cv_seg):
    out = cv_seg
    summary = json.loads((out / "summary.json").read_text())
    per_case = pd.read_csv(out / "oof_per_case.csv")
    assert summary["metrics"]["dice"]["pooled"] == pytest.approx(per_case["dice"].mean())
    assert summary["metrics"]["iou"]["pooled"] == pytest.approx(per_case["iou"].mean())
    assert per_case["case_id"].is_unique

def test_lesion_centred_cv_takes_crops_from_the_same_folds_segmenter(learn_data, cv_seg,
                                                                      tmp_path):
    out = tmp_path / "roi"
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
                   "--roi", "mask", "--seg-cv", str(cv_seg), "--out", str(out),
                   "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    for k in range(3):
        metrics = json.loads((out / f"fold-{k}/eval-test/metrics.json").read_text())
        assert metrics["roi"]["crops_from"] == f"segmentation run {cv_seg / f'fold-{k}'}"
        # the crops come from the masks as the fold's segmenter post-processes them
        chosen = json.loads((cv_seg / f"fold-{k}" / "postprocess.json").read_text())
        assert metrics["roi"]["mask_postprocess"] == chosen["method"]
    summary = json.loads((out / "summary.json").read_text())
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == oof["case_id"].nunique() == summary["n"]
    assert summary["crops_from"].endswith(str(cv_seg.resolve()))
    assert summary["lesion_found"] == int(oof["lesion_found"].sum())
    gt = summary["ground_truth_roi"]
    assert gt["auc"]["pooled"] == pytest.approx(
        skm.roc_auc_score(oof["y_true"], oof["p_malignant_gt_roi"]))
    assert summary["metrics"]["auc"]["pooled"] == pytest.approx(
        skm.roc_auc_score(oof["y_true"], oof["p_malignant"]))
    assert gt["sensitivity"]["pooled"] == pytest.approx(
        skm.recall_score(oof["y_true"], oof["y_pred_gt_roi"]))
    assert "ground-truth crops" in (out / "summary.md").read_text()

    # another segmentation CV of the same folds (here a copy, so the same masks): the finished
    # CV is scored again with its crops, nothing retrained; a second run has nothing to do
    seg2 = tmp_path / "seg2"
    shutil.copytree(cv_seg, seg2)
    histories = [(out / f"fold-{k}/history.csv").read_text() for k in range(3)]
    again = ["cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
             "--roi", "mask", "--seg-cv", str(seg2), "--out", str(out), "--bootstrap", "200"]
    proc = run_cli(*again)
    assert proc.returncode == 0, proc.stderr
    for k in range(3):
        assert (out / f"fold-{k}/history.csv").read_text() == histories[k]
        metrics = json.loads((out / f"fold-{k}/eval-test/metrics.json").read_text())
        assert metrics["roi"]["crops_from"] == f"segmentation run {seg2.resolve() / f'fold-{k}'}"
    assert json.loads((out / "cv.json").read_text())["seg_cv"] == str(seg2.resolve())
    rescored = json.loads((out / "summary.json").read_text())
    assert rescored["crops_from"].endswith(str(seg2.resolve()))
    assert rescored["metrics"]["auc"]["pooled"] == pytest.approx(
        summary["metrics"]["auc"]["pooled"])
    stamps = [(out / f"fold-{k}/eval-test/metrics.json").stat().st_mtime_ns for k in range(3)]
    assert run_cli(*again).returncode == 0
    assert stamps == [(out / f"fold-{k}/eval-test/metrics.json").stat().st_mtime_ns
                      for k in range(3)]

def test_seg_cv_is_checked_before_any_training(learn_data, cv_seg, cv_cls, tmp_path):
    whole = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
                    "--seg-cv", str(cv_seg), "--out", str(tmp_path / "a"))
    assert whole.returncode == 2 and "--roi mask" in whole.stderr
    not_seg = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
                      "--roi", "mask", "--seg-cv", str(cv_cls), "--out", str(tmp_path / "b"))
    assert not_seg.returncode == 2 and "'cls' cross-validation" in not_seg.stderr
    other = tmp_path / "other"
    shutil.copytree(cv_seg, other)
    plan = json.loads((other / "cv.json").read_text())
    plan["folds"] = 5
    (other / "cv.json").write_text(json.dumps(plan))
    mismatch = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "1",
                       "--roi", "mask", "--seg-cv", str(other), "--out", str(tmp_path / "c"))
    assert mismatch.returncode == 2 and "other data or folds" in mismatch.stderr
    assert not (tmp_path / "c" / "fold-0").exists()

def test_write_results_reports_the_pooled_numbers(cv_cls, cv_seg, tmp_path):
    import subprocess
    import sys

    commands = tmp_path / "commands.sh"
    commands.write_text("breastus cv cls data --folds 3\n"
                        f"breastus prepare {tmp_path}/BrEaST --out {cv_cls.parent}/data\n")
    out = tmp_path / "RESULTS.md"
    script = Path(__file__).resolve().parents[1] / "examples" / "write_results.py"
    proc = subprocess.run([sys.executable, str(script), str(out), "--seconds", "90",
                           "--commands", str(commands), "--data-dir", f"{tmp_path}/BrEaST",
                           "--work-dir", str(cv_cls.parent), f"small CNN={cv_cls}",
                           f"U-Net={cv_seg}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    cls = json.loads((cv_cls / "summary.json").read_text())
    seg = json.loads((cv_seg / "summary.json").read_text())
    auc = cls["metrics"]["auc"]
    assert f"{auc['pooled']:.3f} ({auc['ci'][0]:.3f}–{auc['ci'][1]:.3f})" in text
    assert f"Dice {seg['metrics']['dice']['pooled']:.3f}" in text
    # each fold chose its mask post-processing on its own validation cases; the row says so
    assert all((cv_seg / f"fold-{k}" / "postprocess.json").is_file() for k in range(3))
    assert "| U-Net (post-processing: largest component in " in text
    assert " of 3 folds (validation Dice " in text
    assert f"| always 'benign' (majority class) | {cls['majority_baseline_accuracy']:.3f}" in text
    assert "Wall time of the whole script: 1.5 minutes." in text
    assert "breastus cv cls data --folds 3" in text
    # paths relative to the folders given, never this machine's absolute paths
    assert "breastus prepare $BREAST --out $WORK/data" in text and "`$WORK/cls`" in text
    assert str(tmp_path) not in text and str(cv_cls.parent) not in text
    assert "IoU 0.629" in text  # the reference study's number beside
    missing = subprocess.run([sys.executable, str(script), str(out), f"x={tmp_path}"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "no summary.json" in missing.stderr

def test_fusion_added_to_a_finished_cv_fits_without_retraining(learn_data, cv_cls, cv_seg,
                                                               tmp_path):
    """--fusion descriptors on a finished cross-validation: each fold's CNN is kept (history
    untouched), its fused model fitted (descriptors on training cases' ground-truth masks, the
    combination on validation), and CNN / descriptors / fused pooled side by side."""
    out = tmp_path / "cv"
    shutil.copytree(cv_cls, out)
    proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                   "--lr", "1e-3", "--out", str(out), "--bootstrap", "300",
                   "--seg-cv", str(cv_seg), "--fusion", "descriptors")
    assert proc.returncode == 0, proc.stderr
    for k in range(3):
        assert (out / f"fold-{k}/history.csv").read_text() == (
            cv_cls / f"fold-{k}/history.csv").read_text()
        fused = json.loads((out / f"fold-{k}/fusion.json").read_text())
        assert "training cases" in fused["fitted_on"]["descriptor_model"]
        assert "validation cases" in fused["fitted_on"]["combiner"]
        assert set(fused["descriptor_weights"]) >= {"solidity", "circularity", "log_area_mm2"}
        metrics = json.loads((out / f"fold-{k}/eval-test/metrics.json").read_text())
        assert metrics["fusion"]["masks_from"] == f"segmentation run {cv_seg / f'fold-{k}'}"
        assert metrics["fusion"]["mask_postprocess"] == json.loads(
            (cv_seg / f"fold-{k}" / "postprocess.json").read_text())["method"]
        assert (out / f"fold-{k}/eval-test/descriptors.csv").is_file()
    oof = pd.read_csv(out / "oof_predictions.csv")
    fusion = json.loads((out / "summary.json").read_text())["fusion"]
    for name, column in (("cnn", "p_malignant"), ("descriptors", "p_descriptors"),
                         ("fused", "p_fused"), ("fused_gt_mask", "p_fused_gt_mask")):
        assert fusion[name]["auc"]["pooled"] == pytest.approx(
            skm.roc_auc_score(oof["y_true"], oof[column]))
    assert fusion["fused"]["sensitivity"]["pooled"] == pytest.approx(
        skm.recall_score(oof["y_true"], oof["y_pred_fused"]))
    text = (out / "summary.md").read_text()
    assert "Fused classifier" in text and "oracle: upper bound" in text
    assert "| solidity |" in text
    # the plan now records the fusion: running it again trains and fits nothing
    plan = json.loads((out / "cv.json").read_text())
    assert plan["fusion"] == "descriptors" and plan["seg_cv"] == str(cv_seg.resolve())
    stamps = [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    again = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                    "--lr", "1e-3", "--out", str(out), "--bootstrap", "300",
                    "--seg-cv", str(cv_seg), "--fusion", "descriptors")
    assert again.returncode == 0, again.stderr
    assert stamps == [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    # a fold fused before the threshold rule changed (chosen on the combiner's own fitted
    # validation scores): fitted and scored again on resuming, nothing retrained
    metrics_file = out / "fold-1/eval-test/metrics.json"
    old = json.loads(metrics_file.read_text())
    old["fusion"]["fitted_on"]["threshold"] = "chosen on validation cases for target sensitivity 0.9"
    del old["fusion"]["fitted_on"]["threshold_rule"]  # a file that old has no rule field
    metrics_file.write_text(json.dumps(old))
    again = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                    "--lr", "1e-3", "--out", str(out), "--bootstrap", "300",
                    "--seg-cv", str(cv_seg), "--fusion", "descriptors")
    assert again.returncode == 0, again.stderr
    now = [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    assert now[0] == stamps[0] and now[2] == stamps[2] and now[1] != stamps[1]
    assert (out / "fold-1/history.csv").read_text() == (cv_cls / "fold-1/history.csv").read_text()
    refit = json.loads(metrics_file.read_text())["fusion"]["fitted_on"]["threshold"]
    assert "cross-fitted" in refit or refit.startswith("default")
    rule = json.loads(metrics_file.read_text())["fusion"]["fitted_on"]["threshold_rule"]
    assert rule in ("cross_fitted", "default")  # the field written on the refit
    stamps = now
    # and the first command again (without --fusion, as a resumed script repeats it): the
    # same training, so nothing is refused, retrained or refitted, and the fusion stays
    plain = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                    "--lr", "1e-3", "--out", str(out), "--bootstrap", "300")
    assert plain.returncode == 0, plain.stderr
    assert stamps == [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    assert json.loads((out / "cv.json").read_text())["fusion"] == "descriptors"
    assert "fusion" in json.loads((out / "summary.json").read_text())

    # RESULTS.md's fused, descriptor and TTA sections (examples/write_results.py)
    import subprocess
    import sys

    for k in range(3):
        assert run_cli("evaluate", str(out / f"fold-{k}"), "--tta", "flip",
                       "--bootstrap", "0").returncode == 0
        assert (out / f"fold-{k}/eval-test/metrics.json").is_file()  # the plain one is kept
    results = tmp_path / "RESULTS.md"
    script = Path(__file__).resolve().parents[1] / "examples" / "write_results.py"
    proc = subprocess.run([sys.executable, str(script), str(results), "--descriptors",
                           str(cv_seg), "--tta", f"small CNN={out}", f"small CNN={out}",
                           f"other CNN={out}", f"U-Net={cv_seg}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    fused_auc = fusion["fused"]["auc"]
    assert (f"| small CNN + lesion descriptors, fused (segmenter's masks) | "
            f"{_pooled(fusion['fused']['accuracy'])} | {_pooled(fused_auc)} |") in text
    assert "lesion descriptors alone (ground-truth masks: upper bound" in text
    # two fused CVs on the same segmentation folds: one descriptor model, its rows written once
    table = text.split("## Goals")[0]
    assert "| other CNN + lesion descriptors, fused (segmenter's masks) |" in table
    assert table.count("| lesion descriptors alone (logistic regression; segmenter's masks) |") == 1
    assert "## Lesion descriptors, one at a time" in text and "| solidity |" in text
    tta = pd.concat([pd.read_csv(out / f"fold-{k}/eval-test-tta-flip/predictions.csv")
                     for k in range(3)])
    assert f"| with flip TTA | {skm.roc_auc_score(tta['y_true'], tta['p_malignant']):.3f} |" \
        in text
    assert "Fold ensembles" in text

    # a second classifier on the same folds (here the CV's own originals): fold K's fusion takes
    # fold K's score too, refitted without retraining; the first command again keeps it
    partner_cv = ["--fusion", "descriptors", "--seg-cv", str(cv_seg), "--fuse-with-cv"]
    base = ["cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3", "--lr",
            "1e-3", "--out", str(out), "--bootstrap", "300"]
    refused = run_cli(*base, *partner_cv, str(cv_seg))
    assert refused.returncode == 2 and "is a 'seg' cross-validation" in refused.stderr
    proc = run_cli(*base, *partner_cv, str(cv_cls))
    assert proc.returncode == 0, proc.stderr
    for k in range(3):
        assert (out / f"fold-{k}/history.csv").read_text() == (
            cv_cls / f"fold-{k}/history.csv").read_text()
        fused = json.loads((out / f"fold-{k}/fusion.json").read_text())
        assert Path(fused["partner"]["path"]).parts[-1] == f"fold-{k}"
        assert list(fused["combiner_weights"]) == ["cnn", "descriptors", "partner"]
    oof = pd.read_csv(out / "oof_predictions.csv")
    pooled = json.loads((out / "summary.json").read_text())["fusion"]
    assert pooled["partner"]["auc"]["pooled"] == pytest.approx(
        skm.roc_auc_score(oof["y_true"], oof["p_partner"]))
    assert pooled["fused"]["auc"]["pooled"] == pytest.approx(
        skm.roc_auc_score(oof["y_true"], oof["p_fused"]))
    assert "second classifier alone" in (out / "summary.md").read_text()
    stamps = [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    assert run_cli(*base).returncode == 0
    assert stamps == [(out / f"fold-{k}/fusion.json").stat().st_mtime_ns for k in range(3)]
    assert json.loads((out / "cv.json").read_text())["fuse_with_cv"] == str(cv_cls.resolve())


def _pooled(row: dict) -> str:
    return f"{row['pooled']:.3f} ({row['ci'][0]:.3f}–{row['ci'][1]:.3f})"

def test_a_segmentation_cv_predicts_and_evaluates_as_its_fold_ensemble(cv_seg, learn_data,
                                                                        synth_data, tmp_path):
    """A 'cv seg' folder as one segmenter: the mean of its fold models' probability maps, in
    predict and in evaluate --ensemble on another dataset (never on its own)."""
    cv_seg = copy_run(cv_seg, tmp_path / "cv-seg")  # evaluate writes into it
    from breastus_cli.engine.apply.inference import open_run

    scans = tmp_path / "scans"
    scans.mkdir()
    rels = list(pd.read_csv(learn_data / "manifest.csv")["image"][:3])
    for rel in rels:
        (scans / Path(rel).name).write_bytes((learn_data / rel).read_bytes())
    out = tmp_path / "pred"
    proc = run_cli("predict", str(scans), "--seg-run", str(cv_seg), "--out", str(out),
                   "--save-masks")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "predict.json").read_text())
    assert [Path(f["path"]).name for f in record["models"]["seg"]["folds"]] == [
        "fold-0", "fold-1", "fold-2"]
    ensemble = open_run(cv_seg, "seg")
    folds = [open_run(cv_seg / f"fold-{k}", "seg") for k in range(3)]
    batch = np.random.default_rng(1).uniform(0, 255, (2, ensemble.size, ensemble.size, 1))
    batch = batch.astype(np.float32)
    np.testing.assert_allclose(ensemble.run(batch), np.mean([f.run(batch) for f in folds], 0),
                               rtol=1e-5, atol=1e-6)
    own = run_cli("evaluate", str(cv_seg), "--ensemble", "--data", str(learn_data),
                  "--split", "all")
    assert own.returncode == 2
    other = run_cli("evaluate", str(cv_seg), "--ensemble", "--data", str(synth_data),
                    "--split", "all", "--bootstrap", "100")
    assert other.returncode == 0, other.stderr
    result = cv_seg / f"eval-ensemble-{synth_data.name}-all"
    metrics = json.loads((result / "metrics.json").read_text())
    per_case = pd.read_csv(result / "per_case.csv")
    assert metrics["dice"] == pytest.approx(per_case["dice"].mean())
