"""Issue 31: ``breastus adapt`` (engine/export/adapt.py): AdaBN on a new hospital's unlabeled
scans, and the threshold chosen again on labelled local cases."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_ood_shift import _copies, _test_images
from test_safety_files import _cli, _error_line

from conftest import run_cli


def _brighter(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.int32) + 60, 0, 255)


def _weights(run: Path) -> dict[str, np.ndarray]:
    from breastus_cli.engine.apply.loaded_run import load_model

    model = load_model(run)
    return {w.path if hasattr(w, "path") else w.name: w.numpy() for w in model.weights}


@pytest.fixture(scope="module")
def adapted(cls_run, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapt")
    scans = _copies(_test_images(cls_run), root / "site2", _brighter)
    proc = run_cli("adapt", cls_run, "--data", scans, "--out", root / "adapted")
    assert proc.returncode == 0, proc.stderr
    return root / "adapted", scans


def test_bn_statistics_move_to_the_new_scans_and_nothing_else_changes(cls_run, adapted):
    from breastus_cli import backend
    from breastus_cli.engine.apply.loaded_run import load_model

    out, _ = adapted
    before, after = _weights(cls_run), _weights(out)
    assert before.keys() == after.keys()
    moved = [k for k in before if "moving_mean" in k or "moving_variance" in k]
    assert len(moved) == 8  # smallcnn: four BN layers, mean and variance each
    for key in before.keys() - set(moved):  # every other weight byte-identical
        assert before[key].tobytes() == after[key].tobytes(), key
    # the first BN layer sees conv1 of the brighter scans: its moving mean is now their
    # per-channel mean, computed here directly
    model = load_model(out)
    keras = backend.keras()
    base = model.get_layer("backbone")
    bn1 = base.get_layer("bn1")
    conv = keras.Model(base.inputs, base.get_layer("conv1").output)
    from breastus_cli.engine.export.adapt import _sub_input

    rgb = _sub_input(model, base, keras)
    from breastus_cli.engine.export.adapt import _scan_inputs

    images, _, _ = _scan_inputs(adapted[1], 64, 1)
    values = conv(rgb(images)).numpy()
    expected = values.mean(axis=(0, 1, 2))
    assert np.allclose(bn1.moving_mean.numpy(), expected, rtol=1e-3, atol=1e-3)
    old_mean = load_model(cls_run).get_layer("backbone").get_layer("bn1").moving_mean.numpy()
    # toward the new data: the adapted mean is nearer to the new scans' mean than the old was
    assert np.abs(bn1.moving_mean.numpy() - expected).sum() < np.abs(old_mean - expected).sum()


def test_config_records_source_fingerprint_count_and_method(cls_run, adapted):
    from breastus_cli.data.manifest import file_sha256
    from breastus_cli.engine.export.adapt import fingerprint

    out, scans = adapted
    config = json.loads((out / "config.json").read_text())
    source = config["adapted_from"]
    assert (out / source["path"]).resolve() == cls_run.resolve()
    assert source["sha256"] == file_sha256(cls_run / "model.keras")
    files = sorted(scans.iterdir())
    assert config["adaptation"]["method"] == "adabn"
    assert config["adaptation"]["n_scans"] == len(files)
    assert config["adaptation"]["data_fingerprint"] == fingerprint(files, scans)
    assert config["adaptation"]["bn_layers"] == 4
    assert config["task"] == "cls" and config["settings"] == json.loads(
        (cls_run / "config.json").read_text())["settings"]
    assert zipfile.is_zipfile(out / "model.keras")
    assert not (out / "feature_stats.npz").exists()  # the source model's: not copied
    # the adapted run predicts like any run
    proc = run_cli("predict", scans, "--cls-run", out, "--out", out.parent / "pred")
    assert proc.returncode == 0, proc.stderr


def test_fingerprint_changes_with_the_folder(tmp_path):
    from breastus_cli.engine.export.adapt import fingerprint

    (tmp_path / "a.png").write_bytes(b"12")
    first = fingerprint([tmp_path / "a.png"], tmp_path)
    (tmp_path / "a.png").write_bytes(b"123")
    assert fingerprint([tmp_path / "a.png"], tmp_path) != first


def test_labels_rechoose_the_threshold_for_the_target_on_local_cases(cls_run, learn_data,
                                                                      tmp_path):
    from breastus_cli.data.manifest import read_manifest

    proc = run_cli("adapt", cls_run, "--data", learn_data, "--labels", learn_data,
                   "--target-sensitivity", "0.8", "--out", tmp_path / "adapted")
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads((tmp_path / "adapted" / "threshold.json").read_text())
    manifest = read_manifest(learn_data)
    labelled = manifest[manifest["label"].isin(["benign", "malignant"])]
    assert chosen["local_n"] == len(labelled)
    assert chosen["local_malignant"] == int((labelled["label"] == "malignant").sum())
    assert chosen["local_sensitivity"] >= 0.8
    low, high = chosen["local_sensitivity_ci"]
    assert low <= chosen["local_sensitivity"] <= high
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert config["threshold"] == chosen["threshold"]
    assert f"on {len(labelled)} local cases" in proc.stdout + proc.stderr
    # the run's threshold rule reads it: predict uses it
    from breastus_cli.engine.runs.rundir import read_threshold

    assert read_threshold(tmp_path / "adapted").value == chosen["threshold"]


@pytest.mark.parametrize("bad", ["no-data", "empty-data", "target"])
def test_bad_inputs_are_one_line_exit_2(bad, cls_run, tmp_path, capsys):
    run, data = cls_run, tmp_path / "scans"
    _copies(_test_images(cls_run)[:2], data, lambda x: x)
    extra: list = []
    if bad == "no-data":
        data = tmp_path / "nowhere"
    elif bad == "empty-data":
        data = tmp_path / "empty"
        data.mkdir()
        (data / "notes.txt").write_text("not a scan")
    else:
        extra = ["--target-sensitivity", "1.5"]
    code, err = _cli(capsys, "adapt", run, "--data", data, "--out", tmp_path / "out", *extra)
    assert code == 2, err
    line = _error_line(err)
    assert {"no-data": "nowhere", "empty-data": "no readable scan",
            "target": "target-sensitivity"}[bad] in line
    assert not (tmp_path / "out" / "config.json").exists()
