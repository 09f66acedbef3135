"""A run remembers what it trained on (issue 11): the split a run trained on is checked before
evaluate, resume, int8 calibration and cv; one decision-threshold rule; ground-truth lesion crops
labelled as an oracle; a failing export keeps the previous one.

Tiny data and in-process calls (``breastus_cli.cli.app.main``): one 1-epoch smallcnn at 32 px."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from breastus_cli.cli.app import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``breastus ARGS`` in this process: (exit code, stdout, stderr with lines joined)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def resplit(data: Path, seed: int, folds: int | None = None) -> None:
    from breastus_cli.data.split import SplitSettings, split_dataset

    split_dataset(SplitSettings(data=data, seed=seed, folds=folds))


@pytest.fixture(scope="module")
def tiny(synth_data, tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run): a copy of synth_data split with 2 folds (seed 42) and a 1-epoch run."""
    from breastus_cli.engine.runs.settings import ClsSettings
    from breastus_cli.engine.training.tasks import ClassificationTask
    from breastus_cli.engine.training.train import train

    root = tmp_path_factory.mktemp("safety")
    data = root / "data"
    shutil.copytree(synth_data, data)
    resplit(data, 42, folds=2)
    run = root / "run"
    train(ClsSettings(data=data, run_dir=run, model="smallcnn", weights="none", img_size=32,
                      epochs=1, batch_size=16, lr=1e-3, cache="none"), ClassificationTask())
    return data, run


def own_copy(tiny: tuple[Path, Path], tmp_path: Path, **config_changes) -> tuple[Path, Path]:
    """A copy of the dataset and of the run, the run's config.json pointing at the copy."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny[0], data)
    shutil.copytree(tiny[1], run)
    config = json.loads((run / "config.json").read_text())
    config["data"]["path"] = str(data.resolve())
    config["settings"]["data"] = str(data)
    for key, value in config_changes.items():
        config[key] = value
    (run / "config.json").write_text(json.dumps(config))
    return data, run


# ---- the run records its split ----------------------------------------------------------------
def test_config_records_the_manifest_and_the_splits(tiny):
    from breastus_cli.data.manifest import file_sha256

    data, run = tiny
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert recorded["manifest_sha256"] == file_sha256(data / "manifest.csv")
    assert recorded["splits_sha256"] == file_sha256(data / "splits.csv")
    assert recorded["fold"] is None
    assert len(recorded["split_sha256"]) == 64


def test_evaluate_after_a_resplit_is_refused_naming_the_run_and_the_change(tiny, tmp_path,
                                                                           capsys):
    data, run = own_copy(tiny, tmp_path)
    code, _, err = cli(capsys, "evaluate", str(run), "--bootstrap", "0")
    assert code == 0, err
    before = (run / "eval-test" / "metrics.json").read_text()
    resplit(data, seed=7, folds=2)  # another seed: other cases are "test" now
    code, _, err = cli(capsys, "evaluate", str(run), "--bootstrap", "0")
    assert code == 2, err
    assert str(run) in err and "splits.csv" in err and "re-split" in err
    assert "Traceback" not in err
    assert (run / "eval-test" / "metrics.json").read_text() == before  # nothing rescored
    # --data naming the same dataset (another path to it) is the same dataset
    code, _, err = cli(capsys, "evaluate", str(run), "--data", str(data), "--split", "val",
                       "--bootstrap", "0")
    assert code == 2 and "re-split" in err


def test_the_same_split_written_again_or_with_folds_added_still_evaluates(tiny, tmp_path,
                                                                          capsys):
    data, run = own_copy(tiny, tmp_path)
    resplit(data, seed=42)  # the same train/val/test, the fold column dropped
    code, _, err = cli(capsys, "evaluate", str(run), "--bootstrap", "0")
    assert code == 0, err


def test_split_all_on_another_dataset_needs_no_folds_nor_splits(tiny, tmp_path, capsys):
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    # a fold run evaluated on a foreign dataset that was never split
    data, run = own_copy(tiny, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["settings"]["fold"] = 0
    config["data"]["fold"] = 0
    (run / "config.json").write_text(json.dumps(config))
    make_synthetic_breast(SynthSettings(out=tmp_path / "src", cases=12, seed=3, min_side=64,
                                        max_side=80))
    other = tmp_path / "other"
    prepare(PrepareSettings(source=tmp_path / "src", out=other))
    assert not (other / "splits.csv").exists()
    code, _, err = cli(capsys, "evaluate", str(run), "--data", str(other), "--split", "all",
                       "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-other-all" / "metrics.json").read_text())
    import pandas as pd

    labels = pd.read_csv(other / "manifest.csv")["label"]
    assert metrics["n"] == int(labels.isin(["benign", "malignant"]).sum())
    # the run's own dataset re-split: --split all scores every case, no split question
    resplit(data, seed=9, folds=2)
    code, _, err = cli(capsys, "evaluate", str(run), "--split", "all", "--bootstrap", "0")
    assert code == 0, err


def test_the_threshold_note_follows_the_cases_it_was_chosen_on(tiny, tmp_path, capsys):
    """A threshold chosen on validation cases is optimistic on any split holding those cases
    (chosen now with --target-sensitivity, or earlier: threshold.json), and only there: another
    dataset's cases never took part in choosing the run's threshold."""
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    data, run = own_copy(tiny, tmp_path)
    # chosen now, on the validation cases that --split all would report on: refused
    code, _, err = cli(capsys, "evaluate", str(run), "--split", "all", "--target-sensitivity",
                       "0.9", "--bootstrap", "0")
    assert code == 2 and "use --split test" in err
    code, _, err = cli(capsys, "evaluate", str(run), "--target-sensitivity", "0.9",
                       "--bootstrap", "0")
    assert code == 0, err
    assert "threshold_note" not in json.loads((run / "eval-test" / "metrics.json").read_text())
    # threshold.json's, on this dataset's every case: the validation cases are among them
    code, _, err = cli(capsys, "evaluate", str(run), "--split", "all", "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-all" / "metrics.json").read_text())
    assert "optimistic" in metrics.get("threshold_note", "")
    assert "optimistic" in (run / "eval-all" / "report.md").read_text()
    # another hospital's cases, scored with the threshold.json chosen on this dataset: honest
    make_synthetic_breast(SynthSettings(out=tmp_path / "src", cases=12, seed=3, min_side=64,
                                        max_side=80))
    other = tmp_path / "other"
    prepare(PrepareSettings(source=tmp_path / "src", out=other))
    code, _, err = cli(capsys, "evaluate", str(run), "--data", str(other), "--split", "all",
                       "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-other-all" / "metrics.json").read_text())
    assert metrics["threshold_source"].startswith("chosen on validation")
    assert "threshold_note" not in metrics
    report = " ".join((run / "eval-other-all" / "report.md").read_text().split())
    assert "optimistic" not in report and "including any the run trained on" not in report
    assert "another dataset than the run trained on" in report


def test_resume_after_a_resplit_is_refused(tiny, tmp_path, capsys):
    data, run = own_copy(tiny, tmp_path, status="running")
    resplit(data, seed=7)
    code, _, err = cli(capsys, "train-cls", "--resume", str(run))
    assert code == 2, err
    assert str(run) in err and "splits.csv" in err


def test_int8_export_calibration_after_a_resplit_is_refused(tiny, tmp_path, capsys):
    data, run = own_copy(tiny, tmp_path)
    resplit(data, seed=7)
    code, _, err = cli(capsys, "export", str(run), "--quantize", "int8")
    assert code == 2, err
    assert str(run) in err and "splits.csv" in err
    assert not (run / "export").exists()


def test_cv_resume_and_seg_cv_after_a_resplit_are_refused(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny[0], data)
    fast = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--folds", "2"]
    code, _, err = cli(capsys, "cv", "cls", str(data), *fast, "--out", str(tmp_path / "cv"),
                       "--slurm", "--dry-run")
    assert code == 0, err
    code, _, err = cli(capsys, "cv", "seg", str(data), "--weights", "none", "--img-size", "32",
                       "--folds", "2", "--out", str(tmp_path / "segcv"), "--slurm", "--dry-run")
    assert code == 0, err
    resplit(data, seed=7, folds=2)
    # resuming the CV: its finished folds were cut from the old folds
    code, _, err = cli(capsys, "cv", "cls", str(data), *fast, "--out", str(tmp_path / "cv"),
                       "--slurm", "--dry-run")
    assert code == 2, err
    assert str(tmp_path / "cv") in err and "splits.csv" in err
    code, _, err = cli(capsys, "cv", "fold", str(tmp_path / "cv"), "--index", "0")
    assert code == 2 and "splits.csv" in err, err
    # a segmentation CV on the old folds: its fold K segmenter saw this fold K's test cases
    code, _, err = cli(capsys, "cv", "cls", str(data), *fast, "--roi", "mask",
                       "--out", str(tmp_path / "cv2"), "--seg-cv", str(tmp_path / "segcv"),
                       "--slurm", "--dry-run")
    assert code == 2, err
    assert str(tmp_path / "segcv") in err and "splits.csv" in err
    assert not (tmp_path / "cv2").exists()


# ---- one threshold rule ------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["val", "all"])
def test_target_sensitivity_on_the_cases_it_reports_is_refused(tiny, tmp_path, capsys, split):
    data, run = own_copy(tiny, tmp_path)
    code, _, err = cli(capsys, "evaluate", str(run), "--split", split, "--target-sensitivity",
                       "0.9", "--bootstrap", "0")
    assert code == 2, err
    assert "validation" in err and "--split test" in err
    assert not (run / "threshold.json").exists()
    assert not (run / f"eval-{split}").exists()


def test_read_threshold_one_rule(tmp_path):
    from breastus_cli.engine.runs.rundir import read_threshold
    from breastus_cli.errors import InputError

    (tmp_path / "config.json").write_text(json.dumps({"task": "cls", "threshold": 0.5}))
    t = read_threshold(tmp_path)
    assert (t.value, t.source) == (0.5, "default 0.5")
    (tmp_path / "threshold.json").write_text(json.dumps(
        {"threshold": 0.3125, "target_sensitivity": 0.9, "source": "validation split"}))
    t = read_threshold(tmp_path)
    assert t.value == 0.3125
    assert t.source == "chosen on validation cases for target sensitivity 0.9"
    (tmp_path / "threshold.json").write_text("{not json")
    with pytest.raises(InputError, match="threshold.json"):
        read_threshold(tmp_path)


def test_evaluate_predict_and_export_share_the_run_threshold(tiny, tmp_path, capsys):
    from breastus_cli.engine.export import export
    from breastus_cli.engine.apply.inference import open_run

    data, run = own_copy(tiny, tmp_path)
    code, _, err = cli(capsys, "evaluate", str(run), "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and metrics["threshold_source"] == "default 0.5"
    assert "default 0.5" in (run / "eval-test" / "report.md").read_text()
    code, _, err = cli(capsys, "evaluate", str(run), "--target-sensitivity", "0.9",
                       "--bootstrap", "0")
    assert code == 0, err
    chosen = json.loads((run / "threshold.json").read_text())
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    rule = "chosen on validation cases for target sensitivity 0.9"
    assert metrics["threshold"] == chosen["threshold"] and metrics["threshold_source"] == rule
    # later evaluations of the run, predict and export use the same threshold and say why
    code, _, err = cli(capsys, "evaluate", str(run), "--split", "val", "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert metrics["threshold"] == chosen["threshold"] and metrics["threshold_source"] == rule
    assert rule in (run / "eval-val" / "report.md").read_text()
    assert "optimistic" in metrics["threshold_note"]
    assert rule in (run / "eval-val" / "report.html").read_text()
    config = json.loads((run / "config.json").read_text())
    assert open_run(run, "cls").threshold == chosen["threshold"]  # what predict applies
    assert export._threshold(run, config) == (chosen["threshold"], rule)


# ---- lesion-centred classifiers: ground-truth crops are an oracle ---------------------------
def test_ground_truth_crops_are_labelled_an_oracle(tiny, tmp_path, capsys):
    data, run = own_copy(tiny, tmp_path, roi={"source": "mask", "margin": 0.2})
    plain = tmp_path / "plain"
    shutil.copytree(tiny[1], plain)
    code, out, err = cli(capsys, "evaluate", str(run), str(plain), "--bootstrap", "0")
    assert code == 0, err
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["roi_source"] == "ground-truth masks (oracle: upper bound)"
    report = (run / "eval-test" / "report.md").read_text()
    title = report.splitlines()[0]
    assert "oracle" in title
    assert "upper bound" in report and "--seg-run" in report
    assert "oracle" in (run / "eval-test" / "report.html").read_text()
    # the terminal tables: the result and the comparison row
    comparison = out[out.index("Comparison"):]
    assert "oracle" in comparison
    assert "roi_source" not in json.loads((plain / "eval-test" / "metrics.json").read_text())


# ---- export: a failing agreement check replaces nothing ------------------------------------
def test_failing_export_keeps_the_previous_one_and_force_keeps_it(tiny, tmp_path, capsys,
                                                                  monkeypatch):
    from breastus_cli.engine.export import export

    data, run = own_copy(tiny, tmp_path)
    code, _, err = cli(capsys, "export", str(run))
    assert code == 0, err
    model_file = run / "export" / "model.tflite"
    meta_file = run / "export" / "metadata.json"
    inode, meta = model_file.stat().st_ino, meta_file.read_text()
    monkeypatch.setitem(export.TOLERANCE, "none", -1.0)  # no export can pass
    code, _, err = cli(capsys, "export", str(run))
    assert code == 1, err
    assert "agree" in err and "--force" in err and "kept" in err
    assert model_file.stat().st_ino == inode and meta_file.read_text() == meta
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]
    code, _, err = cli(capsys, "export", str(run), "--force")
    assert code == 0, err
    assert model_file.stat().st_ino != inode
    assert json.loads(meta_file.read_text())["agreement"]["within_tolerance"] is False


def test_int8_has_a_label_agreement_tolerance(capsys):
    import numpy as np

    from breastus_cli.engine.export.export import INT8_MIN_LABEL_AGREEMENT, measure_agreement

    assert INT8_MIN_LABEL_AGREEMENT == 0.95
    reference = np.tile([[0.2, 0.8]], (20, 1))
    outputs = reference.copy()
    outputs[0] = [0.8, 0.2]  # one label of 20 flips: 95%
    result = measure_agreement(reference, outputs, "cls", 0.5, quantize="int8")
    assert result["min_label_agreement"] == 0.95 and result["within_tolerance"] is True
    outputs[1] = [0.8, 0.2]  # two: 90%
    result = measure_agreement(reference, outputs, "cls", 0.5, quantize="int8")
    assert result["within_tolerance"] is False
    # images on the threshold flip for noise: every probability within 0.02 passes
    border = np.tile([[0.499, 0.501]], (20, 1))
    nudged = border.copy()
    nudged[:4] = [0.502, 0.498]
    result = measure_agreement(border, nudged, "cls", 0.5, quantize="int8")
    assert result["label_agreement"] == 0.8 and result["within_tolerance"] is True
    code, out, _ = cli(capsys, "export", "--help")
    assert "95%" in " ".join(out.split())


def test_cv_summary_of_ground_truth_crops_is_labelled_an_oracle(tmp_path):
    import pandas as pd

    from breastus_cli.engine.orchestration.cv import summarize

    out = tmp_path / "cv"
    out.mkdir()
    (out / "cv.json").write_text(json.dumps({
        "task": "cls", "data": str(tmp_path), "folds": 2, "n_bootstrap": 0,
        "train": {"model": "smallcnn", "roi": "mask"}, "seg_cv": None}))
    for k in range(2):
        fold = out / f"fold-{k}"
        (fold / "eval-test").mkdir(parents=True)
        (fold / "config.json").write_text(json.dumps({"status": "finished", "result": {}}))
        y = [0, 1, 0, 1]
        pd.DataFrame({"case_id": [f"{k}{i}" for i in range(4)], "y_true": y,
                      "p_malignant": [0.2, 0.7, 0.4, 0.9], "y_pred": y}).to_csv(
            fold / "eval-test" / "predictions.csv", index=False)
        (fold / "eval-test" / "metrics.json").write_text(json.dumps({
            "auc": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0,
            "balanced_accuracy": 1.0, "threshold": 0.5, "threshold_source": "default 0.5"}))
    result = summarize(out)
    summary = result.summary
    from breastus_cli.reports.cv import write_summary

    write_summary(result)
    assert summary["roi_source"] == "ground-truth masks (oracle: upper bound)"
    assert summary["threshold_sources"] == ["default 0.5"]
    text = (out / "summary.md").read_text()
    assert "oracle" in text.splitlines()[0] and "upper bound" in text
    assert "Decision threshold per fold: default 0.5" in text
