"""What ``breastus predict`` writes in OUT and how it continues it: the file names and columns,
the ownership check before OUT is touched, the appended CSVs (a kill loses at most the batch in
flight) and the complete rows a --resume starts from."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from breastus_cli.data.scans import Frame
from breastus_cli.engine.stats.descriptors import ALL_COLUMNS as DESCRIPTOR_COLUMNS
from breastus_cli.errors import InputError
from breastus_cli.ownership import claim, is_owned

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
PREDICT_JSON = "predict.json"  # which models, threshold and settings wrote OUT (ownership.py)
REVIEW_PAGE, THUMBS = "index.html", "thumbs"  # --report's page (reports/review_page.py)
#: What predict writes in OUT; --overwrite removes these and nothing else.
OWN_FILES = (PREDICTIONS, ERRORS, PREDICT_JSON, REVIEW_PAGE)
OWN_FOLDERS = {"mask": "masks", "overlay": "overlays", "explain": "explain", "thumb": THUMBS}
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


# ---- output files ---------------------------------------------------------------------------
def intact_rows(path: Path) -> tuple[list[dict[str, str]], int]:
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


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV predict wrote ([] when there is none yet)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return next(csv.reader(handle), [])


def cut_to(path: Path, length: int) -> None:
    """Drop a cut-off tail (see :func:`intact_rows`) so appended rows start on a fresh line."""
    if path.is_file() and path.stat().st_size != length:
        with open(path, "r+b") as fh:
            fh.truncate(length)


def check_out(out: Path, *, resume: bool, overwrite: bool,
               inputs: tuple[Path, ...] = ()) -> None:
    """OUT is a folder predict may write into (:func:`~breastus_cli.ownership.claim`): new,
    empty, or a predict output (predict.json, nothing else makes a folder predict's), equal to
    or around no input, with no symbolic link in it that leads out of it.

    Nothing is written or deleted here; a folder predict did not make is never touched.
    """
    claim(out, "predict", inputs=inputs, inside_ok=True)  # OUT inside a scan folder is fine:
    # predict never reads its own output as a scan (:func:`own_output`)
    if (out / PREDICTIONS).exists() and not (resume or overwrite):
        raise InputError(f"{out / PREDICTIONS} exists", hint="continue it with --resume, or "
                                                             "replace it with --overwrite")


def clear_out(out: Path) -> None:
    """--overwrite: remove predict's own files from OUT (checked by :func:`check_out`)."""
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in OWN_FOLDERS.values():
        if (out / folder).is_dir() and not (out / folder).is_symlink():
            shutil.rmtree(out / folder)
        else:
            (out / folder).unlink(missing_ok=True)


def own_output(path: Path, out: Path, owners: dict[Path, bool]) -> bool:
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



class Appender:
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


def file_stem(frame: Frame) -> str:
    """A file name unique per input path and frame (inputs from different folders may share a
    name)."""
    digest = hashlib.sha1(str(frame.path.resolve()).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in frame.path.stem)[:60]
    return f"{stem}-{digest}" + (f"-f{frame.frame:04d}" if frame.frame is not None else "")

