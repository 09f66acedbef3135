"""``breastus predict``'s settings (:class:`PredictSettings`, checked before anything is read)
and what a prediction run did (:class:`PredictResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS
from breastus_cli.data.scans import shard
from breastus_cli.engine.apply.ensemble import TTA_MODES
from breastus_cli.engine.apply.postprocess import METHODS
from breastus_cli.errors import UsageError


@dataclass
class PredictSettings:
    """Settings of ``breastus predict``."""

    inputs: list[Path]
    out: Path
    cls_run: Path | None = None
    seg_run: Path | None = None
    engine: str = "keras"
    threshold: float | None = None
    seg_threshold: float = 0.5
    #: the segmenter's mask post-processing: None = the run's (RUN/postprocess.json: chosen on
    #: its validation cases), or one of postprocess.METHODS
    seg_postprocess: str | None = None
    pixel_size: float | None = None
    manifest: Path | None = None
    save_masks: bool = False
    save_overlays: bool = False
    explain: bool = False
    batch_size: int = 16
    resume: bool = False
    overwrite: bool = False
    num_parts: int = 1
    part_id: int = 1
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger files go to errors.csv, undecoded
    tta: str = "none"  # test-time augmentation: none or flip (ensemble.with_tta)

    def validate(self) -> None:
        if self.cls_run is None and self.seg_run is None:
            raise UsageError("give a classifier (--cls-run) and/or a segmenter (--seg-run)")
        if self.engine not in ("keras", "tflite"):
            raise UsageError(f"--engine must be keras or tflite (got '{self.engine}')")
        if self.tta not in TTA_MODES:
            raise UsageError(f"--tta must be {' or '.join(TTA_MODES)} (got '{self.tta}')")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"--threshold must lie in [0, 1] (got {self.threshold})")
        if not 0 < self.seg_threshold < 1:
            raise UsageError(f"--seg-threshold must lie in (0, 1) (got {self.seg_threshold})")
        if self.seg_postprocess is not None and self.seg_postprocess not in METHODS:
            raise UsageError(f"--seg-postprocess must be {' or '.join(METHODS)} "
                             f"(got '{self.seg_postprocess}')")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise UsageError(f"--pixel-size must be positive mm per pixel (got {self.pixel_size})")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be at least 1 (got {self.max_pixels})")
        if self.explain and self.cls_run is None:
            raise UsageError("--explain needs a classifier (--cls-run)")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        shard([], self.num_parts, self.part_id)  # validates the two numbers
        if (self.save_masks or self.save_overlays) and self.seg_run is None and not self.explain:
            raise UsageError("--save-masks/--save-overlays need a segmenter (--seg-run)")


@dataclass
class PredictResult:
    """What a prediction run did; the CLI renders it."""

    out: Path
    files: int
    rows: int
    errors: int
    malignant: int
    skipped_done: int
    seconds: float
    images_per_second: float
    error_examples: list[tuple[str, str]] = field(default_factory=list)
