"""Issue 31: the per-scan ood_score (engine/apply/ood.py) and ``breastus shift``, on the
synthetic trained run (conftest's cls_run) and shifted copies of its held-out scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_safety_files import _error_line

from conftest import copy_run, run_cli


@pytest.fixture
def run(cls_run, tmp_path) -> Path:
    return copy_run(cls_run, tmp_path / "run")


def _test_images(run: Path) -> list[Path]:
    from breastus_cli.engine.runs.rundir import read_config, run_cases

    return [Path(p) for p in run_cases(read_config(run), "test")["image_path"]]


def _copies(images: list[Path], folder: Path, change) -> Path:
    """``images`` changed by ``change`` (uint8 array -> uint8 array), as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = np.asarray(Image.open(path).convert("L"))
        Image.fromarray(change(image).astype(np.uint8)).save(folder / path.name)
    return folder


def _inverted(image: np.ndarray) -> np.ndarray:
    return 255 - image


def _brightened(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.int32) * 2 + 90, 0, 255)


def test_feature_stats_are_written_calibrated_and_plain(run):
    from breastus_cli.engine.apply import ood

    stats, record = ood.ensure(run)
    assert (run / ood.STATS_NPZ).is_file() and (run / ood.STATS_JSON).is_file()
    # calibrated: at least 95% of the run's own validation cases score <= 1
    assert np.mean(stats.val_scores <= 1.0) >= 0.95
    assert np.max(stats.val_scores) > 1.0 or len(stats.val_scores) < 20
    from breastus_cli.engine.runs.rundir import read_config, run_cases

    train = list(run_cases(read_config(run), "train")["case_id"])
    val = list(run_cases(read_config(run), "val")["case_id"])
    assert record["train_cases"] == train and record["n_train"] == len(train) > 50
    assert record["val_cases"] == val and record["n_val"] == len(val) > 10
    assert record["model_sha256"] == ood.model_sha256(run)
    assert 1 <= record["dims"] <= ood.MAX_DIMS
    assert len(record["levels"]) == len(record["widths"]) >= 3
    with np.load(run / ood.STATS_NPZ, allow_pickle=False) as data:  # no pickled object
        for i, width in enumerate(record["widths"]):
            k = data[f"precision_{i}"].shape[0]
            assert 1 <= k <= record["dims"] and data[f"components_{i}"].shape == (k, width)
    # read back, not computed again: the same numbers
    again, _ = ood.ensure(run)
    assert np.allclose(again.val_scores, stats.val_scores)


@pytest.mark.parametrize("change", [_inverted, _brightened])
def test_a_shifted_folder_scores_clearly_higher_than_held_out_scans(run, tmp_path, change):
    from breastus_cli.engine.apply import ood
    from breastus_cli.engine.apply.loaded_run import load_model
    from breastus_cli.engine.evaluation.shift import auc

    stats, _ = ood.ensure(run)
    images = _test_images(run)  # never seen in training nor calibration
    held_out = ood.features_of_files(load_model(run), 64, [str(p) for p in images])
    shifted_dir = _copies(images, tmp_path / "shifted", change)
    shifted = ood.features_of_files(load_model(run), 64,
                                    [str(p) for p in sorted(shifted_dir.iterdir())])
    score_in, score_out = stats.score(held_out), stats.score(shifted)
    assert auc(score_in, score_out) > 0.9
    assert np.mean(score_out > 1) > 0.5 > np.mean(score_in > 1)


def test_shift_command_writes_verdict_report_and_numbers(run, tmp_path):
    images = _test_images(run)
    shifted = _copies(images, tmp_path / "inverted", _inverted)
    proc = run_cli("shift", run, shifted, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert summary["format"] == "breastus-shift" and summary["n_scans"] == len(images)
    assert summary["verdict"].startswith("unlike training:")
    assert f"of {len(images)} scans out of domain" in summary["verdict"]
    assert summary["verdict"] in proc.stdout + proc.stderr
    assert summary["out_of_domain"] > 0.5 > summary["validation_out_of_domain"]
    assert summary["ood_auc_vs_validation"] > 0.9
    # the grey levels of inverted scans: mean near 255 - training's
    new, train = summary["measures"]["mean"]["new"], summary["measures"]["mean"]["training"]
    assert abs(new["median"] - (255 - train["median"])) < 40
    assert 0 <= summary["measures"]["frame_fraction"]["new"]["median"] <= 1
    assert summary["histogram_distance"] > 0.3
    for name in ("report.md", "scans.csv", "ood_scores.png", "grey_levels.png",
                 "measures.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    report = (tmp_path / "out" / "report.md").read_text()
    assert summary["verdict"] in report and "ood_scores.png" in report
    # the same run's own held-out scans: like training
    proc = run_cli("shift", run, _copies(images, tmp_path / "same", lambda x: x),
                   "--out", tmp_path / "same-out")
    assert proc.returncode == 0, proc.stderr
    same = json.loads((tmp_path / "same-out" / "shift.json").read_text())
    assert same["verdict"].startswith("like training:")
    assert same["out_of_domain"] < summary["out_of_domain"]
    # written again into its own folder: allowed (the marker)
    assert run_cli("shift", run, shifted, "--out", tmp_path / "out").returncode == 0


def test_shift_of_a_prepared_dataset_reads_its_pixel_spacing(run, learn_data, tmp_path):
    proc = run_cli("shift", run, learn_data, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "shift.json").read_text())
    from breastus_cli.data.manifest import read_manifest

    manifest = read_manifest(learn_data)
    assert summary["input_kind"] == "dataset" and summary["n_scans"] == len(manifest)
    known = manifest["pixel_size_mm"].dropna()
    assert summary["measures"]["pixel_mm"]["new"]["n"] == len(known)
    if len(known):
        assert summary["measures"]["pixel_mm"]["new"]["median"] == pytest.approx(
            float(known.median()), abs=1e-3)


def test_frame_fraction_counts_the_largest_bright_region():
    from breastus_cli.engine.evaluation.shift import frame_fraction

    image = np.zeros((100, 100), np.uint8)
    image[10:60, 20:80] = 120  # the sector: 30% of the frame
    image[90:95, 5:15] = 255  # a text label: not counted
    assert frame_fraction(image) == pytest.approx(0.30, abs=0.02)
    assert frame_fraction(np.zeros((50, 50), np.uint8)) == 0.0


@pytest.mark.parametrize("bad", ["missing-input", "seg-run", "bad-stats", "no-scans"])
def test_bad_inputs_are_one_line_exit_2(bad, run, seg_run, tmp_path, capsys):
    from test_safety_files import _cli

    from breastus_cli.engine.apply import ood

    scans = _copies(_test_images(run)[:3], tmp_path / "scans", lambda x: x)
    args = [run, scans, "--out", tmp_path / "out"]
    if bad == "missing-input":
        args[1] = tmp_path / "nowhere"
    elif bad == "seg-run":
        args[0] = seg_run
    elif bad == "bad-stats":
        ood.ensure(run)
        record = json.loads((run / ood.STATS_JSON).read_text())
        record["n_train"] = "many"
        (run / ood.STATS_JSON).write_text(json.dumps(record))
    else:
        (tmp_path / "empty").mkdir()
        args[1] = tmp_path / "empty"
    code, err = _cli(capsys, "shift", *args)
    assert code == 2, err
    line = _error_line(err)
    expected = {"missing-input": "nowhere", "seg-run": "classifier run",
                "bad-stats": "n_train", "no-scans": "no scans"}[bad]
    assert expected in line
    assert not (tmp_path / "out" / "shift.json").exists()


def test_predict_writes_ood_columns_for_a_keras_classifier(run, tmp_path):
    import pandas as pd

    from breastus_cli.engine.apply import ood

    (run / ood.STATS_NPZ).unlink(missing_ok=True)  # an older run: computed on demand
    (run / ood.STATS_JSON).unlink(missing_ok=True)
    images = _test_images(run)
    scans = _copies(images, tmp_path / "scans", lambda x: x)
    _copies(images, scans / "inverted", _inverted)
    proc = run_cli("predict", scans, "--cls-run", run, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert (run / ood.STATS_NPZ).is_file() and (run / ood.STATS_JSON).is_file()
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert {"ood_score", "in_domain"} <= set(rows.columns)
    inverted = rows["path"].str.contains("/inverted/")
    scores = rows["ood_score"].astype(float)
    assert rows["in_domain"].astype(str).isin(["True", "False"]).all()
    assert ((scores <= 1) == (rows["in_domain"].astype(str) == "True")).all()
    from breastus_cli.engine.evaluation.shift import auc

    assert auc(scores[~inverted].to_numpy(), scores[inverted].to_numpy()) > 0.9
    # the same scores as the module gives
    stats, _ = ood.ensure(run)
    from breastus_cli.engine.apply.loaded_run import load_model

    direct = stats.score(ood.features_of_files(load_model(run), 64,
                                               [p for p in rows["path"]]))
    assert np.allclose(scores, direct, atol=1e-3)


def test_predict_without_a_pooled_keras_classifier_leaves_the_columns_empty(tmp_path):
    import pandas as pd
    from test_safety_files import _save_run, _scans

    from breastus_cli import backend

    keras = backend.keras()
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    run = _save_run(tmp_path / "tiny", model, "cls", 32)
    proc = run_cli("predict", _scans(tmp_path / "scans"), "--cls-run", run,
                   "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert (rows["ood_score"] == "").all() and (rows["in_domain"] == "").all()
    assert not (run / "feature_stats.npz").exists()


# ---- the stored statistics are read through a schema, never unpickled ------------------------
def _stored(folder: Path) -> Path:
    from breastus_cli.engine.apply import ood

    rng = np.random.default_rng(0)
    stats = ood.fit(rng.normal(size=(20, 6)), rng.normal(size=(8, 6)), [2, 4], ["a", "b"])
    folder.mkdir(parents=True, exist_ok=True)
    ood.save(folder, stats, dict(_RECORD))
    return folder


_RECORD = {"format": "breastus-feature-stats", "model_sha256": "0" * 64, "dims": 4,
           "scale": 1.5, "train_cases": ["a", "b", "c"], "n_train": 3, "val_cases": ["d"],
           "n_val": 1, "levels": ["a", "b"], "widths": [2, 4]}


def test_a_pickled_or_broken_npz_is_one_line_refusal(tmp_path):
    from breastus_cli.engine.apply import ood
    from breastus_cli.errors import InputError

    run = _stored(tmp_path / "run")
    assert ood.load(run) is not None
    np.savez(run / ood.STATS_NPZ, center_0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(InputError, match="feature_stats.npz") as exc:
        ood.load(run)
    assert "\n" not in exc.value.message
    (run / ood.STATS_NPZ).write_bytes(b"not a zip")
    with pytest.raises(InputError, match="feature_stats.npz"):
        ood.load(run)


@pytest.mark.parametrize("change", [{"levels": None, "widths": None},
                                    {"levels": ["a", "b", "c"], "widths": [2, 4, 1]},
                                    {"widths": [2, 5]}])
def test_a_json_that_disagrees_with_its_npz_is_refused_naming_the_json(tmp_path, change):
    """Found by the fuzz test below: a feature_stats.json naming no levels (or other ones)
    beside a sound multi-level .npz was refused naming only the .npz."""
    from breastus_cli.engine.apply import ood
    from breastus_cli.errors import InputError

    run = _stored(tmp_path / "run")
    record = json.loads((run / ood.STATS_JSON).read_text())
    record.update({k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        del record[key]
    (run / ood.STATS_JSON).write_text(json.dumps(record))
    with pytest.raises(InputError) as exc:
        ood.load(run)
    assert str(run / ood.STATS_JSON) in exc.value.message and ood.STATS_NPZ in exc.value.message
    assert "\n" not in exc.value.message


def test_feature_stats_reader_never_fails_otherwise(tmp_path):
    from hypothesis import given
    from test_safety_runfiles import FAST, _refused_or, mutated

    from breastus_cli.engine.apply import ood

    run = _stored(tmp_path / "run")

    @FAST
    @given(doc=mutated(_RECORD))
    def check(doc):
        (run / ood.STATS_JSON).write_text(json.dumps(doc))
        _refused_or(run / ood.STATS_JSON, lambda: ood.load(run),
                    lambda loaded: loaded[1]["n_train"] == len(loaded[1]["train_cases"])
                    or pytest.fail(str(loaded[1])))

    check()
