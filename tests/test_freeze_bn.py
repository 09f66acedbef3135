"""``train-cls --freeze-bn``: the backbone's batch norms stay as pretrained while the rest of
the network fine-tunes (issue 29's batch-norm candidate)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli


def _fit_two_steps(model) -> None:
    from breastus_cli import backend

    keras = backend.keras()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 1)).astype(np.float32)
    y = np.array([0, 1] * 8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_the_backbone_batch_norms_and_trains_the_rest(freeze_bn):
    from breastus_cli import backend
    from breastus_cli.models.classifiers import build_classifier

    keras = backend.keras()
    keras.utils.set_random_seed(1)
    model = build_classifier("smallcnn", 32, freeze_bn=freeze_bn)
    backbone = model.get_layer("backbone")
    norms = [layer for layer in backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 4
    before = {w.name: w.numpy().copy() for layer in norms for w in layer.weights}
    conv = backbone.get_layer("conv1").kernel.numpy().copy()
    head = model.get_layer("head").kernel.numpy().copy()
    _fit_two_steps(model)
    after = {w.name: w.numpy() for layer in norms for w in layer.weights}
    same = [name for name in before if np.array_equal(before[name], after[name])]
    if freeze_bn:  # moving statistics, scale and shift: all as loaded
        assert same == list(before)
        assert all(not layer.trainable for layer in norms)
    else:  # the control: training moves them
        assert not same
    assert not np.allclose(conv, backbone.get_layer("conv1").kernel.numpy())
    assert not np.allclose(head, model.get_layer("head").kernel.numpy())


def test_freeze_bn_from_random_weights_is_one_line_exit_2(synth_data, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), "--model", "smallcnn", "--weights", "none",
                   "--freeze-bn", "--img-size", "32", "--epochs", "1", "--run-dir", str(run))
    assert proc.returncode == 2, proc.stderr
    assert "--freeze-bn" in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists()


def test_freeze_bn_is_recorded_and_older_plans_compare_equal():
    from breastus_cli.engine.runs.settings import ClsSettings, SegSettings, added_settings

    settings = ClsSettings(data="d", weights="imagenet", freeze_bn=True)
    assert settings.to_dict()["freeze_bn"] is True
    assert ClsSettings.from_dict(settings.to_dict()).freeze_bn is True
    older = {k: v for k, v in settings.to_dict().items() if k != "freeze_bn"}
    assert ClsSettings.from_dict(older).freeze_bn is False  # runs written before it
    assert added_settings("cls")["freeze_bn"] is False
    assert "freeze_bn" not in added_settings("seg")  # a segmenter has no such setting
    SegSettings.from_dict(added_settings("seg"))
