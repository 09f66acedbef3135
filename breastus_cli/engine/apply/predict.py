"""``breastus predict``: stream files and folders of scans through a classifier and/or a
segmenter, writing one row per image as soon as its batch is done.

    OUT/predictions.csv   path, frame, size, p_malignant, label, lesion area (px, mm^2), files
    OUT/errors.csv        files that could not be read, and why (the batch goes on)
    OUT/masks/            lesion masks at the original size, 0/255 (--save-masks)
    OUT/overlays/         probability + contour over the image (--save-overlays)
    OUT/explain/          Grad-CAM of the classifier (--explain)

Decoding runs ahead in threads (bounded); two batches can be in the model at once (Keras
engine) and a batch's rows are made in one more thread. The models are applied through
engine/apply/inference.py (evaluate's path too): the training pipeline's resize, a compiled function
(Keras) or a TFLite interpreter with XNNPACK, outputs back at the original size, lesion crops
from the mask.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS
from breastus_cli.data.scans import Frame, Unreadable, expand_inputs, shard, stream
from breastus_cli.engine.apply import ood
from breastus_cli.engine.apply.inference import (
    TFLITE_EXPORTS, TTA_MODES, LoadedRun, lesion_crop, open_run, resize_input,
    to_original_size, upsample,
)
from breastus_cli.engine.runs.cvdir import is_cv_dir
from breastus_cli.engine.stats.descriptors import ALL_COLUMNS as DESCRIPTOR_COLUMNS
from breastus_cli.engine.stats.metrics import as_score
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.atomic import write_json
from breastus_cli.ownership import PREDICT_FORMAT, claim, is_owned, read_marker
from breastus_cli.runfiles import check_predict

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
PREDICT_JSON = "predict.json"  # which models, threshold and settings wrote OUT (ownership.py)
REVIEW_PAGE, THUMBS = "index.html", "thumbs"  # --report's page (reports/review_page.py)
#: What predict writes in OUT; --overwrite removes these and nothing else.
OWN_FILES = (PREDICTIONS, ERRORS, PREDICT_JSON, REVIEW_PAGE)
OWN_FOLDERS = {"mask": "masks", "overlay": "overlays", "explain": "explain", "thumb": THUMBS}
EXPORT_FILES = TFLITE_EXPORTS
COLUMNS = ["path", "frame", "width", "height", "pixel_size_mm", "p_malignant", "label",
           "threshold", "lesion_area_px", "lesion_area_mm2", "mask", "overlay", "explain",
           "seconds"]
#: lesion descriptors of the predicted mask (--seg-run), every row the same columns: px
#: sizes always, mm sizes empty without a pixel size, all empty where no lesion was found
COLUMNS += list(DESCRIPTOR_COLUMNS)
#: a fused classifier's (RUN/fusion.json, with --seg-run): the descriptor model's score, the
#: fused score and label, and why (the three descriptors that moved the lesion's descriptor
#: score most, in log-odds); empty otherwise. p_partner: the second classifier's score, where
#: the fusion takes one (evaluate --fuse-with)
COLUMNS += ["p_descriptors", "p_partner", "p_fused", "label_fused", "fused_why"]
#: a Keras classifier run's distance from its training scans (engine/apply/ood.py; issue 31)
COLUMNS += ["ood_score", "in_domain"]
ERROR_COLUMNS = ["path", "reason"]
#: batches in the model at once with the Keras engine: two run 1.25x faster than one on 2 cores
#: (MobileNetV2 224, compiled forward on preloaded tensors; BENCHMARKS.md)
FORWARD_WORKERS = 2


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
    tta: str = "none"  # test-time augmentation: none or flip (inference.with_tta)

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
        from breastus_cli.engine.apply.postprocess import METHODS

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


# ---- models ---------------------------------------------------------------------------------

def _open_model(source: Path, expected: str, engine: str, need_keras: bool,
                tta: str = "none") -> LoadedRun:
    """A run directory (Keras or its TFLite export), an exported .tflite file, or a
    cross-validation folder (its fold ensemble), with ``tta`` (inference.with_tta)."""
    return open_run(source, expected, engine, need_keras, tta=tta)


# ---- output files ---------------------------------------------------------------------------
def _intact_rows(path: Path) -> tuple[list[dict[str, str]], int]:
    """The complete rows of an appended CSV and the bytes they take: a last row cut off by a
    kill (no newline at its end, or too few fields) and anything after it are left out."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    data = data[:data.rfind(b"\n") + 1]
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    consumed = [0]

    def feed() -> Iterator[str]:
        for line in lines:
            consumed[0] += len(line.encode("utf-8", errors="replace"))
            yield line

    header: list[str] = []
    rows: list[dict[str, str]] = []
    end = 0
    for record in csv.reader(feed()):
        if not header:
            header, end = record, consumed[0]
            continue
        if len(record) != len(header):
            break
        rows.append(dict(zip(header, record)))
        end = consumed[0]
    return rows, end


def _header(path: Path) -> list[str]:
    """The column names of a CSV predict wrote ([] when there is none yet)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return next(csv.reader(handle), [])


def _cut_to(path: Path, length: int) -> None:
    """Drop a cut-off tail (see :func:`_intact_rows`) so appended rows start on a fresh line."""
    if path.is_file() and path.stat().st_size != length:
        with open(path, "r+b") as fh:
            fh.truncate(length)


def _check_out(out: Path, *, resume: bool, overwrite: bool,
               inputs: tuple[Path, ...] = ()) -> None:
    """OUT is a folder predict may write into (:func:`~breastus_cli.ownership.claim`): new,
    empty, or a predict output (predict.json, nothing else makes a folder predict's), equal to
    or around no input, with no symbolic link in it that leads out of it.

    Nothing is written or deleted here; a folder predict did not make is never touched.
    """
    claim(out, "predict", inputs=inputs, inside_ok=True)  # OUT inside a scan folder is fine:
    # predict never reads its own output as a scan (:func:`_own_output`)
    if (out / PREDICTIONS).exists() and not (resume or overwrite):
        raise InputError(f"{out / PREDICTIONS} exists", hint="continue it with --resume, or "
                                                             "replace it with --overwrite")


def _clear_out(out: Path) -> None:
    """--overwrite: remove predict's own files from OUT (checked by :func:`_check_out`)."""
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in OWN_FOLDERS.values():
        if (out / folder).is_dir() and not (out / folder).is_symlink():
            shutil.rmtree(out / folder)
        else:
            (out / folder).unlink(missing_ok=True)


def _own_output(path: Path, out: Path, owners: dict[Path, bool]) -> bool:
    """True for a file predict wrote (OUT's or another predict folder's): never an input."""
    real = path.resolve()
    if real.name in OWN_FILES:
        folder = real.parent
    elif real.parent.name in OWN_FOLDERS.values():
        folder = real.parent.parent
    else:
        return False
    if folder not in owners:
        owners[folder] = folder == out.resolve() or is_owned(folder, "predict")
    return owners[folder]


def _model_record(source: Path | None, engine: str) -> dict[str, Any] | None:
    """Which model file a run directory (or .tflite) gave, with its SHA-256."""
    from breastus_cli.data.manifest import file_sha256

    if source is None:
        return None
    source = Path(source)
    if is_cv_dir(source):  # a fold ensemble: every fold's model, and one hash over them
        from breastus_cli.engine.runs.cvdir import fold_runs

        folds = [_model_record(run, engine) for run in fold_runs(source)[1]]
        hashes = [str((f or {}).get("sha256")) for f in folds]
        combined = (hashlib.sha256("\n".join(hashes).encode()).hexdigest()
                    if all(f and f.get("sha256") for f in folds) else None)
        return {"path": str(source.resolve()), "ensemble": True, "sha256": combined,
                "folds": folds}
    if source.suffix == ".tflite":
        used = source
    elif engine == "tflite":
        used = next((source / "export" / n for n in EXPORT_FILES
                     if (source / "export" / n).is_file()), source / "export" / EXPORT_FILES[0])
    else:
        used = source / "model.keras"
    return {"path": str(source.resolve()), "file": str(used.resolve()),
            "sha256": file_sha256(used) if used.is_file() else None}


def _record(settings: PredictSettings, threshold: float | None,
            fused: Any = None, partner: Path | None = None) -> dict[str, Any]:
    """predict.json: what wrote OUT (checked by --resume and --merge)."""
    from breastus_cli import __version__
    from breastus_cli.data.manifest import file_sha256
    from breastus_cli.engine.apply.fusion import FUSION

    return {"format": PREDICT_FORMAT, "breastus_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models": {"cls": _model_record(settings.cls_run, settings.engine),
                       "seg": _model_record(settings.seg_run, settings.engine)},
            "threshold": threshold, "seg_threshold": settings.seg_threshold,
            "seg_postprocess": settings.seg_postprocess,
            "engine": settings.engine, "tta": settings.tta,
            "fusion": None if fused is None else {
                "path": str(Path(settings.cls_run or "") / FUSION),
                "sha256": file_sha256(Path(settings.cls_run or "") / FUSION),
                "threshold": fused.threshold,
                "partner": _model_record(partner, settings.engine)},
            "num_parts": settings.num_parts,
            "part_id": settings.part_id,
            "inputs": [str(Path(i).expanduser().resolve()) if Path(i).expanduser().exists()
                       else str(i) for i in settings.inputs]}


def _differences(old: dict[str, Any], new: dict[str, Any], part: bool) -> list[str]:
    """What differs between two predict.json records (models, thresholds, engine, shard)."""
    found = []
    for task, option in (("cls", "--cls-run"), ("seg", "--seg-run")):
        a, b = (old.get("models") or {}).get(task), (new.get("models") or {}).get(task)
        if (a or {}).get("sha256") != (b or {}).get("sha256"):
            found.append(f"{option} {(a or {}).get('path') or 'none'} -> "
                         f"{(b or {}).get('path') or 'none'}")
    for key, option in (("threshold", "--threshold"), ("seg_threshold", "--seg-threshold"),
                        ("engine", "--engine")) + ((("num_parts", "--num-parts"),
                                                     ("part_id", "--part-id")) if part else ()):
        a, b = old.get(key), new.get(key)
        same = (a == b if not (isinstance(a, (int, float)) and isinstance(b, (int, float)))
                else abs(float(a) - float(b)) < 1e-9)
        if not same:
            found.append(f"{option} {a} -> {b}")
    tta = (old.get("tta") or "none", new.get("tta") or "none")  # none before --tta existed
    if tta[0] != tta[1]:
        found.append(f"--tta {tta[0]} -> {tta[1]}")
    kept = [(r.get("seg_postprocess") or "none") if r.get("models", {}).get("seg") else None
            for r in (old, new)]  # none before post-processing existed
    if kept[0] != kept[1]:
        found.append(f"--seg-postprocess {kept[0]} -> {kept[1]}")
    fused = [(r.get("fusion") or {}).get("sha256") for r in (old, new)]
    if fused[0] != fused[1]:
        found.append("the classifier's fusion.json " + ("changed" if all(fused) else
                                                        "added" if fused[1] else "removed"))
    partners = [(((r.get("fusion") or {}).get("partner")) or {}).get("sha256") for r in (old, new)]
    if fused[0] == fused[1] and partners[0] != partners[1]:  # e.g. its TFLite export redone
        found.append("the fusion's second classifier changed")
    return found


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
_resized = resize_input  # the training pipeline's resize (a name the benchmarks time)


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
    out = Path(settings.out)
    _check_out(out, resume=settings.resume, overwrite=settings.overwrite,
               inputs=tuple(Path(i).expanduser() for i in settings.inputs))
    owners: dict[Path, bool] = {}
    # predict never reads what it wrote (OUT's or another predict folder's files) as a scan
    files = shard([f for f in expand_inputs(settings.inputs) if not _own_output(f, out, owners)],
                  settings.num_parts, settings.part_id)

    done_rows, done_length = (_intact_rows(out / PREDICTIONS) if settings.resume else ([], 0))
    failed_rows, failed_length = (_intact_rows(out / ERRORS) if settings.resume else ([], 0))
    failed = {r.get("path", "") for r in failed_rows}
    skip = {(r["path"], r["frame"]) for r in done_rows}
    done_paths = {r["path"] for r in done_rows}
    # A plain image already in predictions.csv is not decoded again; a DICOM may have frames
    # left, so it is decoded and its finished frames dropped.
    todo = [f for f in files if str(f) not in failed and not (
        str(f) in done_paths and f.suffix.lower() not in (".dcm", ".dicom"))]
    skipped = len(files) - len(todo)

    from breastus_cli import backend

    tf = backend.tf()
    cls = _open_model(settings.cls_run, "cls", settings.engine, settings.explain,
                      settings.tta) if settings.cls_run else None
    seg = _open_model(settings.seg_run, "seg", settings.engine, False,
                      settings.tta) if settings.seg_run else None
    cls = ood.with_ood(cls) if cls is not None else None  # + the ood_score column
    if seg is not None and settings.seg_postprocess is None:  # the run's own choice (a copy:
        # the caller's settings are left as given)
        settings = replace(settings, seg_postprocess=seg.postprocess.method)
    if cls is not None and cls.roi_margin is not None and seg is None:
        raise UsageError(f"--cls-run {settings.cls_run} classifies lesion crops: give the "
                         "segmenter that finds them with --seg-run")
    threshold = settings.threshold if settings.threshold is not None else (
        cls.threshold if cls else None)
    from breastus_cli.engine.apply import fusion

    # a fused classifier (RUN/fusion.json) scores with the segmenter's lesion descriptors
    fused = (fusion.read(Path(settings.cls_run)) if cls is not None and seg is not None
             and not cls.members and Path(settings.cls_run).is_dir() else None)
    # ... and, fitted with a second classifier (--fuse-with), with that one's score too
    partner_path = (fusion.partner_dir(Path(settings.cls_run), fused)  # its SHA-256 checked
                    if fused is not None and fused.partner is not None else None)
    partner = (_open_model(partner_path, "cls", settings.engine, False, settings.tta)
               if partner_path is not None else None)
    pixel_sizes = _manifest_pixel_sizes(settings.manifest)
    record = _record(settings, threshold, fused, partner_path)
    previous = read_marker(out, "predict")
    if settings.resume and previous is not None:
        check_predict(out / PREDICT_JSON, previous)
        changed = _differences(previous, record, part=True)
        if changed:
            raise InputError(f"--resume: {out} was written with other settings ("
                             f"{'; '.join(changed)})",
                             hint="resume with the first run's options, or start again with "
                                  "--overwrite")
    # Every check passed: only now is OUT changed.
    if settings.overwrite:
        _clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.resume and previous is not None:
        header = _header(out / PREDICTIONS)
        if header and header != COLUMNS:
            raise InputError(f"--resume: {out / PREDICTIONS} has other columns than this "
                             "version of breastus writes (an older version wrote it)",
                             hint="predict into a new --out, or start again with --overwrite")
        _cut_to(out / PREDICTIONS, done_length)  # a row cut off by a kill is done again
        _cut_to(out / ERRORS, failed_length)
    else:
        write_json(out / PREDICT_JSON, record)
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
        sizes = {m.size for m in (cls, seg, partner) if m is not None and m.roi_margin is None}

        def prepare(frame: Frame) -> None:
            for size in sizes:
                frame.inputs[size] = _resized(frame.image, size, tf)

        # Each batch goes through two more stages: the forward pass (FORWARD_WORKERS batches at
        # once where the engine allows it: a Keras model's parallel sections leave cores idle
        # that a second batch fills) and its rows (masks at the original size, descriptors,
        # files written: one thread). Rows are written in input order as batches finish.
        n_forward = FORWARD_WORKERS if all(
            m.concurrent for m in (cls, seg, partner) if m is not None) \
            and not settings.explain else 1
        pending: collections.deque[tuple[Future, int]] = collections.deque()

        def finish(job: tuple[Future, int]) -> None:
            nonlocal n_rows, n_malignant, processed
            future, n_files = job
            try:
                rows, seconds = future.result()
            except BaseException:
                pending.clear()  # the batches after a failed one are not written: rows stay
                raise            # in input order, and --resume starts at the failed batch
            per_image = seconds / max(len(rows), 1)
            for row in rows:
                row["seconds"] = round(per_image, 4)
            rows_out.write(rows)
            n_rows += len(rows)
            n_malignant += sum(1 for r in rows if r.get("label") == "malignant")
            processed += n_files
            if on_progress is not None:
                on_progress(min(processed, len(todo)), len(todo))

        forward_pool = ThreadPoolExecutor(max_workers=n_forward,
                                          thread_name_prefix="breastus-forward")
        rows_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="breastus-rows")
        try:
            for frames, errors in _batches(stream(todo, settings.workers, prepare=prepare,
                                                  max_pixels=settings.max_pixels),
                                           settings.batch_size, skip):
                errors_out.write([{"path": str(e.path), "reason": e.reason} for e in errors])
                n_errors += len(errors)
                error_examples += [(str(e.path), e.reason)
                                   for e in errors][: 5 - len(error_examples)]
                processed += len(errors)
                if not frames:
                    if errors and on_progress is not None:
                        on_progress(min(processed, len(todo)), len(todo))
                    continue
                forward = forward_pool.submit(_timed, _forward, frames, cls, seg, settings, tf,
                                              partner)
                pending.append((rows_pool.submit(_rows_of, forward, frames, cls, threshold,
                                                 settings, out, pixel_sizes, fused),
                                len({f.path for f in frames})))
                while len(pending) > n_forward:  # bounded: the oldest batch is written first
                    finish(pending.popleft())
            while pending:
                finish(pending.popleft())
        except BaseException:
            # finished work is never lost: the batches before the one that failed are written
            with contextlib.suppress(BaseException):
                while pending:
                    finish(pending.popleft())
            raise
        finally:
            forward_pool.shutdown(wait=True, cancel_futures=True)
            rows_pool.shutdown(wait=True, cancel_futures=True)
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


@dataclass
class _Outputs:
    """A batch's model outputs (:func:`_forward`): the segmenter's probability maps, the
    classifier's p(malignant) and Grad-CAM maps; ``big``: (probability map, mask) at each
    image's original size when the classifier needed them for its lesion crops."""

    probs: np.ndarray | None = None
    p_mal: np.ndarray | None = None
    heat: np.ndarray | None = None
    big: list[tuple[np.ndarray, np.ndarray]] | None = None
    p_partner: np.ndarray | None = None  # the fusion's second classifier's p(malignant)
    ood: np.ndarray | None = None  # the classifier's ood_score (ood.with_ood)


def _full_size(frames: list[Frame], probs: np.ndarray, threshold: float,
               postprocess: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    return [to_original_size(prob, frame.image.shape, threshold, postprocess or "none")
            for frame, prob in zip(frames, probs)]


def _cls_batch(frames: list[Frame], model: LoadedRun, big: list[tuple[np.ndarray, np.ndarray]],
               tf: Any) -> np.ndarray:
    """A classifier's input batch: whole images, or lesion-centred crops around the predicted
    lesions (``big``: each image's mask at its original size)."""
    if model.roi_margin is None:
        return np.stack([_input(f, model.size, tf) for f in frames])
    return np.stack([_resized(lesion_crop(f.image, mask, model.roi_margin)[0], model.size, tf)
                     for f, (_, mask) in zip(frames, big)])


def _forward(frames: list[Frame], cls: LoadedRun | None, seg: LoadedRun | None,
             settings: PredictSettings, tf: Any, partner: LoadedRun | None = None) -> _Outputs:
    """The models on one batch (a forward thread): everything else is :func:`_predict_batch`."""
    outputs = _Outputs()
    if seg is not None:
        outputs.probs = seg.run(np.stack([_input(f, seg.size, tf) for f in frames]))
        if any(m is not None and m.roi_margin is not None for m in (cls, partner)):
            outputs.big = _full_size(frames, outputs.probs, settings.seg_threshold,
                                     settings.seg_postprocess)  # crops
    if partner is not None:
        outputs.p_partner = partner.run(_cls_batch(frames, partner, outputs.big or [], tf))[:, 1]
    if cls is not None:
        batch = _cls_batch(frames, cls, outputs.big or [], tf)
        scores = cls.run(batch)
        outputs.p_mal = scores[:, 1]
        outputs.ood = scores[:, 2] if scores.shape[1] > 2 else None
        if settings.explain:
            from breastus_cli.engine.apply.gradcam import gradcam

            outputs.heat = gradcam(cls.keras_model, batch)
    return outputs


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def _rows_of(forward: Future, frames: list[Frame], *args: Any) -> tuple[list[dict[str, Any]],
                                                                        float]:
    """A batch's rows once its forward pass is done (the rows thread); with the seconds of
    both stages. A failed forward pass raises here, where the main thread collects it."""
    outputs, forward_seconds = forward.result()
    rows, row_seconds = _timed(_predict_batch, frames, outputs, *args)
    return rows, forward_seconds + row_seconds


def _predict_batch(frames: list[Frame], outputs: _Outputs, cls: LoadedRun | None,
                   threshold: float | None, settings: PredictSettings, out: Path,
                   pixel_sizes: dict[str, float], fused: Any = None) -> list[dict[str, Any]]:
    """One batch's rows from its model outputs: masks at the original size, descriptors,
    the fused score, masks/overlays/explain files (a thread beside the main one)."""
    from breastus_cli.data.imaging import save_png
    from breastus_cli.engine.apply import fusion, overlays
    from breastus_cli.engine.stats.descriptors import describe_both_units

    rows: list[dict[str, Any]] = []
    probs, p_mal, heat = outputs.probs, outputs.p_mal, outputs.heat
    big = outputs.big if outputs.big is not None else (
        _full_size(frames, probs, settings.seg_threshold, settings.seg_postprocess)
        if probs is not None else [])
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
            p = float(as_score(p_mal[i]))  # the label follows the score as written
            row.update({"p_malignant": p, "threshold": threshold,
                        "label": "malignant" if p >= (0.5 if threshold is None else threshold)
                        else "benign"})
        if outputs.ood is not None:
            row.update(ood.cells(outputs.ood[i]))
        if heat is not None and cls is not None and cls.roi_margin is None:
            path = overlays.heatmap_overlay(frame.image, upsample(heat[i], (height, width)),
                                            out / "explain" / f"{stem}.png")
            row["explain"] = str(path.relative_to(out))
        if probs is not None:
            prob, mask = big[i]
            area = int(mask.sum())
            row.update({"lesion_area_px": area,
                        "lesion_area_mm2": "" if pixel is None else round(area * pixel**2, 3)})
            values = describe_both_units(mask, frame.image, pixel)
            row.update(_descriptor_cells(values))
            if fused is not None and p_mal is not None:
                x = fusion.feature_row(values)
                p_two = (None if outputs.p_partner is None
                         else as_score(outputs.p_partner[i:i + 1]))  # as evaluate scores it
                p_desc, p_fused = fused.scores(as_score(p_mal[i:i + 1]), x, p_two)
                if p_two is not None:  # scores are rounded where made (metrics.as_score)
                    row["p_partner"] = float(p_two[0])
                row.update({"p_descriptors": float(p_desc[0]),
                            "fused_why": fused.explain(x)[0],
                            "p_fused": float(p_fused[0]),
                            "label_fused": "malignant" if p_fused[0] >= fused.threshold
                            else "benign"})
            if settings.save_masks:
                save_png(mask, out / "masks" / f"{stem}.png")
                row["mask"] = f"masks/{stem}.png"
            if settings.save_overlays:
                overlays.lesion_overlay(frame.image, prob, mask, out / "overlays" / f"{stem}.png")
                row["overlay"] = f"overlays/{stem}.png"
        rows.append(row)
    return rows


_WHOLE = ("lobulation", "not_parallel", "components", "width_px", "height_px", "area_px")


def _descriptor_cells(values: dict[str, float]) -> dict[str, Any]:
    """The predicted lesion's descriptors (:func:`describe_both_units`) as predictions.csv
    cells ('' where undefined)."""
    return {k: "" if v != v else int(v) if k in _WHOLE else round(float(v), 6)
            for k, v in values.items()}


def _check_parts(parts: list[Path], records: list[dict[str, Any]]) -> None:
    """The parts come from one sharded run: same models and settings, each part once."""
    first = records[0]
    for part, record in zip(parts[1:], records[1:]):
        changed = _differences(first, record, part=False)
        if record.get("num_parts") != first.get("num_parts"):
            changed.append(f"--num-parts {first.get('num_parts')} -> {record.get('num_parts')}")
        if changed:
            raise InputError(f"{part} was not predicted like {parts[0]} ({'; '.join(changed)}): "
                             "parts must come from one run split with --num-parts")
    total = int(first.get("num_parts") or 1)
    seen: dict[int, Path] = {}
    for part, record in zip(parts, records):
        k = int(record.get("part_id") or 1)
        if k in seen:
            raise InputError(f"part {k} of {total} is given twice ({seen[k]} and {part})")
        seen[k] = part
    missing = [str(k) for k in range(1, total + 1) if k not in seen]
    if missing:
        raise InputError(f"part {', '.join(missing)} of {total} "
                         f"{'is' if len(missing) == 1 else 'are'} missing: give all {total} "
                         "part folders")


def _part_file(part: Path, value: str, folder: str) -> Path | str:
    """A mask/overlay/explain file named by a part's predictions.csv, relative to the part, or
    why it is not taken: only files inside the part's own ``folder`` are."""
    root = part.resolve()
    try:
        rel = (part / value).resolve().relative_to(root)
    except (ValueError, OSError):
        return f"{value} lies outside the part folder {part}"
    if len(rel.parts) != 2 or rel.parts[0] != folder:
        return f"{value} is not in the part's {folder}/ folder ({part})"
    if not (root / rel).is_file():
        return f"{value} is missing in {part}"
    return rel


def _frame_key(row: dict[str, str]) -> tuple[str, int]:
    frame = str(row.get("frame") or "")
    return str(row.get("path", "")), int(frame) if frame.isdigit() else -1


def merge(parts: list[Path], out: Path, overwrite: bool = False) -> PredictResult:
    """Join the outputs of ``--num-parts`` runs into one folder (rows sorted by path, frame).

    Every check runs before --out is touched: each part is a predict folder (predict.json),
    the parts come from one run and are all there, no row appears twice. Files are taken only
    from inside each part's masks/, overlays/, explain/; any other path is an error row.
    """
    start = time.perf_counter()
    out = Path(out)
    parts = [Path(p) for p in parts]
    records = []
    for part in parts:
        if not (part / PREDICTIONS).is_file():
            raise InputError(f"{part} holds no {PREDICTIONS}: not a predict output folder")
        record = read_marker(part, "predict")
        if record is None:
            raise InputError(f"{part} holds no {PREDICT_JSON}: cannot check that it belongs "
                             "with the other parts", hint="predict the parts again with this "
                                                          "version of breastus")
        records.append(check_predict(part / PREDICT_JSON, record))
    _check_parts(parts, records)
    for part in parts:
        real, target = part.resolve(), out.resolve()
        if target == real or real in target.parents:
            raise UsageError(f"--out {out} lies in the part folder {part}: choose another folder")
    _check_out(out, resume=False, overwrite=overwrite, inputs=tuple(parts))

    rows: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    copies: list[tuple[Path, Path]] = []
    seen: dict[tuple[str, str], Path] = {}
    for part in parts:
        for row in _intact_rows(part / PREDICTIONS)[0]:
            key = (row.get("path", ""), row.get("frame", ""))
            if key in seen:
                raise InputError(f"{key[0]}" + (f" frame {key[1]}" if key[1] else "") +
                                 f" appears twice ({seen[key]} and {part}): the parts overlap")
            seen[key] = part
            for column, folder in OWN_FOLDERS.items():
                if not row.get(column):
                    continue
                found = _part_file(part, row[column], folder)
                if isinstance(found, str):
                    errors.append({"path": row.get("path", ""), "reason": f"{column}: {found}"})
                    row[column] = ""
                else:
                    copies.append((part.resolve() / found, found))
                    row[column] = found.as_posix()
            rows.append(row)
        errors.extend(_intact_rows(part / ERRORS)[0])
    rows.sort(key=_frame_key)
    errors.sort(key=lambda r: str(r.get("path", "")))

    # Every check passed: only now is --out written.
    if overwrite:
        _clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    merged = dict(records[0], created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), num_parts=1,
                  part_id=1, merged_from=[str(p.resolve()) for p in parts])
    write_json(out / PREDICT_JSON, merged)
    for source, rel in copies:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / rel)
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
