"""A training hands the model it wrote model.keras from to what follows in the same process
(the calibration step, a fold's evaluation): the file is not read and checked again, and the
model handed over answers exactly as the file does."""

from __future__ import annotations

import numpy as np

from conftest import FAST_CLS, run_cli


def test_train_cls_calibrates_on_its_own_model_without_reading_the_file(synth_data, tmp_path,
                                                                       monkeypatch):
    from breastus_cli.engine.apply import loaded_run, ood
    from breastus_cli.models import safe_load

    reads = []
    real = safe_load.load_keras_model
    monkeypatch.setattr(safe_load, "load_keras_model",
                        lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), *FAST_CLS, "--epochs", "2", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / ood.STATS_JSON).is_file()  # after_training ran (the feature statistics)
    assert reads == []  # its feature statistics came from the model in memory
    handed = loaded_run.load_model(run)
    from_file = real(run / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 1)).astype(np.float32)
    np.testing.assert_array_equal(handed(x).numpy(), from_file(x).numpy())


def test_a_model_last_saved_elsewhere_is_not_handed_over(synth_data, tmp_path):
    """A sweep's grid checkpoints are written from the same in-memory copy after the best one:
    its weights are then the grid epoch's, not model.keras's, so nothing is handed over."""
    from breastus_cli.engine.runs.settings import ClsSettings
    from breastus_cli.engine.training.tasks import task_for
    from breastus_cli.engine.training.train import train

    common = dict(data=synth_data, model="smallcnn", weights="none", img_size=64, epochs=2,
                  batch_size=16, lr=1e-3)
    plain = train(ClsSettings(**common, run_dir=tmp_path / "plain"), task_for("cls"))
    assert plain.model is not None
    grid = train(ClsSettings(**common, run_dir=tmp_path / "grid", checkpoint_epochs=[1, 2]),
                 task_for("cls"))
    assert grid.model is None
