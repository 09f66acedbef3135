"""One typed view of a run's config.json (engine/runs/runconfig.py's RunConfig).

An older config.json (keys missing: written before they existed) reads with the defaults of the
schema, the one place they live; every accessor returns the type it declares, on an old file
and on a full one; a bad value is one line naming the file and the field.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from breastus_cli.engine.evaluation.eval_cases import data_dir, twins_in_training
from breastus_cli.engine.evaluation.eval_settings import EvalSettings
from breastus_cli.engine.runs.rundir import read_threshold, run_cases
from breastus_cli.engine.runs.runconfig import RunConfig, lesion_margin
from breastus_cli.errors import InputError

#: the config.json of a run finished before most records existed (as in test_provenance.py)
OLD = {"task": "cls", "status": "finished"}
#: one written today (the keys engine code reads; test_safety_runfiles' CONFIG, lesion-centred)
FULL = {"task": "cls", "status": "finished", "threshold": 0.4,
        "settings": {"img_size": 64, "seed": 7, "fold": 2, "val_fraction": 0.2,
                     "batch_size": 8, "roi_margin": 0.3, "model": "smallcnn", "weights": "none",
                     "data": "/old/place", "roi": "mask"},
        "data": {"path": "/data", "manifest_sha256": "ab", "splits_sha256": None,
                 "split_sha256": None, "fold": 2},
        "roi": {"source": "mask", "margin": 0.3}, "labels": ["benign", "malignant"],
        "positive_label": "malignant",
        "input": {"preprocessing": "tf", "resize": "bilinear"},
        "result": {"best_epoch": 1, "epochs_run": 3, "seconds_this_process": 3.5}}
#: the config a fold ensemble is evaluated with (evaluation's ensemble_config builds it)
ENSEMBLE = {**FULL, "settings": {**FULL["settings"], "fold": None},
            "ensemble": {"cv": "/cv", "task": "cls", "folds": ["/cv/fold-0", "/cv/fold-1"],
                         "fold_thresholds": [0.4, 0.6], "threshold": 0.5,
                         "threshold_source": "median of 2 fold thresholds", "data": "/other"}}


def _run(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _accessors() -> dict[str, Any]:
    """Every property of RunConfig with its declared return type."""
    found = {}
    for name, member in vars(RunConfig).items():
        if isinstance(member, property):
            found[name] = typing.get_type_hints(member.fget)["return"]
    return found


def _is(value: Any, hint: Any) -> bool:
    """``value`` is of the declared type ``hint`` (unions, list[...], dict[...], plain)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_is(k, key) and _is(v, item)
                                               for k, v in value.items())
    if hint is float:  # an int is no float here: the accessors return what they declare
        return isinstance(value, float)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def test_an_old_config_reads_with_the_defaults(tmp_path):
    config = RunConfig.read(_run(tmp_path / "old", OLD))
    assert (config.task, config.status, config.finished) == ("cls", "finished", True)
    assert (config.img_size, config.seed, config.fold, config.val_fraction,
            config.batch_size) == (224, 42, None, 0.1, 16)
    assert (config.model, config.backbone, config.model_name, config.weights) == (
        None, None, None, None)
    assert config.include_other_masks is False
    assert (config.data_path, config.data_fold, config.data) == (None, None, {})
    assert (config.roi_source, config.roi, config.roi_margin) == ("none", None, None)
    assert (config.threshold, config.labels, config.positive_label) == (
        0.5, ["benign", "malignant"], "malignant")
    assert (config.input, config.settings) == ({}, {})
    assert (config.epochs_run, config.seconds_this_process, config.ensemble) == (
        None, 0.0, None)
    # the run's threshold by the one rule: no threshold.json, config.json's default
    assert read_threshold(tmp_path / "old").value == 0.5


def test_a_config_written_before_the_data_record_takes_its_settings(tmp_path):
    """Before config.json had ``data``: the dataset and fold came from the settings."""
    config = RunConfig.of({"task": "seg", "settings": {"data": "/before", "fold": 1,
                                                       "backbone": "efficientnetb2",
                                                       "include_other_masks": True}})
    assert (config.data_path, config.data_fold, config.fold) == (Path("/before"), 1, 1)
    assert (config.model_name, config.include_other_masks) == ("unet-efficientnetb2", True)
    # a recorded data fold wins over the setting, a recorded path over settings.data
    full = RunConfig.of(FULL)
    assert (full.data_path, full.data_fold) == (Path("/data"), 2)
    assert RunConfig.of({**FULL, "data": {"path": "/d", "fold": None}}).data_fold is None


def test_a_full_config_reads_as_written(tmp_path):
    config = RunConfig.read(_run(tmp_path / "full", FULL))
    assert (config.img_size, config.seed, config.fold, config.val_fraction,
            config.batch_size) == (64, 7, 2, 0.2, 8)
    assert (config.model_name, config.weights, config.threshold) == ("smallcnn", "none", 0.4)
    assert (config.roi_source, config.roi_margin) == ("mask", 0.3)
    assert config.roi_margin == lesion_margin("cls", FULL["roi"])
    assert (config.epochs_run, config.seconds_this_process) == (3, 3.5)
    assert config.input == FULL["input"] and config.settings == FULL["settings"]
    assert config.raw == FULL and RunConfig.of(FULL).file == config.file


@pytest.mark.parametrize("doc", [OLD, FULL, ENSEMBLE], ids=["old", "full", "ensemble"])
def test_every_accessor_is_typed_and_returns_its_type(doc):
    accessors = _accessors()
    assert {"task", "img_size", "model", "weights", "fold", "roi_margin", "data_path",
            "threshold", "seed", "val_fraction", "labels"} <= set(accessors)
    config = RunConfig.of(doc)
    for name, hint in accessors.items():
        value = getattr(config, name)
        assert _is(value, hint), f"RunConfig.{name} returned {value!r}, declared {hint}"


def test_old_configs_still_select_their_cases(tmp_path, learn_data):
    """run_cases on a config without data record nor seed: the defaults (seed 42, 10 %)."""
    import pandas as pd

    old = run_cases({"task": "cls", "settings": {"data": str(learn_data)}}, "val")
    today = run_cases({"task": "cls", "data": {"path": str(learn_data)},
                       "settings": {"seed": 42, "val_fraction": 0.1}}, "val")
    pd.testing.assert_frame_equal(old, today)
    assert len(old) > 0


@pytest.mark.parametrize("change, field", [
    ({"settings": {"img_size": "64"}}, "settings.img_size: should be a valid integer"),
    ({"settings": {"include_other_masks": "yes"}}, "settings.include_other_masks"),
    ({"data": {"path": "/a\u0000b"}}, "data.path: must be a path without a NUL"),
    ({"labels": ["benign", "cancer"]}, "positive_label 'malignant' is none of the labels"),
    ({"result": {"epochs_run": -1}}, "result.epochs_run"),
])
def test_a_bad_value_is_one_line_naming_the_field(tmp_path, change, field):
    run = _run(tmp_path / "run", {**OLD, **change})
    with pytest.raises(InputError) as caught:
        RunConfig.read(run)
    message = caught.value.message
    assert message.startswith(f"bad run file: {run / 'config.json'}: ") and field in message
    assert "\n" not in message


def test_a_folder_that_is_no_run_is_named(tmp_path):
    with pytest.raises(InputError, match="run directory not found"):
        RunConfig.read(tmp_path / "missing")
    with pytest.raises(InputError, match=r"is not a breastus run directory \(no config.json\)"):
        RunConfig.read(tmp_path)


def test_a_fold_ensembles_config_names_its_folds():
    config = RunConfig.of(ENSEMBLE)
    assert config.ensemble == ENSEMBLE["ensemble"] and config.fold is None
    assert config.ensemble is not config.raw["ensemble"]  # a copy: the config stays as built


def test_evaluate_finds_the_dataset_of_an_old_config(tmp_path, learn_data):
    """The dataset an evaluation scores: the recorded one (``settings.data`` in files before
    the data record); none recorded and no --data is one line, not a KeyError."""
    run = tmp_path / "run"
    old = {"task": "cls", "settings": {"data": str(learn_data)}}
    assert data_dir(EvalSettings(run_dir=run), old) == Path(learn_data)
    assert twins_in_training(EvalSettings(run_dir=run), old) is not None
    with pytest.raises(InputError) as caught:
        data_dir(EvalSettings(run_dir=run), OLD)
    assert caught.value.message == (f"{run}/config.json records no dataset; give it with "
                                    "--data")
    assert data_dir(EvalSettings(run_dir=run, data=Path(learn_data)), OLD) == Path(learn_data)
