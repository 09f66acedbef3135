"""Keras callbacks shared by every task: history, best checkpoint, early stopping, NaN guard,
progress. Importing this module imports TensorFlow (through the backend)."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from breastus_cli import backend
from breastus_cli.atomic import atomic_path, write_json, write_text
from breastus_cli.engine.runs.rundir import BEST, HISTORY, MODEL, log
from breastus_cli.runfiles import read_best

keras = backend.keras()


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``RUN/history.csv`` as dicts of floats (epoch as int); [] when absent."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                try:
                    parsed[key] = int(value) if key == "epoch" else float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
            rows.append(parsed)
    return rows


def backed_up_epochs(backup_dir: Path) -> int:
    """Epochs complete in ``BackupAndRestore``'s state under ``backup_dir``: the epoch count
    ``fit`` continues after on a resume (0 when there is no readable backup)."""
    tf = backend.tf()
    try:
        latest = tf.train.latest_checkpoint(str(Path(backup_dir) / "chief"))
        if latest is None:
            return 0
        # the callback stores the 0-based index of the epoch it backed up at that epoch's end
        saved = tf.train.load_variable(latest, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")
        return max(0, int(saved) + 1)
    except (tf.errors.OpError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class HistoryCSV(keras.callbacks.Callback):
    """One row per finished epoch (1-based), rewritten atomically; on resume, rows of epochs that
    will run again are dropped so the file never holds an epoch twice."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        self._start = 0.0
        self._truncated = False

    def on_train_begin(self, logs: Any = None) -> None:
        self.rows = read_history(self.run_dir)
        self._truncated = False

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if not self._truncated:  # the first epoch of this process: forget what will be redone
            self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch]
            self._truncated = True
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: _float(v) for k, v in (logs or {}).items()})
        try:
            row["lr"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        except Exception:  # schedules without a plain value
            row["lr"] = math.nan
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows = [r for r in self.rows if int(r["epoch"]) != epoch + 1] + [row]
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.run_dir / HISTORY, buffer.getvalue())


class BestCheckpoint(keras.callbacks.Callback):
    """Save ``model.keras`` (atomically) whenever the monitored metric improves; stop early after
    ``patience`` epochs without improvement (0: never). State survives a resume via best.json."""

    def __init__(self, run_dir: Path, monitor: str, mode: str, patience: int = 0,
                 save: Callable[[Any, Path], None] | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0
        self.stopped_early_at: int | None = None
        self._save = save or (lambda model, path: model.save(path))

    def _better(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_begin(self, logs: Any = None) -> None:
        path = self.run_dir / BEST
        if path.is_file():  # resuming: the best so far was recorded
            state = read_best(path)
            self.best, self.best_epoch = state.value, state.epoch

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = logs or {}
        value = _float(logs.get(self.monitor))
        if math.isnan(value):
            log.warning("monitored metric %s missing or NaN at epoch %d", self.monitor, epoch + 1)
        elif self._better(value) or self.best_epoch == 0:
            self.best, self.best_epoch = value, epoch + 1
            with atomic_path(self.run_dir / MODEL) as tmp:
                self._save(self.model, tmp)
            write_json(self.run_dir / BEST, {
                "epoch": epoch + 1, "monitor": self.monitor, "mode": self.mode, "value": value,
                "metrics": {k: _float(v) for k, v in logs.items()},
            })
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_early_at = epoch + 1
            self.model.stop_training = True


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss; the engine turns it into one clear error."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.nan_at: int | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        loss = _float((logs or {}).get("loss"))
        if not math.isfinite(loss):
            self.nan_at = self.epoch
            self.model.stop_training = True


class EpochReporter(keras.callbacks.Callback):
    """Hands each finished epoch (and batch progress) to the caller; the CLI renders it."""

    def __init__(self, epochs: int, steps: int,
                 on_epoch: Callable[[int, int, dict[str, float], float], None] | None,
                 on_batch: Callable[[int, int, int], None] | None) -> None:
        super().__init__()
        self.epochs, self.steps = epochs, steps
        self.on_epoch, self.on_batch = on_epoch, on_batch
        self._epoch, self._start = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch, self._start = epoch + 1, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.on_batch is not None:
            self.on_batch(self._epoch, batch + 1, self.steps)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        seconds = time.perf_counter() - self._start
        values = {k: _float(v) for k, v in (logs or {}).items()}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        log.info("epoch %d/%d  %s  (%.1f s)", epoch + 1, self.epochs, shown, seconds)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.epochs, values, seconds)


class EpochCheckpoints(keras.callbacks.Callback):
    """Save the model at chosen epochs (a sweep's grid epochs): ``folder/epoch-010.keras``."""

    def __init__(self, folder: Path, epochs: list[int],
                 save: Callable[[Any, Path], None]) -> None:
        super().__init__()
        self.folder, self.epochs, self._save = Path(folder), set(epochs), save

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch + 1 in self.epochs:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.folder / f"epoch-{epoch + 1:03d}.keras") as tmp:
                self._save(self.model, tmp)
