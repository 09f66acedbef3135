"""The prepared dataset's manifest: one row per case, paths relative to the dataset folder.

Every later command (split, train, evaluate, cv) starts from ``DATA/manifest.csv``; its SHA-256
is the dataset fingerprint recorded in each run's config.json.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from breastus_cli.errors import InputError

MANIFEST = "manifest.csv"
SPLITS = "splits.csv"
PREPARE_JSON = "prepare.json"

#: Columns every manifest has, in this order; source-specific columns follow.
CORE_COLUMNS = (
    "case_id", "patient_id", "image", "mask", "label", "pixel_size_mm", "source",
    "width", "height", "lesion_area_px", "other_mask",
)


def manifest_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / MANIFEST


def read_manifest(data_dir: str | Path):  # -> pandas.DataFrame
    """Read ``DATA/manifest.csv``; a missing or malformed one is an :class:`InputError`."""
    import pandas as pd

    data_dir = Path(data_dir)
    path = manifest_path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"dataset folder not found: {data_dir}")
    if not path.is_file():
        raise InputError(f"{path} not found: run 'breastus prepare SOURCE --out {data_dir}' first")
    try:
        frame = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "label": str,
                                         "image": str, "mask": str,
                                         "other_mask": str, "dup_group": str},
                            keep_default_na=False,
                            na_values={"pixel_size_mm": [""]})
    except Exception as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    missing = [c for c in ("case_id", "image", "label") if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s): {', '.join(missing)}")
    if frame["case_id"].duplicated().any():
        dup = frame.loc[frame["case_id"].duplicated(), "case_id"].iloc[0]
        raise InputError(f"{path} lists case {dup} twice")
    if "patient_id" not in frame.columns:
        frame["patient_id"] = frame["case_id"]
    frame["patient_id"] = frame["patient_id"].where(frame["patient_id"] != "", frame["case_id"])
    return frame


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_hash(data_dir: str | Path) -> str:
    """SHA-256 of the manifest file: the dataset's fingerprint."""
    return file_sha256(manifest_path(data_dir))
