"""What breastus made: the marker files that say a folder is breastus's to replace.

``--overwrite`` (prepare, predict, train/cv/sweep, split --materialize) replaces only a folder
that holds one of breastus's own marker files, recognised by its content, not just its name:

    dataset   DATA/prepare.json      breastus_version and manifest_sha256
    predict   OUT/predict.json       format "breastus-predict"
    run       RUN/config.json        task cls/seg, settings, environment or versions
    cv        CV_DIR/cv.json         task, folds, train
    sweep     SWEEP/sweep.json       task, trials, train
    split     DATA/split/split.json  format "breastus-split"
    compare   OUT/compare.json       format "breastus-compare"

An empty or missing folder is always free. Everything else is refused with exit 2 naming the
folder, and nothing there is touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from breastus_cli.errors import InputError, UsageError

PREDICT_FORMAT = "breastus-predict"
SPLIT_FORMAT = "breastus-split"
COMPARE_FORMAT = "breastus-compare"


def _is_dataset(data: dict[str, Any]) -> bool:
    return "breastus_version" in data and "manifest_sha256" in data


def _is_predict(data: dict[str, Any]) -> bool:
    return data.get("format") == PREDICT_FORMAT


def _is_run(data: dict[str, Any]) -> bool:
    return (data.get("task") in ("cls", "seg") and isinstance(data.get("settings"), dict)
            and ("environment" in data or "versions" in data))


def _is_cv(data: dict[str, Any]) -> bool:
    return data.get("task") in ("cls", "seg") and "folds" in data and "train" in data


def _is_sweep(data: dict[str, Any]) -> bool:
    return data.get("task") in ("cls", "seg") and "trials" in data and "train" in data


def _is_split(data: dict[str, Any]) -> bool:
    return data.get("format") == SPLIT_FORMAT


def _is_compare(data: dict[str, Any]) -> bool:
    return data.get("format") == COMPARE_FORMAT


#: kind -> (marker file name, test of its parsed content)
MARKERS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "dataset": ("prepare.json", _is_dataset),
    "predict": ("predict.json", _is_predict),
    "run": ("config.json", _is_run),
    "cv": ("cv.json", _is_cv),
    "sweep": ("sweep.json", _is_sweep),
    "split": ("split.json", _is_split),
    "compare": ("compare.json", _is_compare),
}


def marker_name(kind: str) -> str:
    """The marker file of ``kind`` (``"dataset"`` -> ``"prepare.json"``)."""
    return MARKERS[kind][0]


def read_marker(folder: str | os.PathLike[str], kind: str) -> dict[str, Any] | None:
    """The parsed marker of ``kind`` in ``folder``, or None when it is absent or not breastus's."""
    name, test = MARKERS[kind]
    path = Path(folder) / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and test(data) else None


def is_owned(folder: str | os.PathLike[str], kind: str) -> bool:
    """True when ``folder`` holds breastus's marker file of ``kind``."""
    return read_marker(folder, kind) is not None


def is_empty(folder: str | os.PathLike[str]) -> bool:
    """True for a missing folder or one with nothing in it."""
    path = Path(folder)
    if not path.is_dir():
        return not path.exists() and not path.is_symlink()
    return not any(path.iterdir())


def ensure_replaceable(folder: str | os.PathLike[str], kind: str,
                       legacy: Callable[[Path], bool] | None = None) -> None:
    """Refuse (exit 2, naming the folder) to replace ``folder`` unless breastus made it.

    Missing or empty folders pass; ``legacy`` may recognise breastus output written before the
    marker existed.

    >>> ensure_replaceable("notes", "dataset")  # doctest: +SKIP
    InputError: notes was not written by breastus (no prepare.json): refusing to replace it
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise InputError(f"{folder} exists and is not a folder: refusing to replace it")
    if is_empty(path) or is_owned(path, kind) or (legacy is not None and legacy(path)):
        return
    raise InputError(f"{folder} was not written by breastus (no {marker_name(kind)}): "
                     "refusing to replace it")


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_out_not_in(out: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]],
                     option: str = "--out") -> None:
    """Refuse an output folder that equals, contains or lies inside any source folder.

    Real paths are compared (symbolic links followed), so a link to the source is the source.
    """
    target = _real(out)
    for source in dict.fromkeys(_real(s) for s in sources):
        if target == source:
            raise UsageError(f"{option} {out} is the source folder {source}: choose another "
                             "folder")
        if source in target.parents:
            raise UsageError(f"{option} {out} lies inside the source folder {source}: choose a "
                             "folder outside it")
        if target in source.parents:
            raise UsageError(f"{option} {out} contains the source folder {source}: choose a "
                             "folder outside it")


def ensure_own_or_empty(folder: str | os.PathLike[str], kind: str, option: str = "--out") -> None:
    """Refuse (exit 2) to write into a non-empty ``folder`` that holds no marker of ``kind``:
    commands that resume into their output folder (cv, sweep) never mix their files with
    someone else's."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {folder} exists and is not a folder")
    if is_empty(path) or is_owned(path, kind):
        return
    raise InputError(f"{option} {folder} is not empty and is not a breastus {kind} folder "
                     f"(no {marker_name(kind)}): choose an empty or new folder")
