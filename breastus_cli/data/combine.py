"""Several prepared datasets seen as one: ``breastus combine DATA_A DATA_B --out DATA_AB``.

A combined dataset is a prepared dataset whose files stay where they are::

    DATA_AB/manifest.csv   every case of every dataset; image/mask paths relative to DATA_AB
                           (``../DATA_A/cls/benign/case001.png``), case and patient ids prefixed
                           with the dataset's name (``breast-case001``: ids from two hospitals
                           never meet), the name in column ``dataset``, the original id in
                           ``dataset_case_id``
    DATA_AB/splits.csv     each dataset's own split (and folds) carried over unchanged: a case is
                           test in the combination exactly when it was test in its dataset
    DATA_AB/prepare.json   breastus's marker, plus ``combined``: each dataset's path, manifest
                           and splits.csv SHA-256, and case count

Training, cross-validation and evaluation read it like any prepared dataset; evaluation reports
every metric per ``dataset`` besides the pooled numbers. Folds are kept when every dataset was
split into the same number of folds (fold K of the combination is fold K of each); otherwise the
combination has no folds and ``breastus split DATA_AB --folds K`` assigns new ones (patients
stay whole: their ids are prefixed per dataset). Nothing is copied and nothing is written into
the datasets themselves.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breastus_cli import __version__
from breastus_cli.atomic import atomic_path, uninterrupted, write_json
from breastus_cli.data.manifest import (
    MANIFEST,
    PREPARE_JSON,
    SPLITS,
    file_sha256,
    manifest_hash,
    read_manifest,
)
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import check_out_not_in, ensure_replaceable, is_owned
from breastus_cli.runfiles import read_prepare

#: manifest columns that hold paths relative to the dataset folder
PATH_COLUMNS = ("image", "mask", "other_mask")


@dataclass
class CombineResult:
    out: Path
    datasets: list[dict[str, Any]]  # name, path, cases, labels, splits
    cases: int
    folds: int | None
    notes: list[str] = field(default_factory=list)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._") or "data"


def dataset_names(folders: list[Path]) -> list[str]:
    """A short, file-name-safe, unique name per dataset folder: its folder name (``breast``,
    ``busbra``); folders that share a name are told apart by their parent's
    (``learn_data``, ``prepared_data``), then by ``-2``, ``-3`` ..."""
    real = [Path(folder).resolve() for folder in folders]
    names = [_safe(path.name) for path in real]
    names = [f"{_safe(path.parent.name)}_{name}" if names.count(name) > 1 else name
             for path, name in zip(real, names)]
    unique: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in unique:
            candidate, n = f"{name}-{n}", n + 1
        unique.append(candidate)
    return unique


def _relative(path: str, source: Path, out: Path) -> str:
    if not isinstance(path, str) or not path:
        return ""
    return Path(os.path.relpath((source / path).resolve(), out.resolve())).as_posix()


def combine(datasets: list[Path], out: Path, *, overwrite: bool = False) -> CombineResult:
    """Write the combined dataset ``out`` of the prepared ``datasets`` (see the module doc).

    Refuses (exit 2) fewer than two datasets, the same dataset twice, a dataset without
    splits.csv, an ``out`` inside or around a dataset, and a non-empty ``out`` unless
    ``overwrite`` and breastus wrote it.
    """
    import pandas as pd

    folders = [Path(d).expanduser() for d in datasets]
    if len(folders) < 2:
        raise UsageError("combine needs at least two prepared datasets")
    real = [f.resolve() for f in folders]
    if len(set(real)) < len(real):
        raise UsageError("the same dataset is given twice")
    out = Path(out).expanduser()
    check_out_not_in(out, folders)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} exists and is not empty; use --overwrite to replace it")
    ensure_replaceable(out, "dataset")

    names = dataset_names(folders)
    frames, split_frames, record, notes = [], [], [], []
    fold_counts: list[int | None] = []
    for folder, name in zip(folders, names):
        frame = read_manifest(folder)
        if not (folder / SPLITS).is_file():
            raise InputError(f"{folder / SPLITS} not found: split each dataset before combining "
                             f"(breastus split {folder})")
        from breastus_cli.data.split import read_splits

        splits = read_splits(folder)
        frame = frame.copy()
        frame["dataset"] = name
        frame["dataset_case_id"] = frame["case_id"]
        frame["case_id"] = [f"{name}-{c}" for c in frame["case_id"]]
        frame["patient_id"] = [f"{name}-{p}" for p in frame["patient_id"]]
        if "dup_group" in frame.columns:  # twin groups are named by case id: prefixed alike
            frame["dup_group"] = [f"{name}-{g}" if g else "" for g in frame["dup_group"]]
        for column in PATH_COLUMNS:
            if column in frame.columns:
                frame[column] = [_relative(p, folder, out) for p in frame[column]]
        frames.append(frame)
        splits = splits.copy()
        splits["case_id"] = [f"{name}-{c}" for c in splits["case_id"]]
        if "patient_id" in splits.columns:
            splits["patient_id"] = [f"{name}-{p}" for p in splits["patient_id"]]
        split_frames.append(splits)
        k = int(splits["fold"].nunique()) if "fold" in splits.columns else None
        fold_counts.append(k)
        record.append({"name": name, "path": str(folder.resolve()),
                       "manifest_sha256": manifest_hash(folder),
                       "splits_sha256": file_sha256(folder / SPLITS),
                       "cases": len(frame), "folds": k,
                       "labels": frame["label"].value_counts().sort_index().to_dict()})

    manifest = pd.concat(frames, ignore_index=True, sort=False)
    splits = pd.concat(split_frames, ignore_index=True, sort=False)
    folds = fold_counts[0] if len(set(fold_counts)) == 1 else None
    if folds is None and "fold" in splits.columns:
        splits = splits.drop(columns="fold")
        notes.append("the datasets have different fold counts "
                     f"({', '.join(f'{n}: {k or 0}' for n, k in zip(names, fold_counts))}): the "
                     f"combination has no folds; assign them with "
                     f"'breastus split {out} --folds K'")
    if folds is not None:
        splits["fold"] = splits["fold"].astype(int)
    splits = splits.sort_values("case_id").reset_index(drop=True)

    out.mkdir(parents=True, exist_ok=True)
    with uninterrupted():  # never a manifest without its splits
        with atomic_path(out / MANIFEST) as tmp:
            manifest.to_csv(tmp, index=False)
        with atomic_path(out / SPLITS) as tmp:
            splits.to_csv(tmp, index=False)
        write_json(out / PREPARE_JSON, {
            "breastus_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "format": "combined",
            "combined": record,
            "counts": {"kept": len(manifest)},
            "labels": manifest["label"].value_counts().sort_index().to_dict(),
            "folds": folds,
            "manifest_sha256": manifest_hash(out),
        })
    return CombineResult(out, record, len(manifest), folds, notes)


def members(folder: str | Path) -> list[tuple[dict[str, Any], Any]]:
    """Each dataset of the combined dataset ``folder`` as the combination holds it: its record
    in prepare.json (name, path, manifest and splits.csv SHA-256 when combined) and its rows of
    ``folder/splits.csv`` under the dataset's own case and patient ids, so the split (or folds)
    a run on the combination used can be compared with the dataset's own splits.csv later;
    [] for a dataset that is not a combination or has no splits.csv."""
    from breastus_cli.data.split import read_splits

    folder = Path(folder)
    if not is_view(folder) or not (folder / SPLITS).is_file():
        return []
    records = (dataset_record(folder) or {}).get("combined") or []
    manifest = read_manifest(folder)
    if "dataset" not in manifest.columns:
        return []
    splits = read_splits(folder).merge(manifest[["case_id", "dataset", "dataset_case_id"]],
                                       on="case_id", how="inner")
    found = []
    for record in records:
        if not isinstance(record, dict) or not record.get("name"):
            continue
        name = str(record["name"])
        part = splits[splits["dataset"] == name].copy()
        part["case_id"] = part["dataset_case_id"].astype(str)
        if "patient_id" in part.columns:
            part["patient_id"] = [str(p)[len(name) + 1:] if str(p).startswith(f"{name}-")
                                  else str(p) for p in part["patient_id"]]
        found.append((record, part.drop(columns=["dataset", "dataset_case_id"])))
    return found


def dataset_record(folder: str | Path) -> dict[str, Any] | None:
    """``folder/prepare.json`` checked (:func:`breastus_cli.runfiles.read_prepare`: a bad value
    is one line, exit 2) when it is breastus's dataset marker; None for a folder without one."""
    if not is_owned(folder, "dataset"):
        return None
    return read_prepare(Path(folder) / PREPARE_JSON)


def dataset_column(frame: Any) -> str | None:
    """The column that names each case's dataset when ``frame`` mixes several, else None."""
    if "dataset" in frame.columns and frame["dataset"].nunique() > 1:
        return "dataset"
    return None


#: where ``train-cls DATA_A DATA_B`` and ``cv cls DATA_A DATA_B`` keep their combined dataset
VIEW = "data"


def is_view(folder: str | Path) -> bool:
    """True when ``folder`` is a combined dataset breastus wrote."""
    from breastus_cli.ownership import read_marker

    marker = read_marker(folder, "dataset")
    return marker is not None and marker.get("format") == "combined"


def only_view(folder: str | Path) -> bool:
    """True when ``folder`` holds nothing but its combined dataset ``VIEW/`` (a run or cv
    folder that several DATA arguments were combined into, before it started)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    children = list(folder.iterdir())
    return len(children) == 1 and children[0].name == VIEW and is_view(children[0])


def write_view(datasets: list[Path], folder: Path) -> Path:
    """Combine ``datasets`` into ``folder/data`` (re-written identically on every call, so a
    resumed cross-validation finds the same manifest); returns that path."""
    return combine(datasets, Path(folder) / VIEW, overwrite=True).out
