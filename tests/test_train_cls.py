"""train-cls and evaluate, end to end on synthetic data (64x64, a few epochs), through the real
`breastus` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import FAST_CLS as FAST
from conftest import copy_run, run_cli



def test_train_writes_a_complete_run_directory(cls_run, learn_data):
    for name in ("config.json", "history.csv", "model.keras", "best.json", "train.log"):
        assert (cls_run / name).is_file(), name
    assert not (cls_run / "checkpoints").exists()  # removed once the run finished
    config = json.loads((cls_run / "config.json").read_text())
    prepare_json = json.loads((learn_data / "prepare.json").read_text())
    assert config["status"] == "finished" and config["task"] == "cls"
    assert config["data"]["manifest_sha256"] == prepare_json["manifest_sha256"]
    assert config["settings"]["lr"] == 1e-3 and config["settings"]["model"] == "smallcnn"
    assert config["settings"]["seed"] == 42
    assert {"python", "tensorflow", "tf_keras"} <= set(config["versions"])
    assert config["environment"]["host"] and "train-cls" in config["environment"]["command"]
    assert config["class_weight"]["1"] > config["class_weight"]["0"]  # malignant is rarer
    history = pd.read_csv(cls_run / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 11))
    assert {"loss", "auc", "val_loss", "val_auc", "lr", "seconds"} <= set(history.columns)
    best = json.loads((cls_run / "best.json").read_text())
    assert best["value"] == pytest.approx(history["val_auc"].max())
    assert "epoch 10/10" in (cls_run / "train.log").read_text()


def test_evaluate_writes_every_artifact_and_the_model_learned(cls_run, tmp_path):
    run = copy_run(cls_run, tmp_path / "run")
    proc = run_cli("evaluate", str(run))
    assert proc.returncode == 0, proc.stderr
    out = run / "eval-test"
    for name in ("predictions.csv", "metrics.json", "report.md", "report.html",
                 "confusion_matrix.png", "roc.png", "pr.png", "calibration.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "AUC" in proc.stdout and "Sensitivity" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # learning: cases the model never saw, clearly better than chance
    assert metrics["n"] >= 35
    assert metrics["auc"] >= 0.8, metrics["auc"]
    assert "breastus evaluate" in (out / "report.md").read_text().rsplit("Reproduce", 1)[1]


def test_metrics_json_agrees_with_sklearn_on_predictions_csv(cls_evaluated):
    metrics = json.loads((cls_evaluated / "eval-test/metrics.json").read_text())
    pred = pd.read_csv(cls_evaluated / "eval-test/predictions.csv")
    y, p = pred["y_true"].to_numpy(), pred["p_malignant"].to_numpy()
    y_hat = (p >= metrics["threshold"]).astype(int)
    assert (y_hat == pred["y_pred"]).all()
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, y_hat))
    assert metrics["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, y_hat))
    assert metrics["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-4)
    assert metrics["sensitivity"] == pytest.approx(skm.recall_score(y, y_hat))
    assert metrics["specificity"] == pytest.approx(skm.recall_score(y, y_hat, pos_label=0))
    assert metrics["precision"] == pytest.approx(skm.precision_score(y, y_hat, zero_division=0))
    assert metrics["f1"] == pytest.approx(skm.f1_score(y, y_hat))
    assert metrics["confusion_matrix"] == skm.confusion_matrix(y, y_hat).tolist()
    report = skm.classification_report(y, y_hat, output_dict=True, target_names=["benign", "malignant"])
    assert metrics["per_class"]["malignant"]["f1-score"] == pytest.approx(report["malignant"]["f1-score"])
    assert metrics["macro_avg"]["recall"] == pytest.approx(report["macro avg"]["recall"])
    lo, hi = metrics["ci"]["auc"]
    assert lo <= metrics["auc"] <= hi


def test_target_sensitivity_picks_the_threshold_on_validation(cls_run, tmp_path):
    from breastus_cli.engine.stats.metrics import threshold_for_sensitivity

    cls_run = copy_run(cls_run, tmp_path / "run")  # writes threshold.json: a private copy
    proc = run_cli("evaluate", str(cls_run), "--split", "val")
    assert proc.returncode == 0, proc.stderr
    val = pd.read_csv(cls_run / "eval-val/predictions.csv")
    expected = threshold_for_sensitivity(val["y_true"], val["p_malignant"], 0.9)
    proc = run_cli("evaluate", str(cls_run), "--target-sensitivity", "0.9")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((cls_run / "eval-test/metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(expected, abs=1e-5)
    assert metrics["validation_sensitivity"] >= 0.9
    assert "target sensitivity 0.9" in metrics["threshold_source"]


def test_resume_after_a_kill_finishes_with_every_epoch_once(learn_data, tmp_path):
    run = tmp_path / "run"
    exe = Path(sys.executable).with_name("breastus")
    # the small CNN: BackupAndRestore saves and restores any model the same way, and its short
    # epochs leave the kill many of them to land in (a MobileNetV2 took 43 s for this test)
    epochs = 10
    args = [str(exe), "train-cls", str(learn_data), *FAST, "--epochs", str(epochs),
            "--run-dir", str(run), "--cache", "none"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    history = run / "history.csv"
    while time.time() < deadline and proc.poll() is None:
        # after epoch 1 is fully on disk (history row and BackupAndRestore state): kill in epoch 2
        if (history.exists() and len(history.read_text().strip().splitlines()) >= 2
                and (run / "checkpoints" / "chief" / "checkpoint").is_file()):  # written last
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoints").is_dir()
    done = len(pd.read_csv(history))
    assert 1 <= done < epochs
    assert json.loads((run / "config.json").read_text())["status"] == "running"

    resumed = run_cli("train-cls", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    restored = int(resumed.stderr.split(f"resuming {run} after epoch ")[1].split()[0])
    assert f"resuming {run} after epoch {restored} of {epochs}" in resumed.stderr
    assert restored in (done - 1, done)  # a row written just before the kill runs again
    assert pd.read_csv(history)["epoch"].tolist() == list(range(1, epochs + 1))
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and len(config["resumes"]) == 1
    assert not (run / "checkpoints").exists()
    again = run_cli("train-cls", "--resume", str(run))
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_imagenet_weights_missing_offline_exit_2_with_the_file_name(learn_data, tmp_path):
    env = {"KERAS_HOME": str(tmp_path / "keras")}
    for extra, more_env in ((["--offline"], {}), ([], {"BREASTUS_OFFLINE": "1"})):
        proc = run_cli("train-cls", str(learn_data), "--img-size", "64", "--epochs", "1",
                       "--run-dir", str(tmp_path / "r"), *extra, env={**env, **more_env})
        assert proc.returncode == 2, proc.stderr
        assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in proc.stderr
        assert str(tmp_path / "keras" / "models") in proc.stderr
        assert "breastus weights download" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_imagenet_resolves_from_the_keras_cache_and_training_starts_from_it(synth_data,
                                                                              tmp_path):
    # where the weights come from is the point, not learning: the 60-case set is enough; the
    # file is written and the trained backbone compared in this process (no TensorFlow start-up)
    from breastus_cli import backend
    from breastus_cli.models.safe_load import load_keras_model
    from breastus_cli.models.weights import imagenet_file

    keras = backend.keras()
    keras_home = tmp_path / "keras"
    keras.utils.set_random_seed(123)
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(96, 96, 3))
    saved = keras_home / "models" / imagenet_file("mobilenetv2", 96).file_name
    saved.parent.mkdir(parents=True)
    base.save_weights(str(saved))  # what 'breastus weights download' would have put there
    want = base.get_weights()
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), "--weights", "imagenet", "--offline",
                   "--img-size", "96", "--epochs", "1", "--freeze-backbone", "--run-dir", str(run),
                   env={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["weights"]["backbone_file"] == str(saved)
    got = load_keras_model(run / "model.keras").get_layer("backbone").get_weights()
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_weights_from_a_run_directory_initialise_the_backbone(cls_run, learn_data, tmp_path):
    run = tmp_path / "finetuned"
    proc = run_cli("train-cls", str(learn_data), *FAST, "--weights", str(cls_run),
                   "--freeze-backbone", "--epochs", "1", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["weights"]["copied_from"] == str(cls_run / "model.keras")
    assert config["weights"]["tensors_copied"] > 0
    from breastus_cli.engine.apply.inference import load_model

    a = load_model(cls_run).get_layer("backbone").get_weights()
    b = load_model(run).get_layer("backbone").get_weights()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--lr", "-0.01"], "--lr must be a positive"),
     (["--img-size", "100"], "--img-size must be a multiple of 32"),
     (["--img-size", "16"], "--img-size must be a multiple of 32"),
     (["--model", "vgg16"], "--model must be one of"),
     (["--epochs", "0"], "--epochs must be at least 1"),
     (["--monitor", "val_f1"], "--monitor must be"),
     (["--devices", "two"], "--devices must be")],
)
def test_bad_options_exit_2_naming_the_option(learn_data, args, message, tmp_path):
    proc = run_cli("train-cls", str(learn_data), "--weights", "none", *args,
                   "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_refused(cls_run, learn_data):
    proc = run_cli("train-cls", str(learn_data), *FAST, "--epochs", "1", "--run-dir", str(cls_run))
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_two_logical_cpu_devices_with_mirrored_strategy(learn_data, tmp_path):
    run = tmp_path / "mirrored"
    # logical devices are fixed when TensorFlow starts: a fresh process
    proc = run_cli("train-cls", str(learn_data), *FAST, "--epochs", "1", "--devices", "2",
                   "--run-dir", str(run), subprocess=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["devices"] == 2


def test_mixed_precision_saves_a_float32_model_that_evaluates(learn_data, tmp_path,
                                                              monkeypatch):
    """--mixed-precision (float16 compute, a GPU's setting; forced here on the CPU, where
    float16 runs, slowly): the model.keras that evaluate and predict load is float32 (the safe
    loader refused the mixed-precision policies in its config), and the process's Keras policy
    is float32 again after training."""
    import zipfile

    from breastus_cli import backend
    from breastus_cli.engine.training import train as training

    from breastus_cli import api

    monkeypatch.setattr(training, "_has_gpu", lambda tf: True)
    run = tmp_path / "mixed"
    # through the Python API: the test helper run_cli resets the policy itself after a command
    api.train_cls(learn_data, model="smallcnn", weights="none", img_size=64, batch_size=16,
                  epochs=1, mixed_precision=True, run_dir=run)
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_float16"
    assert backend.keras().mixed_precision.global_policy().name == "float32"
    assert "mixed_float16" not in zipfile.ZipFile(run / "model.keras").read("config.json").decode()
    proc = run_cli("evaluate", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert (run / "eval-test" / "metrics.json").is_file()


def test_fold_runs_evaluate_and_aggregate(learn_data, tmp_path):
    parent = tmp_path / "cv"
    for fold in (0, 1):
        proc = run_cli("train-cls", str(learn_data), *FAST, "--epochs", "2", "--lr", "1e-3",
                       "--fold", str(fold), "--run-dir", str(parent / f"fold-{fold}"))
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("evaluate", str(parent))
    assert proc.returncode == 0, proc.stderr
    assert "Across 2 folds" in proc.stdout and "Comparison" in proc.stdout
    splits = pd.read_csv(learn_data / "splits.csv")
    for fold in (0, 1):
        pred = pd.read_csv(parent / f"fold-{fold}/eval-test/predictions.csv")
        expected = sorted(splits.loc[splits["fold"] == fold, "case_id"])
        assert sorted(pred["case_id"]) == expected  # the test split is the held-out fold


@pytest.mark.realdata
def test_real_breast_one_epoch(real_breast, tmp_path):
    """The real archive's prepared cases through training and evaluation (the model does not
    matter here: smallcnn)."""
    import shutil

    from breastus_cli.data.split import SplitSettings, split_dataset

    shutil.copytree(real_breast, tmp_path / "breast")
    split_dataset(SplitSettings(data=tmp_path / "breast", seed=42))
    proc = run_cli("train-cls", str(tmp_path / "breast"), "--model", "smallcnn", "--weights",
                   "none", "--img-size", "64", "--epochs", "1", "--run-dir",
                   str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["data"]["n_train"] == 201 and config["data"]["n_val"] == 25
    proc = run_cli("evaluate", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run/eval-test/metrics.json").read_text())
    assert metrics["n"] == 26 and metrics["n_malignant"] == 10


def test_tensorboard_logs_epoch_curves_into_the_run(learn_data, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(learn_data), *FAST, "--img-size", "32", "--epochs", "2",
                   "--tensorboard", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    events = sorted((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} >= {"train", "validation"}
    assert all(p.stat().st_size > 0 for p in events)
    assert json.loads((run / "config.json").read_text())["settings"]["tensorboard"] is True


def test_cosine_schedule_with_warmup_sets_each_epochs_learning_rate(learn_data, tmp_path):
    from breastus_cli.engine.runs.settings import learning_rate

    run = tmp_path / "run"
    proc = run_cli("train-cls", str(learn_data), *FAST, "--img-size", "32", "--epochs", "4",
                   "--lr", "1e-3", "--lr-schedule", "cosine", "--warmup-epochs", "1",
                   "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    history = pd.read_csv(run / "history.csv")
    expected = [learning_rate(e, 1e-3, 4, "cosine", 1) for e in range(4)]
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-5)
    assert expected[0] == pytest.approx(1e-3) and expected[1] < 1e-3 and expected[-1] < 1e-4
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert settings["lr_schedule"] == "cosine" and settings["warmup_epochs"] == 1


def test_schedule_options_are_checked_before_training(learn_data, tmp_path):
    for args, words in ((["--lr-schedule", "step"], "--lr-schedule must be"),
                        (["--warmup-epochs", "5", "--epochs", "5"], "--warmup-epochs must")):
        proc = run_cli("train-cls", str(learn_data), *FAST, *args, "--run-dir",
                       str(tmp_path / "r"))
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert not (tmp_path / "r").exists()
    # a sweep's shorter grid points are prefixes of one training: not under a schedule
    proc = run_cli("sweep", "cls", str(learn_data), *FAST, "--lr-schedule", "cosine",
                   "--out", str(tmp_path / "s"))
    assert proc.returncode == 2 and "--independent" in proc.stderr, proc.stderr
