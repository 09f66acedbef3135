"""``breastus evaluate``'s settings (:class:`EvalSettings`, checked before anything is read),
the folder it writes, and what one evaluation gave (:class:`EvalResult`); ``breastus
calibrate``'s (:class:`CalibrateSettings`) and what it chose (:class:`Calibration`)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breastus_cli.data.combine import dataset_names
from breastus_cli.engine.apply.ensemble import TTA_MODES
from breastus_cli.engine.apply.postprocess import METHODS
from breastus_cli.engine.runs.cvdir import is_cv_dir
from breastus_cli.errors import UsageError


@dataclass
class EvalSettings:
    """Settings of ``breastus evaluate`` for one run."""

    run_dir: Path
    data: Path | None = None
    split: str = "test"
    target_sensitivity: float | None = None
    threshold: float | None = None
    batch_size: int = 32
    n_bootstrap: int = 2000
    seed: int = 0
    seg_run: Path | None = None  # lesion-centred classifiers: crops from this segmenter
    ensemble: bool = False  # run_dir is a cv folder scored as one model (its fold ensemble)
    tta: str = "none"  # test-time augmentation: none or flip (ensemble.with_tta)
    fusion: str = "none"  # "descriptors": fit the run's fused classifier (engine/apply/fusion.py)
    fuse_with: Path | None = None  # a second classifier run whose score the combiner also takes
    #: a segmenter's mask post-processing: None = the run's (RUN/postprocess.json, chosen on its
    #: validation cases by the calibration step; none without it), or one of METHODS forced
    postprocess: str | None = None

    def validate(self) -> None:
        if self.split not in ("train", "val", "test", "all"):
            raise UsageError(f"--split must be test, val, train or all (got '{self.split}')")
        self.calibration().validate()  # the options evaluate hands to the calibration step
        if self.postprocess is not None and self.postprocess not in METHODS:
            raise UsageError(f"--postprocess must be {' or '.join(METHODS)} "
                             f"(got '{self.postprocess}')")
        if self.ensemble and self.data is None:
            raise UsageError("--ensemble scores a fold ensemble on another dataset: give it with "
                             "--data (its fold models together saw every case of the "
                             "cross-validation's own dataset)")
        if self.ensemble and self.target_sensitivity is not None:
            raise UsageError("--ensemble: the threshold is the median of the folds' thresholds "
                             "(each chosen on its fold's validation cases); fix another with "
                             "--threshold, not --target-sensitivity")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"--threshold must lie in [0, 1] (got {self.threshold})")
        if self.threshold is not None and self.target_sensitivity is not None:
            raise UsageError("--threshold and --target-sensitivity exclude each other")
        if self.target_sensitivity is not None and self.split in ("val", "all"):
            raise UsageError(f"--target-sensitivity chooses the threshold on the validation "
                             f"cases, which --split {self.split} would then report on: the "
                             "threshold must come from validation: use --split test")
        if self.n_bootstrap < 0:
            raise UsageError(f"--bootstrap must be >= 0 (got {self.n_bootstrap})")
        if self.fusion != "none" and self.ensemble:
            raise UsageError("--fusion descriptors fits one run's fused classifier: it needs "
                             "--seg-run (the segmenter whose masks the descriptors describe)")
        if self.fusion != "none" and self.split != "test":
            raise UsageError("--fusion descriptors fits on the run's training and validation "
                             "cases: report it on --split test")

    def calibrates(self) -> bool:
        """Whether this evaluation first calibrates the run (``--target-sensitivity``,
        ``--fusion``): :func:`~breastus_cli.engine.evaluation.calibrate.calibrate`, the step
        ``breastus calibrate`` runs alone. Without them evaluate only reads the run."""
        return self.target_sensitivity is not None or self.fusion != "none"

    def calibration(self) -> CalibrateSettings:
        """The calibration step's settings for this evaluation's options."""
        return CalibrateSettings(run_dir=self.run_dir, data=self.data,
                                 target_sensitivity=self.target_sensitivity,
                                 seg_run=self.seg_run, fusion=self.fusion,
                                 fuse_with=self.fuse_with, batch_size=self.batch_size,
                                 tta=self.tta)

    def out_dir(self, other: bool = False) -> Path:
        """``RUN/eval-<split>/``; on ``other`` (``--data``, not the run's own dataset)
        ``RUN/eval-<dataset>-<split>/``, so scoring another hospital's cases never replaces the
        run's own evaluation; a fold ensemble's ``CV_DIR/eval-ensemble-<dataset>-<split>/``;
        with test-time augmentation ``...-tta-flip/`` (the plain evaluation is kept), with a
        forced segmentation post-processing ``...-postprocess-<method>/``."""
        suffix = "" if self.tta == "none" else f"-tta-{self.tta}"
        if self.postprocess is not None:
            suffix += f"-postprocess-{self.postprocess}"
        if self.ensemble:
            name = dataset_names([Path(self.data or "data")])[0]
            return Path(self.run_dir) / f"eval-ensemble-{name}-{self.split}{suffix}"
        if other and self.data is not None:
            name = dataset_names([Path(self.data)])[0]
            return Path(self.run_dir) / f"eval-{name}-{self.split}{suffix}"
        return Path(self.run_dir) / f"eval-{self.split}{suffix}"


@dataclass
class EvalResult:
    """One run evaluated on one split."""

    run_dir: Path
    out_dir: Path
    task: str
    split: str
    metrics: dict[str, Any]
    frame: Any  # pandas DataFrame of predictions
    config: dict[str, Any]
    command: str
    threshold_source: str = "default"
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None  # the prepared dataset scored (the run's own, or --data)
    #: ``data`` is another dataset than the run trained on (``--data OTHER``, or a fold
    #: ensemble's, which only scores other data): none of its cases trained or chose anything
    other: bool = False
    #: the calibration this evaluation ran first (--target-sensitivity, --fusion), else None
    calibration: Calibration | None = None


@dataclass
class CalibrateSettings:
    """Settings of ``breastus calibrate`` for one run: what to choose on its validation cases
    (a classifier's threshold for ``target_sensitivity``, its fused classifier with
    ``fusion``; a segmenter's mask post-processing, always)."""

    run_dir: Path
    data: Path | None = None  # the run's dataset when it moved (default: config.json's)
    target_sensitivity: float | None = None
    seg_run: Path | None = None  # lesion-centred classifiers' crops; the fusion's descriptors
    fusion: str = "none"  # "descriptors": fit the run's fused classifier
    fuse_with: Path | None = None  # a second classifier the fused classifier also takes
    batch_size: int = 32
    #: test-time augmentation of the scores the threshold is chosen on: a threshold chosen on
    #: augmented scores belongs to that evaluation only and is not written
    tta: str = "none"

    def validate(self) -> None:
        if self.tta not in TTA_MODES:
            raise UsageError(f"--tta must be {' or '.join(TTA_MODES)} (got '{self.tta}')")
        if self.target_sensitivity is not None and not 0 < self.target_sensitivity <= 1:
            raise UsageError(f"--target-sensitivity must lie in (0, 1] (got {self.target_sensitivity})")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.fusion not in ("none", "descriptors"):
            raise UsageError(f"--fusion must be none or descriptors (got '{self.fusion}')")
        if self.fusion != "none" and self.seg_run is None:
            raise UsageError("--fusion descriptors fits one run's fused classifier: it needs "
                             "--seg-run (the segmenter whose masks the descriptors describe)")
        if self.fuse_with is not None and self.fusion == "none":
            raise UsageError("--fuse-with adds a second classifier to the fused classifier: "
                             "give it with --fusion descriptors")
        if self.fuse_with is not None:
            if is_cv_dir(self.fuse_with):
                raise UsageError(f"--fuse-with takes one run directory, not the "
                                 f"cross-validation folder {self.fuse_with} (cv --fuse-with-cv "
                                 "fuses fold by fold)")
            if Path(self.fuse_with).resolve() == Path(self.run_dir).resolve():
                raise UsageError("--fuse-with needs another classifier than the run itself")


@dataclass
class Calibration:
    """What one calibration chose on a run's validation cases, and which run files it wrote.

    ``threshold``: threshold.json's content as chosen (None: not asked); ``postprocess``:
    postprocess.json's (a segmenter); ``fusion``: the fused classifier fitted (fusion.json);
    ``written``: the run files (re)written, by name; ``not_written``: why a choice stayed in
    memory (chosen on test-time-augmented scores or on another dataset's cases)."""

    run_dir: Path
    task: str
    threshold: dict[str, Any] | None = None
    postprocess: dict[str, Any] | None = None
    fusion: Any = None  # engine.apply.fusion.Fusion
    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # of ``written``: those there before
    not_written: str | None = None
    seconds: float = 0.0


def command_line(settings: EvalSettings) -> str:
    if sys.argv[1:] and Path(sys.argv[0]).name in ("breastus", "__main__.py"):
        return shlex.join(["breastus", *sys.argv[1:]])
    return f"breastus evaluate {settings.run_dir} --split {settings.split}"

