"""``breastus predict``: stream files and folders of scans through a classifier and/or a
segmenter, writing one row per image as soon as its batch is done.

    OUT/predictions.csv   path, frame, size, p_malignant, label, lesion area (px, mm^2), files
    OUT/errors.csv        files that could not be read, and why (the batch goes on)
    OUT/masks/            lesion masks at the original size, 0/255 (--save-masks)
    OUT/overlays/         probability + contour over the image (--save-overlays)
    OUT/explain/          Grad-CAM of the classifier (--explain)

Decoding runs ahead in threads (bounded), resizing uses the same TensorFlow op as training,
inference is a compiled function (Keras) or a TFLite interpreter with XNNPACK.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.data.scans import Frame, Unreadable, expand_inputs, shard, stream
from breastus_cli.errors import InputError, UsageError, WorkError

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
THRESHOLD_FILE = "threshold.json"
COLUMNS = ["path", "frame", "width", "height", "pixel_size_mm", "p_malignant", "label",
           "threshold", "lesion_area_px", "lesion_area_mm2", "mask", "overlay", "explain",
           "seconds"]
ERROR_COLUMNS = ["path", "reason"]


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

    def validate(self) -> None:
        if self.cls_run is None and self.seg_run is None:
            raise UsageError("give a classifier (--cls-run) and/or a segmenter (--seg-run)")
        if self.engine not in ("keras", "tflite"):
            raise UsageError(f"--engine must be keras or tflite (got '{self.engine}')")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"--threshold must lie in [0, 1] (got {self.threshold})")
        if not 0 < self.seg_threshold < 1:
            raise UsageError(f"--seg-threshold must lie in (0, 1) (got {self.seg_threshold})")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise UsageError(f"--pixel-size must be positive mm per pixel (got {self.pixel_size})")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {self.batch_size})")
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


# ---- models ---------------------------------------------------------------------------------
@dataclass
class _Model:
    task: str
    size: int
    run: Callable[[np.ndarray], np.ndarray]
    threshold: float
    keras_model: Any = None
    roi_margin: float | None = None  # lesion-centred classifier: crop around the seg mask


def _run_threshold(run_dir: Path, config: dict[str, Any]) -> float:
    chosen = run_dir / THRESHOLD_FILE
    if chosen.is_file():
        return float(json.loads(chosen.read_text())["threshold"])
    return float(config.get("threshold", 0.5))


def _open_model(source: Path, expected: str, engine: str, need_keras: bool) -> _Model:
    """A run directory (Keras or its TFLite export) or an exported .tflite file."""
    from breastus_cli.engine.rundir import read_config

    source = Path(source)
    if source.suffix == ".tflite":
        from breastus_cli.engine.export import TFLiteModel

        if not source.is_file():
            raise InputError(f"TFLite file not found: {source}")
        lite = TFLiteModel(source)
        task = lite.task or expected
        if task != expected:
            raise UsageError(f"{source} is a {task} model, not a {expected} model")
        if need_keras:
            raise UsageError("--explain needs the run directory (Keras model), not a .tflite file")
        roi = lite.metadata.get("roi") or {}
        return _Model(task, lite.input_size, lite.predict,
                      float(lite.metadata.get("threshold", 0.5)),
                      roi_margin=float(roi["margin"]) if roi.get("source") == "mask" else None)
    config = read_config(source)
    if config.get("task") != expected:
        option = "--cls-run" if expected == "cls" else "--seg-run"
        raise UsageError(f"{option} {source} is a '{config.get('task')}' run, not '{expected}'")
    size = int(config["settings"]["img_size"])
    threshold = _run_threshold(source, config)
    keras_model = None
    if engine == "keras" or need_keras:
        from breastus_cli import backend
        from breastus_cli.engine.inference import load_model

        keras_model = load_model(source)
        tf = backend.tf()
        forward = tf.function(lambda x: keras_model(x, training=False), reduce_retracing=True,
                              input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])

        def run_keras(batch: np.ndarray) -> np.ndarray:
            return forward(batch).numpy()

        runner: Callable[[np.ndarray], np.ndarray] = run_keras
    if engine == "tflite":
        from breastus_cli.engine.export import TFLiteModel

        export = source / "export"
        files = [export / n for n in ("model.tflite", "model-float16.tflite", "model-int8.tflite")]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise InputError(f"no TFLite export in {export}",
                             hint=f"run 'breastus export {source} --format tflite' first")
        runner = TFLiteModel(found).predict
    roi = config.get("roi") or {}
    return _Model(expected, size, runner, threshold, keras_model,
                  float(roi["margin"]) if roi.get("source") == "mask" else None)


# ---- output files ---------------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class _Appender:
    """Appends CSV rows and flushes them: a kill loses at most the batch in flight."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        new = not path.is_file() or path.stat().st_size == 0
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.fh.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.writer.writerows(rows)
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _stem(frame: Frame) -> str:
    """A file name unique per input path and frame (inputs from different folders may share a
    name)."""
    digest = hashlib.sha1(str(frame.path.resolve()).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in frame.path.stem)[:60]
    return f"{stem}-{digest}" + (f"-f{frame.frame:04d}" if frame.frame is not None else "")


def _manifest_pixel_sizes(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    import pandas as pd

    if not Path(path).is_file():
        raise InputError(f"--manifest {path} not found")
    frame = pd.read_csv(path)
    if "pixel_size_mm" not in frame.columns:
        raise InputError(f"--manifest {path} has no pixel_size_mm column")
    sizes: dict[str, float] = {}
    for column in ("source", "image"):
        if column in frame.columns:
            for name, size in zip(frame[column].astype(str), frame["pixel_size_mm"]):
                if size == size:  # not NaN
                    sizes[Path(name).name] = float(size)
    return sizes


# ---- the run --------------------------------------------------------------------------------
def _resized(image: np.ndarray, size: int, tf: Any) -> np.ndarray:
    """The training pipeline's resize (bilinear, antialiased, rounded to uint8)."""
    tensor = tf.image.resize(tf.cast(image[..., None], tf.float32), [size, size],
                             method="bilinear", antialias=True)
    return np.clip(np.rint(tensor.numpy()), 0, 255).astype(np.float32)


def _input(frame: Frame, size: int, tf: Any) -> np.ndarray:
    """The frame's model input at ``size``, prepared in the decoding thread when possible."""
    ready = frame.inputs.get(size)
    return ready if ready is not None else _resized(frame.image, size, tf)


def _batches(items: Iterator[list[Frame] | Unreadable], batch_size: int,
             skip: set[tuple[str, str]]) -> Iterator[tuple[list[Frame], list[Unreadable]]]:
    frames: list[Frame] = []
    errors: list[Unreadable] = []
    for item in items:
        if isinstance(item, Unreadable):
            errors.append(item)
            continue
        for frame in item:
            key = (str(frame.path), "" if frame.frame is None else str(frame.frame))
            if key not in skip:
                frames.append(frame)
            if len(frames) >= batch_size:
                yield frames, errors
                frames, errors = [], []
    if frames or errors:
        yield frames, errors


def predict(settings: PredictSettings,
            on_progress: Callable[[int, int], None] | None = None) -> PredictResult:
    """Predict every input; resumable, shardable, streaming.

    >>> predict(PredictSettings([Path("scans/")], Path("out"), cls_run=Path("runs/cls/x")))  # doctest: +SKIP
    """
    settings.validate()
    start = time.perf_counter()
    files = shard(expand_inputs(settings.inputs), settings.num_parts, settings.part_id)
    out = Path(settings.out)
    existing = out / PREDICTIONS
    if existing.exists() and not settings.resume:
        if not settings.overwrite:
            raise InputError(f"{existing} exists", hint="continue it with --resume, or replace "
                                                        "it with --overwrite")
        for name in (PREDICTIONS, ERRORS):
            (out / name).unlink(missing_ok=True)
        for folder in ("masks", "overlays", "explain"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    done_rows = _read_rows(out / PREDICTIONS) if settings.resume else []
    failed = {r["path"] for r in _read_rows(out / ERRORS)} if settings.resume else set()
    skip = {(r["path"], r["frame"]) for r in done_rows}
    done_paths = {r["path"] for r in done_rows}
    # A plain image already in predictions.csv is not decoded again; a DICOM may have frames
    # left, so it is decoded and its finished frames dropped.
    todo = [f for f in files if str(f) not in failed and not (
        str(f) in done_paths and f.suffix.lower() not in (".dcm", ".dicom"))]
    skipped = len(files) - len(todo)

    from breastus_cli import backend

    tf = backend.tf()
    cls = _open_model(settings.cls_run, "cls", settings.engine, settings.explain) \
        if settings.cls_run else None
    seg = _open_model(settings.seg_run, "seg", settings.engine, False) if settings.seg_run else None
    if cls is not None and cls.roi_margin is not None and seg is None:
        raise UsageError(f"--cls-run {settings.cls_run} classifies lesion crops: give the "
                         "segmenter that finds them with --seg-run")
    threshold = settings.threshold if settings.threshold is not None else (
        cls.threshold if cls else None)
    pixel_sizes = _manifest_pixel_sizes(settings.manifest)
    for folder, wanted in (("masks", settings.save_masks), ("overlays", settings.save_overlays),
                           ("explain", settings.explain)):
        if wanted:
            (out / folder).mkdir(exist_ok=True)

    rows_out = _Appender(out / PREDICTIONS, COLUMNS)
    errors_out = _Appender(out / ERRORS, ERROR_COLUMNS)
    n_rows = n_errors = n_malignant = 0
    error_examples: list[tuple[str, str]] = []
    processed = 0
    infer_start = time.perf_counter()
    try:
        # Whole-image inputs are resized in the decoding threads, overlapping the forward pass;
        # lesion crops depend on the segmenter's output and are made in the batch.
        sizes = {m.size for m in (cls, seg) if m is not None and m.roi_margin is None}

        def prepare(frame: Frame) -> None:
            for size in sizes:
                frame.inputs[size] = _resized(frame.image, size, tf)

        for frames, errors in _batches(stream(todo, settings.workers, prepare=prepare),
                                       settings.batch_size, skip):
            errors_out.write([{"path": str(e.path), "reason": e.reason} for e in errors])
            n_errors += len(errors)
            error_examples += [(str(e.path), e.reason) for e in errors][: 5 - len(error_examples)]
            if frames:
                batch_start = time.perf_counter()
                rows = _predict_batch(frames, cls, seg, threshold, settings, out, pixel_sizes, tf)
                per_image = (time.perf_counter() - batch_start) / len(frames)
                for row in rows:
                    row["seconds"] = round(per_image, 4)
                rows_out.write(rows)
                n_rows += len(rows)
                n_malignant += sum(1 for r in rows if r.get("label") == "malignant")
            processed += len({f.path for f in frames}) + len(errors)
            if on_progress is not None:
                on_progress(min(processed, len(todo)), len(todo))
    finally:
        rows_out.close()
        errors_out.close()
    seconds = time.perf_counter() - start
    rate = n_rows / max(time.perf_counter() - infer_start, 1e-9)
    if n_rows == 0 and n_errors and not done_rows:
        raise WorkError(f"nothing could be read: {n_errors} file(s) failed, see {out / ERRORS}")
    return PredictResult(out=out, files=len(files), rows=n_rows, errors=n_errors,
                         malignant=n_malignant, skipped_done=skipped, seconds=round(seconds, 2),
                         images_per_second=round(rate, 2), error_examples=error_examples)


def _predict_batch(frames: list[Frame], cls: _Model | None, seg: _Model | None,
                   threshold: float | None, settings: PredictSettings, out: Path,
                   pixel_sizes: dict[str, float], tf: Any) -> list[dict[str, Any]]:
    from PIL import Image

    from breastus_cli.data.imaging import save_png
    from breastus_cli.engine import overlays

    rows: list[dict[str, Any]] = []
    p_mal = probs = heat = None
    big_probs: list[np.ndarray] = []
    if seg is not None:
        batch = np.stack([_input(f, seg.size, tf) for f in frames])
        probs = seg.run(batch)[..., 0]
        for frame, prob in zip(frames, probs):
            height, width = frame.image.shape
            big_probs.append(np.asarray(
                Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32))
                .resize((width, height), Image.BILINEAR)))
    if cls is not None:
        if cls.roi_margin is None:
            batch = np.stack([_input(f, cls.size, tf) for f in frames])
        else:  # lesion-centred: crop around the predicted lesion
            from breastus_cli.data.roi import crop, roi_box

            batch = np.stack([
                _resized(crop(f.image, roi_box(p >= settings.seg_threshold, cls.roi_margin)[0]),
                         cls.size, tf) for f, p in zip(frames, big_probs)])
        p_mal = cls.run(batch)[:, 1]
        if settings.explain:
            from breastus_cli.engine.gradcam import gradcam

            heat = gradcam(cls.keras_model, batch)
    for i, frame in enumerate(frames):
        height, width = frame.image.shape
        pixel = (settings.pixel_size or frame.pixel_size_mm
                 or pixel_sizes.get(frame.path.name))
        row: dict[str, Any] = {"path": str(frame.path),
                               "frame": "" if frame.frame is None else frame.frame,
                               "width": width, "height": height,
                               "pixel_size_mm": "" if pixel is None else round(pixel, 6)}
        stem = _stem(frame)
        if p_mal is not None:
            p = float(p_mal[i])
            row.update({"p_malignant": round(p, 6), "threshold": threshold,
                        "label": "malignant" if p >= (0.5 if threshold is None else threshold)
                        else "benign"})
        if heat is not None and cls is not None and cls.roi_margin is None:
            big = np.asarray(Image.fromarray(heat[i]).resize((width, height), Image.BILINEAR))
            path = overlays.heatmap_overlay(frame.image, big, out / "explain" / f"{stem}.png")
            row["explain"] = str(path.relative_to(out))
        if probs is not None:
            prob = big_probs[i]
            mask = prob >= settings.seg_threshold
            area = int(mask.sum())
            row.update({"lesion_area_px": area,
                        "lesion_area_mm2": "" if pixel is None else round(area * pixel**2, 3)})
            if settings.save_masks:
                save_png(mask, out / "masks" / f"{stem}.png")
                row["mask"] = f"masks/{stem}.png"
            if settings.save_overlays:
                overlays.lesion_overlay(frame.image, prob, mask, out / "overlays" / f"{stem}.png")
                row["overlay"] = f"overlays/{stem}.png"
        rows.append(row)
    return rows


def merge(parts: list[Path], out: Path, overwrite: bool = False) -> PredictResult:
    """Join the outputs of ``--num-parts`` runs into one folder (rows sorted by path, frame)."""
    start = time.perf_counter()
    out = Path(out)
    if (out / PREDICTIONS).exists() and not overwrite:
        raise InputError(f"{out / PREDICTIONS} exists", hint="use --overwrite to replace it")
    rows: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    for part in parts:
        if not (Path(part) / PREDICTIONS).is_file():
            raise InputError(f"{part} holds no {PREDICTIONS}: not a predict output folder")
        for row in _read_rows(Path(part) / PREDICTIONS):
            for column in ("mask", "overlay", "explain"):
                if row.get(column):
                    target = out / row[column]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if Path(part).resolve() != out.resolve():
                        shutil.copyfile(Path(part) / row[column], target)
            rows.append(row)
        errors.extend(_read_rows(Path(part) / ERRORS))
    rows.sort(key=lambda r: (r["path"], int(r["frame"]) if r["frame"] else -1))
    errors.sort(key=lambda r: r["path"])
    out.mkdir(parents=True, exist_ok=True)
    from breastus_cli.atomic import atomic_path

    for name, columns, data in ((PREDICTIONS, COLUMNS, rows), (ERRORS, ERROR_COLUMNS, errors)):
        with atomic_path(out / name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(data)
    return PredictResult(out=out, files=len({r["path"] for r in rows} | {e["path"] for e in errors}),
                         rows=len(rows), errors=len(errors),
                         malignant=sum(1 for r in rows if r.get("label") == "malignant"),
                         skipped_done=0, seconds=round(time.perf_counter() - start, 2),
                         images_per_second=0.0)
