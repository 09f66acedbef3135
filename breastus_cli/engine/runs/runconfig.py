"""One typed view of a run's config.json: :class:`RunConfig`, what engine code reads from it.

config.json is checked by its schema (:class:`breastus_cli.runfiles.ConfigFile`) when read;
the schema's defaults are what a file written before a key existed means, so every default
lives there, once. Code asks ``config.img_size`` or ``config.data_path``, never
``config["settings"]["img_size"]``::

    config = RunConfig.read(run_dir)           # exit 2 for a folder that is no run, a bad value
    config = RunConfig.of(loaded.config)       # a config dict already read (or built: ensemble)
    size, fold = config.img_size, config.fold
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastus_cli import runfiles
from breastus_cli.errors import InputError

CONFIG = "config.json"


def lesion_margin(task: str | None, roi: Mapping[str, Any] | None) -> float | None:
    """The crop margin of a lesion-centred classifier (``roi.source`` "mask"; a run's
    config.json or an export's metadata.json), else None."""
    roi = roi or {}
    if task == "cls" and roi.get("source") == "mask":
        return float(roi.get("margin", 0.2))
    return None


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json, checked: typed accessors; ``raw`` is the file as read (what is
    copied on: an adapted run's config, the ensemble's)."""

    file: runfiles.ConfigFile
    raw: dict[str, Any]

    @classmethod
    def read(cls, run_dir: str | Path) -> RunConfig:
        """``RUN/config.json``; a folder that is not a run is an :class:`InputError`."""
        path = Path(run_dir) / CONFIG
        if not Path(run_dir).is_dir():
            raise InputError(f"run directory not found: {run_dir}")
        if not path.is_file():
            raise InputError(f"{run_dir} is not a breastus run directory (no {CONFIG})")
        file, raw = runfiles.load(path, runfiles.ConfigFile)
        return cls(file, raw)

    @classmethod
    def of(cls, config: Mapping[str, Any] | RunConfig, where: str = CONFIG) -> RunConfig:
        """The view of a config dict already read (or built by code: a fold ensemble's)."""
        if isinstance(config, RunConfig):
            return config
        raw = dict(config)
        return cls(runfiles.validate(where, raw, runfiles.ConfigFile), raw)

    # ---- what the run is --------------------------------------------------------------------
    @property
    def task(self) -> str | None:
        """"cls" or "seg" (None: a file without one)."""
        return self.file.task

    @property
    def status(self) -> str | None:
        """"finished", "interrupted", "failed: ...", "adapted" (None: never trained)."""
        return self.file.status

    @property
    def finished(self) -> bool:
        return self.file.status == "finished"

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting as recorded (a copy): what a resumed or replayed run starts from."""
        return dict(self.raw.get("settings") or {})

    @property
    def model(self) -> str | None:
        """The classifier's architecture (``settings.model``)."""
        return self.file.settings.model

    @property
    def backbone(self) -> str | None:
        """The segmenter's encoder (``settings.backbone``)."""
        return self.file.settings.backbone

    @property
    def model_name(self) -> str | None:
        """The model as people name it: the classifier's architecture, ``unet-<encoder>``."""
        if self.model:
            return self.model
        return f"unet-{self.backbone}" if self.backbone else None

    @property
    def weights(self) -> str | None:
        return self.file.settings.weights

    @property
    def img_size(self) -> int:
        return self.file.settings.img_size

    @property
    def batch_size(self) -> int:
        return self.file.settings.batch_size

    @property
    def include_other_masks(self) -> bool:
        return self.file.settings.include_other_masks

    # ---- its cases --------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self.file.settings.seed

    @property
    def fold(self) -> int | None:
        """The held-out fold it trained without (``settings.fold``; None: a plain split)."""
        return self.file.settings.fold

    @property
    def val_fraction(self) -> float:
        return self.file.settings.val_fraction

    @property
    def data(self) -> dict[str, Any]:
        """config.json's record of its dataset (path, SHA-256s, fold, members), {} if none."""
        return dict(self.raw.get("data") or {})

    @property
    def data_path(self) -> Path | None:
        """The dataset it trained on (``data.path``; ``settings.data`` in older files)."""
        record = self.file.data
        path = (record.path if record is not None else None) or self.file.settings.data
        return Path(path) if path else None

    @property
    def ensemble(self) -> dict[str, Any] | None:
        """The fold ensemble a cross-validation folder's evaluation averages (its folds, their
        thresholds, the median and its source: evaluation's ``ensemble_config`` records it in
        the config it builds), None for a run."""
        record = self.raw.get("ensemble")
        return dict(record) if isinstance(record, Mapping) else None

    @property
    def data_fold(self) -> int | None:
        """The fold recorded with its data (``settings.fold`` in files before the record)."""
        record = self.file.data
        if record is not None and "fold" in record.model_fields_set:
            return record.fold
        return self.fold

    # ---- how it decides ---------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """config.json's decision threshold (0.5; threshold.json, when present, wins:
        rundir.read_threshold)."""
        return self.file.threshold

    @property
    def labels(self) -> list[str]:
        return list(self.file.labels)

    @property
    def positive_label(self) -> str:
        return self.file.positive_label

    @property
    def roi_source(self) -> str:
        """Where a classifier's crops come from: "none" (whole images) or "mask"."""
        roi = self.file.roi
        return (roi.source if roi is not None else None) or "none"

    @property
    def roi(self) -> dict[str, Any] | None:
        """config.json's roi block as recorded (export copies it), None if none."""
        roi = self.raw.get("roi")
        return dict(roi) if isinstance(roi, Mapping) else None

    @property
    def roi_margin(self) -> float | None:
        """A lesion-centred classifier's crop margin, else None (:func:`lesion_margin`)."""
        return lesion_margin(self.task, self.roi)

    @property
    def input(self) -> dict[str, Any]:
        """How the model takes its images (preprocessing, resize), {} in older files."""
        return dict(self.file.input or {})

    @property
    def epochs_run(self) -> int | None:
        """Epochs trained when it finished (None if not recorded)."""
        return self.file.result.epochs_run if self.file.result is not None else None

    @property
    def seconds_this_process(self) -> float:
        """Training seconds of the process that finished it (0.0 if not recorded)."""
        result = self.file.result
        return float((result.seconds_this_process if result is not None else None) or 0.0)
