"""``breastus shift``: how new scans differ from a classifier run's training scans.

Per scan: size, pixel spacing (a prepared dataset's manifest, a DICOM's header), grey-level
histogram, mean and contrast (standard deviation), the fraction of the frame that is ultrasound
(the largest non-dark connected region, :func:`frame_fraction`), and the run's ``ood_score``
(:mod:`breastus_cli.engine.apply.ood`). The run's training cases (their images) and validation
cases (their ood scores) are the yardstick. Written: ``OUT/shift.json``, ``OUT/scans.csv``,
and (by the CLI) ``OUT/report.md`` with plots (:mod:`breastus_cli.reports.shift`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.imaging import resize_grey
from breastus_cli.data.manifest import manifest_path, read_manifest
from breastus_cli.data.scans import Frame, Unreadable, expand_inputs, stream
from breastus_cli.engine.apply import ood
from breastus_cli.engine.apply.images import resize_input
from breastus_cli.engine.apply.loaded_run import load_model
from breastus_cli.engine.runs.rundir import run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.ownership import SHIFT_FORMAT, claim

BINS = 32
DARK = 12  # grey level at or below which a pixel is border, not ultrasound
SMALL = 128  # side the frame fraction is computed at (speed; a fraction needs no detail)
#: the verdict: the new scans are "unlike training" when this share of them is out of domain
#: and it is at least twice the validation cases' own share
UNLIKE_SHARE = 0.25


@dataclass
class ScanStats:
    """Per-scan numbers of one set of scans (training's or the new folder's)."""

    names: list[str] = field(default_factory=list)
    width: list[int] = field(default_factory=list)
    height: list[int] = field(default_factory=list)
    pixel_mm: list[float] = field(default_factory=list)  # NaN when unknown
    mean: list[float] = field(default_factory=list)
    contrast: list[float] = field(default_factory=list)
    frame_fraction: list[float] = field(default_factory=list)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BINS))  # summed, normalised
    features: list[np.ndarray] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def frame_fraction(image: np.ndarray) -> float:
    """The fraction of the frame in its largest connected non-dark region (the ultrasound
    sector), computed on a small copy; black borders, text and calipers outside it count out."""
    from scipy import ndimage

    small = resize_grey(image, SMALL) if max(image.shape) > SMALL else image
    bright = ndimage.binary_opening(small > DARK, iterations=1)
    labels, n = ndimage.label(bright)
    if n == 0:
        return 0.0
    return float(np.bincount(labels.ravel())[1:].max() / labels.size)


def _sources(inputs: Path) -> tuple[list[Path], dict[str, float], str]:
    """The files of a prepared dataset (manifest, with its pixel sizes) or of a folder."""

    if inputs.is_dir() and manifest_path(inputs).is_file():
        manifest = read_manifest(inputs)
        files = [inputs / p for p in manifest["image"]]
        sizes = ({str(f): float(s) for f, s in zip(files, manifest["pixel_size_mm"]) if s == s}
                 if "pixel_size_mm" in manifest.columns else {})
        return files, sizes, "dataset"
    return expand_inputs([inputs]), {}, "folder"


def collect(files: list[Path], keras_model: Any, size: int, pixel: dict[str, float],
            workers: int = 2, batch: int = 32, layers: list[str] | None = None) -> ScanStats:
    """:class:`ScanStats` of ``files``: decoded and resized as predict does (threads), features
    by one batched forward pass per ``batch`` scans."""
    run = ood.feature_runner(keras_model, size, layers)
    stats = ScanStats()
    hist = np.zeros(BINS)
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            stats.features.extend(run(np.stack(pending)))
            pending.clear()

    def prepare(frame: Frame) -> None:
        frame.inputs[size] = resize_input(frame.image, size)

    for item in stream(files, workers, prepare=prepare):
        if isinstance(item, Unreadable):
            stats.errors.append((str(item.path), item.reason))
            continue
        for frame in item:
            image = frame.image
            stats.names.append(str(frame.path) + ("" if frame.frame is None
                                                  else f"#{frame.frame}"))
            stats.height.append(int(image.shape[0]))
            stats.width.append(int(image.shape[1]))
            mm = frame.pixel_size_mm or pixel.get(str(frame.path))
            stats.pixel_mm.append(float(mm) if mm else float("nan"))
            stats.mean.append(float(image.mean()))
            stats.contrast.append(float(image.std()))
            stats.frame_fraction.append(frame_fraction(image))
            hist += np.bincount((image.ravel() // (256 // BINS)).astype(np.int64),
                                minlength=BINS)[:BINS]
            pending.append(frame.inputs[size])
            if len(pending) >= batch:
                flush()
    flush()
    stats.histogram = hist / max(hist.sum(), 1.0)
    return stats


def _summary(values: list[float]) -> dict[str, float | None]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "median": None, "p5": None, "p95": None}
    return {"n": int(v.size), "median": round(float(np.median(v)), 4),
            "p5": round(float(np.quantile(v, 0.05)), 4),
            "p95": round(float(np.quantile(v, 0.95)), 4)}


def auc(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties half: the ood_score's AUC between two sets."""
    from scipy.stats import rankdata

    if len(negatives) == 0 or len(positives) == 0:
        return None
    ranks = rankdata(np.concatenate([negatives, positives]))
    n0, n1 = len(negatives), len(positives)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def verdict(share_new: float, n_new: int, share_val: float) -> str:
    unlike = share_new >= UNLIKE_SHARE and share_new >= 2 * share_val
    return (f"{'unlike' if unlike else 'like'} training: {share_new:.0%} of {n_new} scans out "
            f"of domain (training's own validation: {share_val:.0%})")


@dataclass
class ShiftResult:
    out: Path
    verdict: str
    summary: dict[str, Any]
    seconds: float
    scans: dict[str, ScanStats]  # "new", "training": for the report's plots
    scores: dict[str, np.ndarray]  # "new", "validation": ood scores


def shift(run_dir: Path, inputs: Path, out: Path, data: Path | None = None,
          workers: int = 2, max_train: int = 500) -> ShiftResult:
    """Compare the scans of ``inputs`` (a prepared dataset or a folder) with ``run_dir``'s
    training cases; write OUT/shift.json and OUT/scans.csv (the report: the CLI)."""
    start = time.perf_counter()
    run_dir, inputs = Path(run_dir), Path(inputs)
    if not inputs.exists():
        raise InputError(f"input not found: {inputs}")
    config = RunConfig.read(run_dir)
    if config.task != "cls":
        raise UsageError(f"{run_dir} is a '{config.task}' run: 'breastus shift' needs a "
                         "classifier run")
    claim(out, "shift", inputs=[run_dir, inputs])
    files, pixel, kind = _sources(inputs)
    if not files:
        raise InputError(f"{inputs} holds no scans")
    size = config.img_size
    model = load_model(run_dir)
    stats, record = ood.ensure(run_dir, model, data)
    train = run_cases(config, "train", data)
    if len(train) > max_train:  # the training side's image statistics: a fixed sample is enough
        train = train.sample(max_train, random_state=0)
    train_pixel = ({p: float(s) for p, s in zip(train["image_path"], train["pixel_size_mm"])
                    if s == s} if "pixel_size_mm" in train.columns else {})
    ref = collect([Path(p) for p in train["image_path"]], model, size, train_pixel, workers,
                  layers=stats.layers)
    new = collect(files, model, size, pixel, workers, layers=stats.layers)
    if not new.names:
        raise WorkError(f"no scan of {inputs} could be read ({len(new.errors)} failed)")
    new_scores = stats.score(np.stack(new.features))
    ref_scores = stats.score(np.stack(ref.features))
    val_scores = stats.val_scores
    share_new = float(np.mean(new_scores > 1.0))
    share_val = float(np.mean(val_scores > 1.0))
    line = verdict(share_new, len(new.names), share_val)
    measures = ("width", "height", "pixel_mm", "mean", "contrast", "frame_fraction")
    summary: dict[str, Any] = {
        "format": SHIFT_FORMAT, "run": str(run_dir), "inputs": str(inputs), "input_kind": kind,
        "verdict": line, "n_scans": len(new.names), "n_errors": len(new.errors),
        "n_training_scans": len(ref.names), "n_validation_cases": int(len(val_scores)),
        "out_of_domain": share_new, "validation_out_of_domain": share_val,
        "training_out_of_domain": float(np.mean(ref_scores > 1.0)),
        "ood_auc_vs_validation": auc(val_scores, new_scores),
        "ood_score": {"new": _summary(list(new_scores)),
                      "validation": _summary(list(val_scores)),
                      "training": _summary(list(ref_scores))},
        "measures": {m: {"new": _summary(getattr(new, m)), "training": _summary(getattr(ref, m))}
                     for m in measures},
        "histogram_distance": round(float(0.5 * np.abs(new.histogram - ref.histogram).sum()), 4),
        "feature_stats": {k: record.get(k) for k in ("model_sha256", "n_train", "n_val", "dims",
                                                     "method", "levels")},
        "errors": [{"path": p, "reason": r} for p, r in new.errors[:50]],
    }
    out.mkdir(parents=True, exist_ok=True)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    _write_scans(out / "scans.csv", new, new_scores)
    write_json(out / "shift.json", summary)  # the marker last: a folder with it is complete
    return ShiftResult(out, line, summary, summary["seconds"], {"new": new, "training": ref},
                       {"new": new_scores, "validation": val_scores})


def _write_scans(path: Path, stats: ScanStats, scores: np.ndarray) -> None:
    import pandas as pd

    frame = pd.DataFrame({"path": stats.names, "width": stats.width, "height": stats.height,
                          "pixel_size_mm": stats.pixel_mm, "mean": np.round(stats.mean, 3),
                          "contrast": np.round(stats.contrast, 3),
                          "frame_fraction": np.round(stats.frame_fraction, 4),
                          "ood_score": np.round(scores, 4), "in_domain": scores <= 1.0})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
