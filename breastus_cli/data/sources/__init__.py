"""Source readers: one module per public layout, chosen by name or detected.

Each reader module has ``FORMAT``, ``detect(root) -> bool`` and
``read(root, *, include_other_masks=False) -> SourceScan``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from breastus_cli.errors import InputError, UsageError

#: Detection order matters: the plain-folder layout is the broad fallback, so it comes last.
FORMATS = ("breast", "busbra", "busi", "folder")


def reader(format: str) -> ModuleType:
    """Return the reader module for a format name."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of auto, {', '.join(FORMATS)} (got '{format}')")
    return importlib.import_module(f"breastus_cli.data.sources.{format}")


def detect_format(root: Path) -> str:
    """Guess a source's layout; :class:`InputError` when no reader recognises it."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"source not found: {root}")
    for name in FORMATS:
        if reader(name).detect(root):
            return name
    raise InputError(
        f"cannot tell the layout of {root}: expected a BrEaST workbook + image folder, BUS-BRA "
        "(bus_data.csv, Images/, Masks/), BUSI (benign/ malignant/ with *_mask.png) or class "
        "folders; name it with --format"
    )
