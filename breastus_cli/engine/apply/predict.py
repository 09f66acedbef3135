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

The jobs around it live beside it: settings (predict_settings), OUT's files and --resume
(predict_output), predict.json (predict_record), a batch's forward pass and rows (predict_rows),
joining shards (predict_merge).
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from breastus_cli import backend
from breastus_cli.data.scans import Frame, Unreadable, expand_inputs, shard, stream
from breastus_cli.engine.apply import fusion, ood, predict_rows
from breastus_cli.engine.apply.inference import open_run
from breastus_cli.engine.apply.loaded_run import LoadedRun
from breastus_cli.engine.apply.predict_output import (
    COLUMNS, ERROR_COLUMNS, ERRORS, PREDICT_JSON, PREDICTIONS, Appender, check_out, clear_out,
    csv_header, cut_to, intact_rows, own_output,
)
from breastus_cli.engine.apply.predict_record import differences, record as predict_record
from breastus_cli.engine.apply.predict_settings import PredictResult, PredictSettings
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.atomic import write_json
from breastus_cli.ownership import read_marker
from breastus_cli.runfiles import check_predict

#: batches in the model at once with the Keras engine: two run 1.25x faster than one on 2 cores
#: (MobileNetV2 224, compiled forward on preloaded tensors; BENCHMARKS.md)
FORWARD_WORKERS = 2


# ---- models ---------------------------------------------------------------------------------

def open_model(source: Path, expected: str, engine: str, need_keras: bool,
                tta: str = "none") -> LoadedRun:
    """A run directory (Keras or its TFLite export), an exported .tflite file, or a
    cross-validation folder (its fold ensemble), with ``tta`` (ensemble.with_tta)."""
    return open_run(source, expected, engine, need_keras, tta=tta)


def batches(items: Iterator[list[Frame] | Unreadable], batch_size: int,
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
    check_out(out, resume=settings.resume, overwrite=settings.overwrite,
               inputs=tuple(Path(i).expanduser() for i in settings.inputs))
    owners: dict[Path, bool] = {}
    # predict never reads what it wrote (OUT's or another predict folder's files) as a scan
    files = shard([f for f in expand_inputs(settings.inputs) if not own_output(f, out, owners)],
                  settings.num_parts, settings.part_id)

    done_rows, done_length = (intact_rows(out / PREDICTIONS) if settings.resume else ([], 0))
    failed_rows, failed_length = (intact_rows(out / ERRORS) if settings.resume else ([], 0))
    failed = {r.get("path", "") for r in failed_rows}
    skip = {(r["path"], r["frame"]) for r in done_rows}
    done_paths = {r["path"] for r in done_rows}
    # A plain image already in predictions.csv is not decoded again; a DICOM may have frames
    # left, so it is decoded and its finished frames dropped.
    todo = [f for f in files if str(f) not in failed and not (
        str(f) in done_paths and f.suffix.lower() not in (".dcm", ".dicom"))]
    skipped = len(files) - len(todo)

    tf = backend.tf()
    cls = open_model(settings.cls_run, "cls", settings.engine, settings.explain,
                      settings.tta) if settings.cls_run else None
    seg = open_model(settings.seg_run, "seg", settings.engine, False,
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
    # a fused classifier (RUN/fusion.json) scores with the segmenter's lesion descriptors
    fused = (fusion.read(Path(settings.cls_run)) if cls is not None and seg is not None
             and not cls.members and Path(settings.cls_run).is_dir() else None)
    # ... and, fitted with a second classifier (--fuse-with), with that one's score too
    partner_path = (fusion.partner_dir(Path(settings.cls_run), fused)  # its SHA-256 checked
                    if fused is not None and fused.partner is not None else None)
    partner = (open_model(partner_path, "cls", settings.engine, False, settings.tta)
               if partner_path is not None else None)
    pixel_sizes = predict_rows.manifest_pixel_sizes(settings.manifest)
    record = predict_record(settings, threshold, fused, partner_path)
    previous = read_marker(out, "predict")
    if settings.resume and previous is not None:
        check_predict(out / PREDICT_JSON, previous)
        changed = differences(previous, record, part=True)
        if changed:
            raise InputError(f"--resume: {out} was written with other settings ("
                             f"{'; '.join(changed)})",
                             hint="resume with the first run's options, or start again with "
                                  "--overwrite")
    # Every check passed: only now is OUT changed.
    if settings.overwrite:
        clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.resume and previous is not None:
        header = csv_header(out / PREDICTIONS)
        if header and header != COLUMNS:
            raise InputError(f"--resume: {out / PREDICTIONS} has other columns than this "
                             "version of breastus writes (an older version wrote it)",
                             hint="predict into a new --out, or start again with --overwrite")
        cut_to(out / PREDICTIONS, done_length)  # a row cut off by a kill is done again
        cut_to(out / ERRORS, failed_length)
    else:
        write_json(out / PREDICT_JSON, record)
    for folder, wanted in (("masks", settings.save_masks), ("overlays", settings.save_overlays),
                           ("explain", settings.explain)):
        if wanted:
            (out / folder).mkdir(exist_ok=True)

    rows_out = Appender(out / PREDICTIONS, COLUMNS)
    errors_out = Appender(out / ERRORS, ERROR_COLUMNS)
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
                frame.inputs[size] = predict_rows.resized(frame.image, size, tf)

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
            for frames, errors in batches(stream(todo, settings.workers, prepare=prepare,
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
                forward = forward_pool.submit(predict_rows.timed, predict_rows.forward, frames,
                                              cls, seg, settings, tf, partner)
                pending.append((rows_pool.submit(predict_rows.rows_of, forward, frames, cls,
                                                 threshold, settings, out, pixel_sizes, fused),
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

