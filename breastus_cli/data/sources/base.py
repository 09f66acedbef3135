"""What every source reader returns: the cases it found and the rows it had to skip.

A reader only *reads* a source layout (workbook, CSV, folder names) and resolves file paths;
it does not decode pixels. :mod:`breastus_cli.data.prepare` decodes and validates each case,
so image-level problems (corrupt file, size mismatch) are handled in one place for all sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from breastus_cli.errors import RowError

#: The labels a prepared dataset may hold, in the order used for class indices.
LABELS: tuple[str, ...] = ("benign", "malignant")


@dataclass
class SourceCase:
    """One case (one image) as a source describes it.

    ``mask_paths`` are the lesion (tumor) masks whose union is the lesion mask;
    ``other_mask_paths`` are extra masks (BrEaST's ``Mask_other_filename``) used only when asked.
    ``extra`` carries source-specific columns into the manifest (descriptors, published folds).
    """

    case_id: str
    label: str
    image_path: Path
    mask_paths: list[Path] = field(default_factory=list)
    other_mask_paths: list[Path] = field(default_factory=list)
    patient_id: str | None = None
    pixel_size_mm: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class SkippedRow:
    """A row that could not be used, with the offending file name or value and why."""

    case_id: str
    reason: str
    value: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"case_id": self.case_id, "value": self.value, "reason": self.reason}


@dataclass
class SourceScan:
    """The result of reading a source layout."""

    format: str
    root: Path
    cases: list[SourceCase]
    skipped: list[SkippedRow]
    rows_read: int


#: The longest file name (one path component) and path most file systems take, in bytes; a
#: longer name cannot be a file there (stat fails with "File name too long").
NAME_MAX = 255
PATH_MAX = 4096


def resolve_inside(root: Path, name: str, *, what: str = "file") -> Path:
    """Resolve a file name from a source table against ``root``, refusing names that escape it.

    Raises :class:`RowError` for an empty name, an absolute path, one that points outside
    ``root`` (``../x.png``, also through symbolic links), or one too long to be a file.

    >>> resolve_inside(Path("/d"), "case001.png")  # doctest: +SKIP
    PosixPath('/d/case001.png')
    """
    name = str(name).strip()
    if not name:
        raise RowError(f"empty {what} name")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise RowError(f"{what} name is an absolute path", hint=name)
    longest = max(len(part.encode()) for part in name.replace("\\", "/").split("/"))
    if longest > NAME_MAX:
        raise RowError(f"{what} name too long ({longest} bytes; file names hold at most "
                       f"{NAME_MAX})", hint=f"{name[:60]}...")
    root_resolved = root.resolve()
    candidate = (root / name).resolve()
    if len(str(candidate).encode()) >= PATH_MAX:
        raise RowError(f"{what} path too long (paths hold at most {PATH_MAX - 1} bytes)",
                       hint=f"{name[:60]}...")
    try:
        candidate.relative_to(root_resolved)
    except ValueError:
        raise RowError(f"{what} name points outside the dataset folder", hint=name) from None
    return candidate


def split_names(cell: object) -> list[str]:
    """Split a cell holding one or several file names joined by '&' (BrEaST's convention).

    Empty cells, NaN and blanks give an empty list.

    >>> split_names("case022_other1.png&case022_other2.png")
    ['case022_other1.png', 'case022_other2.png']
    """
    if cell is None:
        return []
    if isinstance(cell, float) and cell != cell:  # NaN
        return []
    text = str(cell).strip()
    if not text or text.lower() == "nan":
        return []
    return [part.strip() for part in text.split("&") if part.strip()]


def normalize_label(value: object) -> str:
    """Map a source's class spelling to ``benign`` / ``malignant`` / ``normal`` (or lower-case it)."""
    text = str(value).strip().lower()
    aliases = {"b": "benign", "m": "malignant", "0": "benign", "1": "malignant", "n": "normal"}
    return aliases.get(text, text)
