"""Calibration as its own step (issue 30): ``breastus calibrate`` chooses on a run's validation
cases what evaluate used to choose as a side effect (threshold.json, postprocess.json,
fusion.json); ``evaluate`` without a calibrating option only reads the run; train-seg and
``evaluate --target-sensitivity`` call the step and say so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_run, run_cli


def _tree(run: Path) -> dict[str, str]:
    """SHA-256 of every file of ``run`` outside its own evaluation folders (``eval-*/``)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*"))
            if p.is_file() and not p.relative_to(run).parts[0].startswith("eval-")}


def _calibrated_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("calibrated ")]


def test_evaluate_leaves_every_file_of_a_segmenter_as_it_was(seg_run, tmp_path):
    """A segmenter without postprocess.json (trained before train-seg calibrated) is scored
    with its masks as predict would draw them, and nothing of the run changes: the choice is
    ``breastus calibrate``'s (before, evaluate wrote postprocess.json into the run)."""
    run = copy_run(seg_run, tmp_path / "unet")
    (run / "postprocess.json").unlink(missing_ok=True)
    before = _tree(run)
    proc = run_cli("evaluate", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert _tree(run) == before
    assert not (run / "postprocess.json").exists()
    metrics = json.loads((run / "eval-test/metrics.json").read_text())
    assert metrics["postprocess"] == "none"
    assert "'breastus calibrate RUN' chooses it" in metrics["postprocess_source"]
    assert not _calibrated_lines(proc.stderr)


def test_evaluate_leaves_every_file_of_a_classifier_as_it_was(cls_run, seg_run, tmp_path):
    run = copy_run(cls_run, tmp_path / "smallcnn")
    before = _tree(run)
    for args in ([], ["--split", "val"], ["--threshold", "0.3"]):
        proc = run_cli("evaluate", str(run), "--bootstrap", "0", *args)
        assert proc.returncode == 0, proc.stderr
        assert not _calibrated_lines(proc.stderr)
    assert _tree(run) == before


def test_calibrate_writes_the_threshold_evaluate_wrote_and_again_the_same(cls_run, tmp_path):
    """``calibrate --target-sensitivity`` writes the very threshold.json of ``evaluate
    --target-sensitivity`` (which now calls it and says so), the threshold that reaches the
    target on the validation cases' scores; run again, it rewrites the same bytes."""
    from breastus_cli.engine.stats.metrics import threshold_for_sensitivity

    by_evaluate = copy_run(cls_run, tmp_path / "a")
    by_calibrate = copy_run(cls_run, tmp_path / "b")
    proc = run_cli("evaluate", str(by_evaluate), "--target-sensitivity", "0.9",
                   "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    [line] = _calibrated_lines(proc.stderr)
    assert "wrote threshold.json" in line and f"'breastus calibrate {by_evaluate}'" in line
    proc = run_cli("calibrate", str(by_calibrate), "--target-sensitivity", "0.9")
    assert proc.returncode == 0, proc.stderr
    [line] = _calibrated_lines(proc.stdout)
    assert "wrote threshold.json" in line and "rewrote" not in line
    chosen = (by_calibrate / "threshold.json").read_bytes()
    assert chosen == (by_evaluate / "threshold.json").read_bytes()
    # evaluate's numbers follow the file, and report where it came from
    metrics = json.loads((by_evaluate / "eval-test/metrics.json").read_text())
    record = json.loads(chosen)
    assert metrics["threshold"] == record["threshold"]
    assert metrics["validation_sensitivity"] == record["validation_sensitivity"] >= 0.9
    assert record["chosen_on"] == "validation" and record["target_sensitivity"] == 0.9

    # the threshold is the one that reaches the target on the validation cases' scores
    proc = run_cli("evaluate", str(by_calibrate), "--split", "val", "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    val = pd.read_csv(by_calibrate / "eval-val/predictions.csv")
    assert record["threshold"] == threshold_for_sensitivity(
        val["y_true"].to_numpy(), val["p_malignant"].to_numpy(), 0.9)
    assert record["validation_n"] == len(val)

    before = _tree(by_calibrate)
    again = run_cli("calibrate", str(by_calibrate), "--target-sensitivity", "0.9")
    assert again.returncode == 0, again.stderr
    assert "rewrote threshold.json" in again.stdout
    assert _tree(by_calibrate) == before


def test_train_seg_ends_with_the_calibration_and_calibrate_chooses_it_again(seg_run,
                                                                            tmp_path):
    trained = json.loads((seg_run / "postprocess.json").read_text())
    config = json.loads((seg_run / "config.json").read_text())
    assert trained["n_validation"] == config["data"]["n_val"]
    run = copy_run(seg_run, tmp_path / "unet")
    (run / "postprocess.json").unlink()
    proc = run_cli("calibrate", str(run))
    assert proc.returncode == 0, proc.stderr
    [line] = _calibrated_lines(proc.stdout)
    assert "wrote postprocess.json" in line and f"'{trained['method']}'" in line
    assert (run / "postprocess.json").read_bytes() == (seg_run / "postprocess.json").read_bytes()
    before = _tree(run)
    again = run_cli("calibrate", str(run))
    assert again.returncode == 0 and "rewrote postprocess.json" in again.stdout
    assert _tree(run) == before
    proc = run_cli("evaluate", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "eval-test/metrics.json").read_text())
    assert metrics["postprocess"] == trained["method"]
    assert metrics["postprocess_source"].startswith(
        f"chosen on {trained['n_validation']} validation cases")
    assert _tree(run) == before


def _one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["foreign", "cv"])
def test_calibrate_refuses_a_folder_that_is_not_its_run(kind, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    if kind == "foreign":
        (folder / "thesis.txt").write_text("three years of work")
    else:  # a cross-validation folder: its folds are the runs
        (folder / "cv.json").write_text(json.dumps({"task": "cls", "folds": 3, "train": {}}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = run_cli("calibrate", str(folder), "--target-sensitivity", "0.9")
    assert proc.returncode == 2
    assert str(folder) in _one_line(proc)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_calibrate_says_what_a_task_takes(cls_run, seg_run, tmp_path):
    """A classifier without an option has nothing to choose; a segmenter takes no threshold
    target: one line each, exit 2, the run untouched."""
    run = copy_run(cls_run, tmp_path / "cls")
    before = _tree(run)
    proc = run_cli("calibrate", str(run))
    assert proc.returncode == 2 and "nothing to calibrate" in _one_line(proc)
    assert _tree(run) == before
    seg = copy_run(seg_run, tmp_path / "seg")
    before = _tree(seg)
    proc = run_cli("calibrate", str(seg), "--target-sensitivity", "0.9")
    assert proc.returncode == 2 and "is a segmenter" in _one_line(proc)
    proc = run_cli("calibrate", str(run), "--target-sensitivity", "1.5")
    assert proc.returncode == 2 and "--target-sensitivity must lie in (0, 1]" in _one_line(proc)
    proc = run_cli("calibrate", str(run), "--fusion", "descriptors")
    assert proc.returncode == 2 and "needs --seg-run" in _one_line(proc)
    assert _tree(seg) == before
