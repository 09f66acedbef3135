"""Engine callbacks in isolation: NaN guard, history rows on resume, best checkpoint state."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

cb = pytest.importorskip("breastus_cli.engine.training.callbacks")


class _Model:
    stop_training = False

    def save(self, path):
        path.write_text("model")


def test_nan_guard_stops_at_the_first_non_finite_loss():
    guard = cb.NanGuard()
    guard.set_model(_Model())
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 0.7})
    assert guard.nan_at is None and not guard.model.stop_training
    guard.on_train_batch_end(1, {"loss": math.nan})
    assert guard.nan_at == 3 and guard.model.stop_training


def test_history_drops_epochs_that_will_run_again(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,seconds\n1,0.9,1.0\n2,0.8,1.0\n3,0.7,1.0\n")
    history = cb.HistoryCSV(tmp_path)

    class _Optimizer:
        learning_rate = 0.001

    model = _Model()
    model.optimizer = _Optimizer()
    history.set_model(model)
    history.on_train_begin()
    history.on_epoch_begin(1)  # resumed after epoch 1: epochs 2 and 3 run again
    history.on_epoch_end(1, {"loss": 0.5})
    rows = pd.read_csv(tmp_path / "history.csv")
    assert rows["epoch"].tolist() == [1, 2]
    assert rows["loss"].tolist() == [0.9, 0.5]


def test_best_checkpoint_keeps_its_state_across_a_resume(tmp_path):
    best = cb.BestCheckpoint(tmp_path, "val_auc", "max", patience=2,
                             save=lambda model, path: path.write_text("m"))
    best.set_model(_Model())
    best.on_train_begin()
    best.on_epoch_end(0, {"val_auc": 0.6})
    best.on_epoch_end(1, {"val_auc": 0.8})
    best.on_epoch_end(2, {"val_auc": 0.7})
    assert best.best_epoch == 2 and (tmp_path / "model.keras").read_text() == "m"
    resumed = cb.BestCheckpoint(tmp_path, "val_auc", "max", patience=2,
                                save=lambda model, path: path.write_text("m2"))
    resumed.set_model(_Model())
    resumed.on_train_begin()
    assert (resumed.best, resumed.best_epoch) == (0.8, 2)
    resumed.on_epoch_end(3, {"val_auc": 0.75})  # epoch 4: two epochs without improvement
    assert resumed.stopped_early_at == 4 and resumed.model.stop_training
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 2
