"""Fold ensembles (a ``breastus cv`` folder opened as one model) and test-time augmentation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import make_dataset, run_cli

FOLDS = 2
TINY_CLS = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--batch-size", "16",
            "--epochs", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def cv_data(synth_data, tmp_path_factory) -> Path:
    """A private copy of the session dataset, split into 2 folds."""
    data = Path(shutil.copytree(synth_data, tmp_path_factory.mktemp("ens") / "cvdata"))
    proc = run_cli("split", str(data), "--folds", str(FOLDS))
    assert proc.returncode == 0, proc.stderr
    return data


@pytest.fixture(scope="module")
def cv_dir(cv_data, tmp_path_factory) -> Path:
    """A tiny 2-fold classification CV (smallcnn, 32 px, 1 epoch), thresholds on validation:
    the folder 'breastus cv cls' writes (cv.json, fold-K runs evaluated on their fold), made
    fold by fold with train-cls --fold K and evaluate --target-sensitivity."""
    from breastus_cli.atomic import write_json
    from breastus_cli.engine.runs.rundir import data_record

    out = tmp_path_factory.mktemp("ens") / "cv"
    for k in range(FOLDS):
        run = out / f"fold-{k}"
        proc = run_cli("train-cls", str(cv_data), *TINY_CLS, "--fold", str(k),
                       "--run-dir", str(run))
        assert proc.returncode == 0, proc.stderr
        proc = run_cli("evaluate", str(run), "--target-sensitivity", "0.8", "--bootstrap", "0")
        assert proc.returncode == 0, proc.stderr
    record = data_record(cv_data, 0)
    write_json(out / "cv.json", {"task": "cls", "data": str(cv_data.resolve()), "folds": FOLDS,
                                 "train": {}, "target_sensitivity": 0.8, "n_bootstrap": 0,
                                 "seg_cv": None, "splits_sha256": record["splits_sha256"],
                                 "split_sha256": record["split_sha256"]})
    return out


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """Another synthetic dataset (other cases, other manifest): the external set."""
    return make_dataset(tmp_path_factory.mktemp("other"), cases=24, seed=99, sides=(64, 96),
                        ratio=(0.5, 0.25, 0.25), split_seed=3, folds=2)


def _batch(n: int = 5, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype(np.float32)


def _folds(cv: Path) -> list[Path]:
    return [cv / f"fold-{k}" for k in range(FOLDS)]


def test_ensemble_output_is_the_mean_of_the_fold_models(cv_dir):
    from breastus_cli.engine.apply.inference import open_run

    x = _batch()
    ensemble = open_run(cv_dir, "cls")
    each = [open_run(fold, "cls").run(x) for fold in _folds(cv_dir)]
    assert not np.allclose(each[0], each[1])  # two different models: the mean is a real test
    np.testing.assert_allclose(ensemble.run(x), np.mean(each, axis=0), rtol=1e-5)
    assert ensemble.task == "cls" and ensemble.size == 32 and ensemble.source == cv_dir
    assert ensemble.members == _folds(cv_dir)
    fold_thresholds = [json.loads((f / "threshold.json").read_text())["threshold"]
                       for f in _folds(cv_dir)]
    assert ensemble.threshold == pytest.approx(float(np.median(fold_thresholds)))
    assert ensemble.decision.source.startswith(
        f"median of {FOLDS} fold thresholds, each chosen on its fold's validation cases")


def test_tta_flip_is_the_mean_over_the_mirror_image(cv_dir):
    from breastus_cli.engine.apply.ensemble import with_tta
    from breastus_cli.engine.apply.inference import open_run

    x = _batch(seed=1)
    for source in (cv_dir / "fold-0", cv_dir):  # a single run and an ensemble alike
        plain = open_run(source, "cls")
        flipped = with_tta(plain, "flip")
        assert flipped.tta == "flip" and open_run(source, "cls", tta="flip").tta == "flip"
        expected = (plain.run(x) + plain.run(np.ascontiguousarray(x[:, :, ::-1]))) / 2
        np.testing.assert_allclose(flipped.run(x), expected, rtol=1e-5)
        assert not np.allclose(flipped.run(x), plain.run(x))
    assert with_tta(plain, "none") is plain


def test_tta_flip_flips_a_segmenters_map_back():
    from breastus_cli.engine.apply.ensemble import with_tta
    from breastus_cli.engine.apply.loaded_run import LoadedRun

    ramp = np.linspace(0.0, 1.0, 16, dtype=np.float32)[None, None, :, None]

    def run(images):  # not mirror-symmetric: weights the right side of the image more
        return np.asarray(images, np.float32) / 255.0 * ramp

    seg = LoadedRun("seg", 16, run, Path("fake"))
    x = _batch(3, 16, seed=2)
    expected = (run(x) + run(x[:, :, ::-1])[:, :, ::-1]) / 2
    np.testing.assert_allclose(with_tta(seg, "flip").run(x), expected, rtol=1e-5)
    # the flip is undone: the mean map of a mirrored image is the mirrored mean map
    np.testing.assert_allclose(with_tta(seg, "flip").run(x[:, :, ::-1]), expected[:, :, ::-1],
                               rtol=1e-5)
    with pytest.raises(Exception, match="--tta"):
        with_tta(seg, "rotate")


def test_predict_with_a_cv_folder_records_every_fold_model(cv_dir, other_data, tmp_path):
    from breastus_cli.data.manifest import file_sha256

    images = sorted((other_data / "images").rglob("*.png"))[:6] or sorted(
        other_data.rglob("*.png"))[:6]
    scans = tmp_path / "scans"
    scans.mkdir()
    for image in images:
        shutil.copyfile(image, scans / image.name)
    out = tmp_path / "out"
    proc = run_cli("predict", str(scans), "--cls-run", str(cv_dir), "--tta", "flip",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == len(images)
    assert rows["p_malignant"].between(0, 1).all()
    record = json.loads((out / "predict.json").read_text())
    assert record["tta"] == "flip"
    models = record["models"]["cls"]
    assert models["ensemble"] is True and models["path"] == str(cv_dir.resolve())
    assert [m["sha256"] for m in models["folds"]] == [
        file_sha256(f / "model.keras") for f in _folds(cv_dir)]
    assert models["sha256"]
    # the ensemble's threshold (the median of the folds') labels the rows
    from breastus_cli.engine.apply.inference import open_run

    assert rows["threshold"].iloc[0] == pytest.approx(open_run(cv_dir, "cls").threshold)
    # --resume with another tta is refused, like another model
    proc = run_cli("predict", str(scans), "--cls-run", str(cv_dir), "--out", str(out),
                   "--resume")
    assert proc.returncode == 2 and "--tta flip -> none" in proc.stderr


def test_evaluate_ensemble_refuses_the_cvs_own_data(cv_dir, cv_data, synth_data):
    # the same folder, and another folder holding the same manifest: both refused
    for data in (cv_data, synth_data):
        proc = run_cli("evaluate", str(cv_dir), "--ensemble", "--data", str(data),
                       "--split", "all")
        assert proc.returncode == 2, proc.stderr
        assert "cross-validated on" in proc.stderr and "seen every case" in proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run_cli("evaluate", str(cv_dir), "--ensemble", "--split", "all")
    assert proc.returncode == 2 and "--data" in proc.stderr
    assert not list(cv_dir.glob("eval-ensemble-*"))


def test_evaluate_ensemble_on_another_dataset(cv_dir, other_data):
    from breastus_cli.engine.apply.inference import open_run

    proc = run_cli("evaluate", str(cv_dir), "--ensemble", "--data", str(other_data),
                   "--split", "all", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    out = cv_dir / f"eval-ensemble-{other_data.name}-all"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["auc"] <= 1
    assert metrics["tta"] == "none"
    assert metrics["ensemble"]["folds"] == [str(f.resolve()) for f in _folds(cv_dir)]
    assert metrics["threshold_source"].startswith(f"median of {FOLDS} fold thresholds")
    assert (out / "report.md").is_file()
    frame = pd.read_csv(out / "predictions.csv")
    manifest = pd.read_csv(other_data / "manifest.csv")
    assert len(frame) == int(manifest["label"].isin(["benign", "malignant"]).sum())
    assert metrics["auc"] == pytest.approx(skm.roc_auc_score(frame["y_true"],
                                                             frame["p_malignant"]), abs=1e-4)
    # the scores are the ensemble's: the mean of the fold models on these images
    paths = [str(other_data / i) for i in manifest.set_index("case_id")
             .loc[frame["case_id"], "image"]]
    p = open_run(cv_dir, "cls").run_files(paths)[:, 1]
    np.testing.assert_allclose(frame["p_malignant"], p, atol=2e-6)
    # without --ensemble a CV folder is still its folds, run by run
    assert not (cv_dir / "eval-all").exists()


def test_a_cv_with_an_unfinished_fold_is_refused(cv_dir, other_data, tmp_path):
    cv = Path(shutil.copytree(cv_dir, tmp_path / "cv"))
    config = json.loads((cv / "fold-1/config.json").read_text())
    config["status"] = "running"
    (cv / "fold-1/config.json").write_text(json.dumps(config))
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copyfile(next(other_data.rglob("*.png")), scans / "a.png")
    proc = run_cli("predict", str(scans), "--cls-run", str(cv), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "fold-1 has not finished" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = run_cli("evaluate", str(cv), "--ensemble", "--data", str(other_data),
                   "--split", "all")
    assert proc.returncode == 2 and "fold-1 has not finished" in proc.stderr


def test_folds_trained_differently_or_without_export_are_refused(cv_dir, tmp_path):
    from breastus_cli.engine.apply.inference import open_run
    from breastus_cli.errors import InputError

    cv = Path(shutil.copytree(cv_dir, tmp_path / "cv"))
    with pytest.raises(InputError, match="fold-0 of the fold ensemble .* no TFLite export"):
        open_run(cv, "cls", engine="tflite")
    config = json.loads((cv / "fold-1/config.json").read_text())
    config["settings"]["img_size"] = 64
    (cv / "fold-1/config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="fold-1 differs from fold-0 in input size"):
        open_run(cv, "cls")
