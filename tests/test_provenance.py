"""Provenance as data (issue #30): run files record what a result came from as fields that code
compares (engine/runs/provenance.py); files written before the fields are read by their old
sentence once and keep deciding the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from breastus_cli.engine.apply.fusion import Fusion, Logistic
from breastus_cli.engine.apply.loaded_run import ensemble_threshold
from breastus_cli.engine.runs.cvdir import fold_done
from breastus_cli.engine.runs.provenance import (
    CHOSEN_BY_FOLDS, CHOSEN_DEFAULT, CHOSEN_ON_VALIDATION, fusion_threshold_current,
    fusion_threshold_rule, masks_from_run, masks_source,
)
from breastus_cli.engine.runs.rundir import read_threshold
from breastus_cli.errors import InputError
from breastus_cli.runfiles import read_fusion, read_threshold as read_threshold_file

CROSS_FITTED = ("chosen on validation cases for target sensitivity 0.9 (their fused scores "
                "cross-fitted); each validation case scored by a combiner fitted on the others "
                "(5-fold), as a new case would be")
FITTED = "chosen on validation cases for target sensitivity 0.9"  # the rule before


def _finished_fold(cv: Path, k: int, metrics: dict) -> Path:
    run = cv / f"fold-{k}"
    (run / "eval-test").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "cls", "status": "finished"}))
    (run / "eval-test" / "metrics.json").write_text(json.dumps(metrics))
    return run


def _segmenter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights of " + folder.name.encode())
    return folder


# ---- which segmenter's masks: metrics.json's roi / fusion blocks -----------------------------
def test_masks_source_records_the_segmenter_relative_to_the_file_with_its_model_sha256(tmp_path):
    seg = _segmenter(tmp_path / "seg-cv" / "fold-0")
    folder = tmp_path / "cls-cv" / "fold-0" / "eval-test"
    folder.mkdir(parents=True)
    record = masks_source(seg, folder)
    assert record == {"seg_run": "../../../seg-cv/fold-0",
                      "seg_model_sha256": hashlib.sha256(b"weights of fold-0").hexdigest()}
    assert masks_from_run(record, folder, seg) is True
    assert masks_from_run(record, folder, tmp_path / "seg-cv" / "fold-1") is False
    # a fold ensemble (no model.keras of its own): the path alone
    assert masks_source(tmp_path / "seg-cv", folder)["seg_model_sha256"] is None


def test_fold_done_compares_the_recorded_segmenter_field_not_the_sentence(tmp_path):
    """The field decides, whatever the sentence beside it says (a reworded message no longer
    changes what a resumed CV scores again); the paths move with the folders."""
    seg_cv = tmp_path / "seg-cv"
    for k in (0, 1):
        _segmenter(seg_cv / f"fold-{k}")
    cv = tmp_path / "cls-cv"
    eval_dir = cv / "fold-0" / "eval-test"
    right = {"crops_from": "reworded: the masks of some segmenter",
             "seg_run": "../../../seg-cv/fold-0"}
    _finished_fold(cv, 0, {"roi": right})
    assert fold_done(cv, 0, seg_cv=str(seg_cv))
    wrong = dict(right, seg_run="../../../seg-cv/fold-1")
    (eval_dir / "metrics.json").write_text(json.dumps({"roi": wrong}))
    assert not fold_done(cv, 0, seg_cv=str(seg_cv))
    # the fused classifier's block is read the same way
    (eval_dir / "metrics.json").write_text(json.dumps({"fusion": {"seg_run": right["seg_run"]}}))
    assert fold_done(cv, 0, seg_cv=str(seg_cv))


@pytest.mark.parametrize("key,block", [("roi", "crops_from"), ("fusion", "masks_from")])
def test_fold_done_reads_an_older_metrics_json_by_its_sentence(tmp_path, key, block):
    """metrics.json written before the seg_run field: the old sentence decides, as before."""
    seg_cv = tmp_path / "seg-cv"
    cv = tmp_path / "cls-cv"
    same = {key: {block: f"segmentation run {seg_cv / 'fold-0'}"}}
    _finished_fold(cv, 0, same)
    assert fold_done(cv, 0, seg_cv=str(seg_cv))
    other = {key: {block: f"segmentation run {seg_cv / 'fold-1'}"}}
    (cv / "fold-0" / "eval-test" / "metrics.json").write_text(json.dumps(other))
    assert not fold_done(cv, 0, seg_cv=str(seg_cv))
    assert masks_from_run({}, tmp_path, seg_cv) is None  # nothing recorded: nothing to compare


# ---- the rule that chose a fused classifier's threshold --------------------------------------
@pytest.mark.parametrize("sentence,rule,current", [
    (CROSS_FITTED, "cross_fitted", True), ("default 0.5", "default", True),
    (FITTED, "fitted", False)])
def test_an_older_fusion_record_is_read_by_its_sentence(sentence, rule, current):
    fitted_on = {"threshold": sentence}
    assert fusion_threshold_rule(fitted_on) == rule
    assert fusion_threshold_current(fitted_on) is current


def test_the_threshold_rule_field_decides_whatever_the_sentence_says():
    assert fusion_threshold_current({"threshold": FITTED, "threshold_rule": "cross_fitted"})
    assert not fusion_threshold_current({"threshold": "default 0.5", "threshold_rule": "fitted"})
    assert fusion_threshold_rule({}) is None and not fusion_threshold_current(None)


def _fusion(fitted_on: dict[str, str]) -> dict:
    logistic = Logistic(["cnn", "descriptors"], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0],
                        0.0)
    descriptors = Logistic(["solidity"], [0.0], [0.0], [1.0], [1.0], 0.0)
    return Fusion(descriptors, logistic, 0.4, "default 0.5", fitted_on).to_dict()


def test_fusion_json_gets_the_rule_field_from_an_older_file_and_writes_it_next(tmp_path):
    """An older fusion.json (its rule only in the sentence) is read once by the sentence; what
    is written from it (the evaluation's fusion block, fusion.json) carries the field."""
    old = _fusion({"threshold": CROSS_FITTED})
    read = Fusion.from_dict(old)
    assert read.fitted_on["threshold_rule"] == "cross_fitted"
    assert read.to_dict()["fitted_on"]["threshold_rule"] == "cross_fitted"


def test_fusion_json_schema_takes_the_rule_field_and_refuses_an_unknown_rule(tmp_path):
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(_fusion({"threshold": "default 0.5",
                                        "threshold_rule": "default"})))
    assert read_fusion(path, ("solidity",))["fitted_on"]["threshold_rule"] == "default"
    path.write_text(json.dumps(_fusion({"threshold": "default 0.5",
                                        "threshold_rule": "chosen by hand"})))
    with pytest.raises(InputError, match="threshold_rule must be one of"):
        read_fusion(path, ("solidity",))


# ---- what a run's decision threshold was chosen on -------------------------------------------
def test_threshold_json_records_chosen_on_and_an_older_file_reads_the_same(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    for run in (new, old):
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"task": "cls", "threshold": 0.5}))
    (new / "threshold.json").write_text(json.dumps(
        {"threshold": 0.3, "target_sensitivity": 0.9, "chosen_on": "validation",
         "source": "reworded"}))
    (old / "threshold.json").write_text(json.dumps(  # before chosen_on and target_sensitivity
        {"threshold": 0.3, "source": "chosen on validation cases, target sensitivity 0.9"}))
    for run in (new, old):
        chosen = read_threshold(run)
        assert (chosen.value, chosen.chosen_on, chosen.target_sensitivity) == (
            0.3, CHOSEN_ON_VALIDATION, 0.9)
        assert chosen.source == "chosen on validation cases for target sensitivity 0.9"
    assert read_threshold_file(new / "threshold.json").chosen_on == "validation"
    (new / "threshold.json").write_text(json.dumps({"threshold": 0.3, "chosen_on": "test"}))
    with pytest.raises(InputError, match="chosen_on"):
        read_threshold(new)
    (new / "threshold.json").unlink()
    assert read_threshold(new).chosen_on == CHOSEN_DEFAULT


def test_a_fold_ensemble_threshold_is_chosen_by_its_folds_from_their_fields(tmp_path):
    folds = []
    for k, value in enumerate((0.2, 0.4, 0.3)):
        run = tmp_path / f"fold-{k}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"task": "cls"}))
        (run / "threshold.json").write_text(json.dumps(
            {"threshold": value, "target_sensitivity": 0.9, "chosen_on": "validation"}))
        folds.append(run)
    chosen = ensemble_threshold(folds)
    assert chosen.value == pytest.approx(0.3) and chosen.chosen_on == CHOSEN_BY_FOLDS
    assert chosen.source == ("median of 3 fold thresholds, each chosen on its fold's validation "
                             "cases for target sensitivity 0.9")
    (folds[0] / "threshold.json").unlink()  # one fold at its default: said so
    assert read_threshold(folds[0]).chosen_on == CHOSEN_DEFAULT
    assert "(chosen on validation cases for target sensitivity 0.9; default 0.5)" in \
        ensemble_threshold(folds).source
