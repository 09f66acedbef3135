"""Reader for the BrEaST-Lesions_USG layout (TCIA): a clinical workbook plus one flat PNG folder.

    SOURCE/BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx
    SOURCE/BrEaST-Lesions_USG-images_and_masks/case001.png case001_tumor.png case022_other1.png ...

Rows without ``Mask_tumor_filename`` are skipped as "no tumor mask" (the reference study did the
same; on the real data these are the 4 normal cases). Every file-name cell may hold several
names joined by '&'.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from breastus_cli.data.sources.base import (
    SkippedRow,
    SourceCase,
    SourceScan,
    normalize_label,
    resolve_inside,
    split_names,
)
from breastus_cli.errors import InputError, RowError

FORMAT = "breast"
SHEET_NAME = "BrEaST-Lesions-USG clinical dat"  # Excel cut the real name at 31 characters
IMAGE_FOLDER = "BrEaST-Lesions_USG-images_and_masks"
REQUIRED_COLUMNS = ("CaseID", "Image_filename", "Mask_tumor_filename", "Classification")
#: A CaseID above this is no case number (``1e300`` would name a file of 300 digits); a case id
#: taken from a file name is at most MAX_CASE_ID_CHARS long (it names the prepared files).
MAX_CASE_NUMBER = 10**9
MAX_CASE_ID_CHARS = 100
#: Clinical descriptor columns carried into the manifest (snake_case names there).
DESCRIPTOR_COLUMNS = (
    "Age", "Tissue_composition", "Signs", "Symptoms", "Shape", "Margin", "Echogenicity",
    "Posterior_features", "Halo", "Calcifications", "Skin_thickening", "Interpretation",
    "BIRADS", "Verification", "Diagnosis",
)


def _workbooks(root: Path) -> list[Path]:
    books = sorted(p for p in root.glob("*.xlsx") if not p.name.startswith("~$"))
    # Prefer the clinical-data workbook when a folder holds several.
    return sorted(books, key=lambda p: (0 if "clinical" in p.name.lower() else 1, p.name))


def _image_dir(root: Path) -> Path | None:
    if (root / IMAGE_FOLDER).is_dir():
        return root / IMAGE_FOLDER
    if any(root.glob("case*.png")):
        return root
    return None


def detect(root: Path) -> bool:
    """True when ``root`` holds a workbook and the BrEaST image folder (or case*.png files)."""
    try:
        root = Path(root)
        if root.is_file():
            return root.suffix.lower() == ".xlsx"
        return bool(_workbooks(root)) and _image_dir(root) is not None
    except OSError:
        return False


def _read_sheet(workbook: Path):  # -> pandas.DataFrame
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about the workbook's styles
            sheets = pd.read_excel(workbook, sheet_name=None, engine="openpyxl", dtype=object)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise InputError(f"cannot read workbook {workbook}: {exc}") from None
    if SHEET_NAME in sheets:
        frame = sheets[SHEET_NAME]
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(
                f"workbook {workbook.name}, sheet '{SHEET_NAME}' lacks required column(s): "
                + ", ".join(missing)
            )
        return frame
    for frame in sheets.values():
        if all(c in frame.columns for c in REQUIRED_COLUMNS):
            return frame
    raise InputError(
        f"workbook {workbook.name} has no sheet '{SHEET_NAME}' nor any sheet with the columns "
        + ", ".join(REQUIRED_COLUMNS)
        + f" (sheets: {', '.join(map(str, sheets)) or 'none'})"
    )


def _case_id(row, image_names: list[str]) -> str:
    """``caseNNN`` from a numeric CaseID in [0, MAX_CASE_NUMBER]; else (text, ``inf``,
    ``1e300``, a negative number) the image file's name, made safe; else RowError."""
    raw = row.get("CaseID")
    try:
        value = float(str(raw).strip())
        if 0 <= value <= MAX_CASE_NUMBER:  # False for NaN and inf
            return f"case{int(value):03d}"
    except (TypeError, ValueError):
        pass
    if image_names:
        stem = Path(image_names[0]).stem
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
        if safe and len(safe) <= MAX_CASE_ID_CHARS:
            return safe
    raise RowError("invalid CaseID", hint=str(raw))


def _refuse_duplicates(frame, workbook: Path) -> None:
    """Two rows with one CaseID: which one is the case? Refuse rather than keep the first
    (a lesion case once vanished behind a normal case that shared its id)."""
    rows: dict[str, list[int]] = {}
    for index, row in enumerate(frame.to_dict("records")):
        try:
            case_id = _case_id(row, split_names(row.get("Image_filename")))
        except RowError:
            continue  # skipped later as "invalid CaseID"
        rows.setdefault(case_id, []).append(index + 2)  # spreadsheet row (row 1: the header)
    duplicates = {case_id: found for case_id, found in rows.items() if len(found) > 1}
    if duplicates:
        shown = "; ".join(
            f"{_cell_text(frame.iloc[found[0] - 2]['CaseID']) or case_id} "
            f"(rows {', '.join(map(str, found))})"
            for case_id, found in sorted(duplicates.items()))
        raise InputError(f"workbook {workbook.name}: duplicate CaseID(s): {shown}",
                         hint="give every row its own CaseID, then prepare again")


def _cell_text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read(root: Path, *, include_other_masks: bool = False) -> SourceScan:
    """Read a BrEaST-Lesions_USG folder (or its workbook path) into cases and skipped rows."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"source not found: {root}")
    if root.is_file():
        workbook, root = root, root.parent
    else:
        books = _workbooks(root)
        if not books:
            raise InputError(f"no clinical workbook (*.xlsx) in {root}")
        workbook = books[0]
    image_dir = _image_dir(root)
    if image_dir is None:
        raise InputError(f"image folder '{IMAGE_FOLDER}' not found in {root}")
    frame = _read_sheet(workbook)
    _refuse_duplicates(frame, workbook)

    cases: list[SourceCase] = []
    skipped: list[SkippedRow] = []
    for index, row in enumerate(frame.to_dict("records")):
        image_names = split_names(row.get("Image_filename"))
        try:
            case_id = _case_id(row, image_names)
        except RowError as err:
            skipped.append(SkippedRow(f"row{index + 2}", err.message, err.hint or ""))
            continue
        label = normalize_label(row.get("Classification"))
        tumor_names = split_names(row.get("Mask_tumor_filename"))
        if not tumor_names:
            skipped.append(SkippedRow(case_id, "no tumor mask", label))
            continue
        if len(image_names) != 1:
            reason = "no image file name" if not image_names else "several image file names"
            skipped.append(SkippedRow(case_id, reason, _cell_text(row.get("Image_filename"))))
            continue
        try:
            image_path = resolve_inside(image_dir, image_names[0], what="image file")
            mask_paths = [resolve_inside(image_dir, n, what="mask file") for n in tumor_names]
            other_names = split_names(row.get("Mask_other_filename"))
            other_paths = [resolve_inside(image_dir, n, what="mask file") for n in other_names]
        except RowError as err:
            skipped.append(SkippedRow(case_id, "file name points outside the dataset folder"
                                      if "outside" in err.message or "absolute" in err.message
                                      else err.message, err.hint or ""))
            continue
        if not image_path.is_file():
            skipped.append(SkippedRow(case_id, "image file not found", image_names[0]))
            continue
        missing = [p.name for p in mask_paths if not p.is_file()]
        if missing:
            skipped.append(SkippedRow(case_id, "tumor mask not found", "&".join(missing)))
            continue
        missing = [p.name for p in other_paths if not p.is_file()]
        if missing and include_other_masks:
            skipped.append(SkippedRow(case_id, "other mask not found", "&".join(missing)))
            continue
        if missing:  # not asked for: an unusable 'other' mask costs the case nothing
            other_paths = []
        pixel_size_mm: float | None
        try:
            pixel_size_mm = float(row.get("Pixel_size")) * 10.0  # the workbook gives cm/pixel
            if not (math.isfinite(pixel_size_mm) and pixel_size_mm > 0):
                pixel_size_mm = None
        except (TypeError, ValueError):
            pixel_size_mm = None
        extra = {name.lower(): _cell_text(row.get(name)) for name in DESCRIPTOR_COLUMNS
                 if name in frame.columns}
        cases.append(
            SourceCase(
                case_id=case_id,
                label=label,
                image_path=image_path,
                mask_paths=mask_paths,
                other_mask_paths=other_paths,
                patient_id=case_id,  # one image per case and per patient in BrEaST
                pixel_size_mm=pixel_size_mm,
                extra=extra,
            )
        )
    cases.sort(key=lambda c: c.case_id)
    return SourceScan(FORMAT, root, cases, skipped, rows_read=len(frame))
