"""Reader for BUS-BRA (Gómez-Flores et al., Medical Physics 2024).

Layout::

    Images/bus_0001-l.png ...
    Masks/mask_0001-l.png ...
    bus_data.csv       ID, Case, Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX
    5-fold-cv.csv      ID, Pathology, kFold, valid_1 ... valid_5        (optional)
    10-fold-cv.csv     ID, Pathology, kFold, valid_1 ... valid_10       (optional)

* ``Case`` is the patient (several images per patient): it becomes ``patient_id`` so that splits
  can group by it.
* ``Width``/``Height`` disagree with the PNG for a few rows; the file is the truth, so those
  columns (and ``BBOX``) are not read at all.
* Histology, BIRADS, Device and Side travel into the manifest as ``histology``, ``birads``,
  ``device``, ``side``; the published folds as ``published_fold_5`` / ``published_fold_10``.

The CSVs are read with the ``csv`` module rather than pandas on purpose: every cell stays the
string the file holds (``Case`` ``0001`` is not turned into the number 1) and nothing is guessed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from breastus_cli.data.sources.base import (
    LABELS,
    SkippedRow,
    SourceCase,
    SourceScan,
    normalize_label,
    resolve_inside,
)
from breastus_cli.data.sources.folder import (
    REASON_IMAGE_NOT_FOUND,
    REASON_MASK_NOT_FOUND,
    check_root,
    finish_cases,
    safe_case_id,
    visible_subdirs,
)
from breastus_cli.errors import InputError, RowError

FORMAT = "busbra"

TABLE_NAME = "bus_data.csv"
#: Columns of bus_data.csv the reader cannot do without.
REQUIRED_COLUMNS: tuple[str, ...] = ("ID", "Case", "Pathology")
#: Descriptive columns carried into ``extra`` (manifest column names), when the table has them.
EXTRA_COLUMNS: dict[str, str] = {
    "Histology": "histology",
    "BIRADS": "birads",
    "Device": "device",
    "Side": "side",
}
#: Published fold files: file name -> ``extra`` key.
FOLD_FILES: dict[str, str] = {
    "5-fold-cv.csv": "published_fold_5",
    "10-fold-cv.csv": "published_fold_10",
}
FOLD_COLUMNS: tuple[str, ...] = ("ID", "kFold")

REASON_UNKNOWN_CLASS = "unknown class"
REASON_MISSING_ID = "missing ID"
REASON_DUPLICATE_ID = "duplicate ID"


def _read_table(path: Path) -> tuple[dict[str, str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV into ``({lower-case column: column}, [(data row number, {column: cell})])``.

    Cells and headers are stripped; rows that are entirely blank are dropped. Raises
    :class:`InputError` for an unreadable or empty file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a BOM in front of "ID"
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails; accents in Histology are the only risk
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputError(f"cannot parse {path} as CSV: {exc}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{path} is empty: expected a header row with the column names")
    header = [cell.strip() for cell in rows[0]]
    columns: dict[str, str] = {}
    for name in header:
        # Headers are matched case-insensitively (BIRADS vs Birads), first spelling wins.
        columns.setdefault(name.lower(), name)
    records = []
    for number, row in enumerate(rows[1:], start=1):
        cells = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)}
        records.append((number, cells))
    return columns, records


def _require(path: Path, columns: dict[str, str], required: tuple[str, ...]) -> None:
    """Raise :class:`InputError` naming every required column the table lacks."""
    missing = [name for name in required if name.lower() not in columns]
    if missing:
        plural = "columns" if len(missing) > 1 else "column"
        raise InputError(
            f"{path} lacks the required {plural} {', '.join(missing)}",
            hint=f"found columns: {', '.join(columns.values()) or '(none)'}",
        )


def _cell(row: dict[str, str], columns: dict[str, str], name: str) -> str:
    """The stripped cell of column ``name`` (any capitalisation), '' when absent."""
    actual = columns.get(name.lower())
    return row.get(actual, "") if actual is not None else ""


def _read_folds(path: Path) -> dict[str, int] | None:
    """``{ID: kFold}`` from a published fold file, or None when the file is absent.

    Rows with a kFold that is not an integer, and IDs listed twice with different folds, get no
    fold (they are simply left out): the fold file is an optional extra, not worth failing for.
    A file without ``ID``/``kFold`` columns is a structural problem and raises
    :class:`InputError`.
    """
    if not path.is_file():
        return None
    columns, records = _read_table(path)
    _require(path, columns, FOLD_COLUMNS)
    folds: dict[str, int] = {}
    conflicting: set[str] = set()
    for _, row in records:
        case_id = _cell(row, columns, "ID")
        try:
            fold = int(float(_cell(row, columns, "kFold")))
        except (ValueError, OverflowError):
            continue
        if not case_id:
            continue
        if case_id in folds and folds[case_id] != fold:
            conflicting.add(case_id)
        folds.setdefault(case_id, fold)
    for case_id in conflicting:
        del folds[case_id]
    return folds


def _locate(root: Path) -> Path | None:
    """The folder holding bus_data.csv: ``root`` itself or its only sub-folder that has it."""
    if (root / TABLE_NAME).is_file():
        return root
    candidates = [d for d in visible_subdirs(root) if (d / TABLE_NAME).is_file()]
    return candidates[0] if len(candidates) == 1 else None


def _subdir(base: Path, name: str) -> Path | None:
    """Sub-folder ``name`` of ``base``, exact spelling first, else any capitalisation."""
    exact = base / name
    if exact.is_dir():
        return exact
    return next((d for d in visible_subdirs(base) if d.name.lower() == name.lower()), None)


def _mask_name(image_id: str) -> str:
    """``bus_0001-l`` -> ``mask_0001-l.png`` (the release drops the ``bus_`` prefix)."""
    stem = image_id[4:] if image_id.lower().startswith("bus_") else image_id
    return f"mask_{stem}.png"


def detect(root: Path) -> bool:
    """True when ``root`` (or its only sub-folder that has one) holds bus_data.csv. Never raises."""
    try:
        root = Path(root).expanduser()
        return root.is_dir() and _locate(root) is not None
    except (OSError, ValueError):
        return False


def read(root: Path, *, include_other_masks: bool = False) -> SourceScan:
    """Read a BUS-BRA folder: one case per row of bus_data.csv, grouped by patient (``Case``).

    Rows whose class is not benign/malignant, whose image or mask file is missing, or whose ID
    points outside the dataset folder are listed in ``scan.skipped``. ``include_other_masks`` is
    accepted for the common reader signature; BUS-BRA has only lesion masks. Raises
    :class:`InputError` for a missing folder, table, Images/ or Masks/ folder, or required column.
    """
    del include_other_masks  # BUS-BRA has only lesion masks
    root = check_root(root, "BUS-BRA")
    base = _locate(root)
    if base is None:
        several = [d.name for d in visible_subdirs(root) if (d / TABLE_NAME).is_file()]
        if several:
            raise InputError(
                f"several BUS-BRA copies in {root} ({', '.join(several)}): pass one of them"
            )
        raise InputError(f"{TABLE_NAME} not found in {root}", hint="pass the BUS-BRA folder")
    table = base / TABLE_NAME
    images_dir = _subdir(base, "Images")
    if images_dir is None:
        raise InputError(f"Images/ folder not found in {base}")
    masks_dir = _subdir(base, "Masks")
    if masks_dir is None:
        raise InputError(f"Masks/ folder not found in {base}")

    columns, records = _read_table(table)
    _require(table, columns, REQUIRED_COLUMNS)
    extra_columns = {src: key for src, key in EXTRA_COLUMNS.items() if src.lower() in columns}
    folds = {key: _read_folds(base / name) for name, key in FOLD_FILES.items()}

    proposed: list[tuple[str, SourceCase]] = []
    skipped: list[SkippedRow] = []
    seen: dict[str, str] = {}  # ID -> its Pathology on the first row
    for number, row in records:
        image_id = _cell(row, columns, "ID")
        if not image_id:
            skipped.append(SkippedRow(f"row_{number}", REASON_MISSING_ID, ""))
            continue
        # The ID comes from a file the user may have edited: never trust it as a file name.
        case_id = safe_case_id(image_id)
        pathology = _cell(row, columns, "Pathology")
        if image_id in seen:
            if normalize_label(pathology) != normalize_label(seen[image_id]):
                # one image, two classes: which is right is not ours to guess
                raise InputError(f"{table.name}: ID {image_id} is listed twice with different "
                                 f"Pathology ({seen[image_id]}, {pathology})",
                                 hint="keep one row per ID, then prepare again")
            skipped.append(SkippedRow(case_id, REASON_DUPLICATE_ID, image_id))
            continue
        seen[image_id] = pathology

        label = normalize_label(pathology)
        if label not in LABELS:
            skipped.append(SkippedRow(case_id, REASON_UNKNOWN_CLASS, pathology))
            continue

        try:
            image_path = resolve_inside(images_dir, f"{image_id}.png")
            mask_path = resolve_inside(masks_dir, _mask_name(image_id))
        except RowError as exc:
            skipped.append(SkippedRow(case_id, exc.message, exc.hint or image_id))
            continue
        if not image_path.is_file():
            skipped.append(SkippedRow(case_id, REASON_IMAGE_NOT_FOUND, f"{image_id}.png"))
            continue
        if not mask_path.is_file():
            skipped.append(SkippedRow(case_id, REASON_MASK_NOT_FOUND, _mask_name(image_id)))
            continue

        extra: dict[str, object] = {
            key: (_cell(row, columns, src) or None) for src, key in extra_columns.items()
        }
        for key, fold_map in folds.items():
            # Absent file -> no key at all; ID not in the file -> no key for this case.
            if fold_map is not None and image_id in fold_map:
                extra[key] = fold_map[image_id]
        case = SourceCase(
            case_id=case_id,
            label=label,
            image_path=image_path,
            mask_paths=[mask_path],
            patient_id=_cell(row, columns, "Case") or None,
            extra=extra,
        )
        proposed.append((case_id, case))

    cases = finish_cases(proposed)
    skipped.sort(key=lambda s: (s.case_id, s.reason, s.value))
    return SourceScan(
        format=FORMAT, root=base, cases=cases, skipped=skipped, rows_read=len(records)
    )
