"""Issue 31, the segmenter too: ``breastus adapt`` re-estimates a U-Net's batch-norm statistics
on a new hospital's unlabeled scans (engine/export/adapt.py), and the paired mean Dice that
measures it (engine/stats/paired.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_adapt import _brighter, _weights
from test_ood_shift import _copies, _test_images
from test_safety_files import _cli, _error_line

from conftest import run_cli


@pytest.fixture(scope="module")
def light_seg_run(cv_seg) -> Path:
    """A one-epoch U-Net (resnet18 encoder, 64 px): the shared segmentation CV's fold 0, batch-norm
    layers from its first layer on (read-only; the CV's calibration wrote its postprocess.json).
    Shared rather than trained here: one training fewer for the suite."""
    return cv_seg / "fold-0"


@pytest.fixture(scope="module")
def seg_adapted(light_seg_run, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapt-seg")
    scans = _copies(_test_images(light_seg_run), root / "site2", _brighter)
    proc = run_cli("adapt", light_seg_run, "--data", scans, "--out", root / "adapted")
    assert proc.returncode == 0, proc.stderr
    assert "batch-norm layer(s) re-estimated on" in proc.stdout + proc.stderr
    return root / "adapted", scans


def test_seg_bn_means_move_to_the_new_scans_and_nothing_else_changes(light_seg_run,
                                                                     seg_adapted):
    from breastus_cli.engine.apply.loaded_run import load_model
    from breastus_cli.engine.export.adapt import _scan_inputs

    out, scans = seg_adapted
    before, after = _weights(light_seg_run), _weights(out)
    assert before.keys() == after.keys()
    means = [k for k in before if "moving_mean" in k]
    moved = [k for k in before if "moving_mean" in k or "moving_variance" in k]
    assert len(means) > 10  # encoder and decoder batch norms
    changed = [k for k in means if not np.allclose(before[k], after[k])]
    assert len(changed) == len(means), set(means) - set(changed)
    for key in before.keys() - set(moved):  # every other weight byte-identical
        assert before[key].tobytes() == after[key].tobytes(), key
    # the U-Net takes the (S, S, 1) 0..255 scans _scan_inputs reads (the same input as a
    # classifier's) ...
    model = load_model(out)
    images, errors, files = _scan_inputs(scans, 64, 1)
    assert errors == 0 and len(files) == len(images)
    assert model.input_shape == (None, *images.shape[1:]) and images.max() > 1
    # ... and resnet18's first batch norm ('bn_data') normalizes those pixels (grey replicated
    # to three channels, no other preprocessing): its mean is now their mean, channel by channel
    bn_data = model.get_layer("unet").get_layer("bn_data")
    assert np.allclose(bn_data.moving_mean.numpy(), np.full(3, images.mean()), rtol=1e-4)
    assert np.allclose(bn_data.moving_variance.numpy(), np.full(3, images.var()), rtol=1e-3)
    old = load_model(light_seg_run).get_layer("unet").get_layer("bn_data").moving_mean.numpy()
    assert np.abs(old - images.mean()).max() > 1.0  # the brighter scans are not the training's


def test_seg_adapted_run_keeps_postprocess_records_the_adaptation_and_evaluates(
        light_seg_run, seg_adapted):
    from breastus_cli.data.manifest import file_sha256
    from breastus_cli.engine.export.adapt import fingerprint

    out, scans = seg_adapted
    assert (out / "postprocess.json").read_bytes() == (
        light_seg_run / "postprocess.json").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "seg" and config["status"] == "adapted"
    assert config["adapted_from"]["sha256"] == file_sha256(light_seg_run / "model.keras")
    files = sorted(scans.iterdir())
    assert config["adaptation"]["n_scans"] == len(files)
    assert config["adaptation"]["data_fingerprint"] == fingerprint(files, scans)
    assert config["adaptation"]["bn_layers"] > 10
    assert not (out / "threshold.json").exists()  # a segmenter's source has none to carry
    proc = run_cli("evaluate", out, "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "eval-test" / "metrics.json").read_text())
    per_case = pd.read_csv(out / "eval-test" / "per_case.csv")
    assert len(per_case) == len(_test_images(light_seg_run)) == metrics["n"]
    assert 0.0 <= metrics["dice"] <= 1.0
    assert metrics["dice"] == pytest.approx(per_case["dice"].mean())
    # evaluate applies the copied post-processing (the source run's choice), not "none"
    chosen = json.loads((light_seg_run / "postprocess.json").read_text())
    assert metrics["postprocess"] == chosen["method"]
    assert "not chosen for this run" not in metrics["postprocess_source"]


def test_labels_with_a_segmenter_is_one_line_exit_2(light_seg_run, learn_data, tmp_path,
                                                   capsys):
    scans = _copies(_test_images(light_seg_run)[:2], tmp_path / "scans", lambda x: x)
    code, err = _cli(capsys, "adapt", light_seg_run, "--data", scans, "--labels", learn_data,
                     "--out", tmp_path / "out")
    assert code == 2, err
    line = _error_line(err)
    assert "--labels" in line and "classifier" in line and "'seg' run" in line
    assert not (tmp_path / "out").exists()


def test_adapt_help_names_the_segmenter():
    proc = run_cli("adapt", "--help")
    assert proc.returncode == 0
    assert "segmenter" in proc.stdout and "postprocess.json" in proc.stdout


# ---- the paired mean (Dice with and without adaptation on the same images) -----------------
def test_paired_mean_of_a_constant_shift_is_that_shift_with_a_zero_width_ci():
    from breastus_cli.engine.stats.paired import paired_mean

    a = np.random.default_rng(0).uniform(0.2, 0.9, 80)
    r = paired_mean(a, a + 0.05, n_bootstrap=500, seed=1)
    assert r.n == 80 and r.mean_a == pytest.approx(a.mean())
    assert r.difference == pytest.approx(0.05)
    assert r.ci_difference == pytest.approx([0.05, 0.05])
    low, high = r.ci_a
    assert low < a.mean() < high and high - low > 0.02  # the means themselves vary


def test_paired_mean_ci_is_narrower_than_unpaired_and_reproducible():
    from breastus_cli.engine.stats.paired import paired_mean

    rng = np.random.default_rng(3)
    a = rng.uniform(0.0, 1.0, 200)  # images differ a lot ...
    b = np.clip(a + rng.normal(0.02, 0.01, 200), 0, 1)  # ... the models on one image little
    r = paired_mean(a, b, n_bootstrap=1000, seed=0)
    low, high = r.ci_difference
    assert low < r.difference < high and low > 0  # a small, consistent gain is detected
    width_a = r.ci_a[1] - r.ci_a[0]
    assert high - low < width_a / 5  # what the images share cancels out of the difference
    assert paired_mean(a, b, n_bootstrap=1000, seed=0) == r


@pytest.mark.parametrize("a, b", [([0.5, 0.6], [0.5]), ([], []), ([0.5, np.nan], [0.4, 0.3])])
def test_paired_mean_refuses_unpaired_or_missing_scores(a, b):
    from breastus_cli.engine.stats.paired import paired_mean
    from breastus_cli.errors import InputError

    with pytest.raises(InputError):
        paired_mean(a, b)
