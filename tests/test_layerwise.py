"""``train-cls --head-warmup E --backbone-lr-scale S``: the head trains alone for E epochs, then
the backbone joins at S x the head's rate, with an Adam of its own that a resume restores
(issue 29's "which layers train and when" candidate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli


def _settings(**over):
    from breastus_cli.engine.runs.settings import ClsSettings

    values = {"data": "d", "weights": "imagenet", "epochs": 3, "lr": 1e-2, "head_warmup": 1,
              "backbone_lr_scale": 0.5, **over}
    return ClsSettings(**values)


def _model(settings):
    from breastus_cli import backend
    from breastus_cli.engine.training import layerwise
    from breastus_cli.engine.training.tasks import ClassificationTask
    from breastus_cli.models.classifiers import build_classifier

    keras = backend.keras()
    keras.utils.set_random_seed(3)
    model = layerwise.wrap(build_classifier("smallcnn", 32), settings,
                           ClassificationTask.transfer_layer)
    model.compile(optimizer=keras.optimizers.Adam(settings.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 1)).astype(np.float32)
    return x, (x.mean(axis=(1, 2, 3)) > 127.5).astype(np.int32)


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_warmup_trains_the_head_alone_then_the_backbone_joins():
    from breastus_cli.engine.training import layerwise

    settings = _settings()
    model = _model(settings)
    backbone = model.get_layer("backbone")
    weights, statistics = (_values(backbone.trainable_variables),
                           _values(backbone.non_trainable_variables))
    head = _values(model.get_layer("head").trainable_variables)
    x, y = _data()
    fit = {"batch_size": 8, "verbose": 0, "class_weight": {0: 1.0, 1: 2.0}}

    model.fit(x, y, epochs=1, callbacks=[layerwise.callback(settings)], **fit)
    assert _same(weights, _values(backbone.trainable_variables))  # bit for bit
    assert not _same(head, _values(model.get_layer("head").trainable_variables))
    # batch statistics: the moving ones follow the data during the warm-up too
    assert not _same(statistics, _values(backbone.non_trainable_variables))
    assert float(model.backbone_optimizer.learning_rate) == 0.0
    assert int(model.backbone_optimizer.iterations) == 4  # its moments saw every step

    model.fit(x, y, epochs=2, initial_epoch=1, callbacks=[layerwise.callback(settings)], **fit)
    assert not _same(weights, _values(backbone.trainable_variables))
    assert float(model.backbone_optimizer.learning_rate) == pytest.approx(0.5 * 1e-2)


def test_a_resume_restores_the_backbone_optimizer(tmp_path):
    from breastus_cli import backend
    from breastus_cli.engine.training import layerwise

    keras = backend.keras()
    settings = _settings()
    x, y = _data()
    backup = str(tmp_path / "backup")
    first = _model(settings)
    first.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[layerwise.callback(settings), keras.callbacks.BackupAndRestore(backup)])
    moments = _values(first.backbone_optimizer.variables)
    # a new process: the same model built again, fit told to go on to epoch 3
    second = _model(settings)
    second.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[layerwise.callback(settings), keras.callbacks.BackupAndRestore(backup)])
    assert int(second.backbone_optimizer.iterations) == 8  # restored, nothing ran again
    assert _same(moments, _values(second.backbone_optimizer.variables))
    assert _same(first.get_weights(), second.get_weights())


def test_train_cls_head_warmup_end_to_end(synth_data, tmp_path):
    from breastus_cli.models.classifiers import build_classifier

    weights = tmp_path / "backbone.weights.h5"
    build_classifier("smallcnn", 32).get_layer("backbone").save_weights(str(weights))
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), "--model", "smallcnn", "--weights", str(weights),
                   "--head-warmup", "1", "--backbone-lr-scale", "0.5", "--img-size", "32",
                   "--epochs", "2", "--batch-size", "8", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished"
    assert (config["settings"]["head_warmup"], config["settings"]["backbone_lr_scale"]) == (1, 0.5)
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    # model.keras is the plain functional model: the safe loader opens it
    from breastus_cli.models.safe_load import load_keras_model

    model = load_keras_model(run / "model.keras")
    assert type(model).__name__ in ("Functional", "Model")
    assert not hasattr(model, "backbone_optimizer")


@pytest.mark.parametrize("args, says", [
    (("--weights", "none", "--head-warmup", "1"), "--head-warmup"),
    (("--weights", "imagenet", "--head-warmup", "3"), "--head-warmup must lie"),
    (("--weights", "none", "--backbone-lr-scale", "0"), "--backbone-lr-scale must lie"),
    (("--weights", "none", "--backbone-lr-scale", "nan"), "--backbone-lr-scale must lie"),
    (("--weights", "none", "--backbone-lr-scale", "0.5", "--freeze-backbone"),
     "--freeze-backbone"),
])
def test_bad_layerwise_settings_are_one_line_exit_2(synth_data, tmp_path, args, says):
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), "--model", "smallcnn", "--img-size", "32",
                   "--epochs", "3", *args, "--run-dir", str(run))
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists()


def test_older_runs_and_plans_read_as_one_optimizer():
    from breastus_cli.engine.runs.settings import ClsSettings, added_settings

    older = {k: v for k, v in _settings().to_dict().items()
             if k not in ("head_warmup", "backbone_lr_scale")}
    settings = ClsSettings.from_dict(older)
    assert (settings.head_warmup, settings.backbone_lr_scale) == (0, 1.0)
    assert not settings.layerwise()
    assert added_settings("cls")["head_warmup"] == 0
    assert added_settings("cls")["backbone_lr_scale"] == 1.0
