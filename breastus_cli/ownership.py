"""What breastus made: the one ownership rule every command that writes a folder goes through.

:func:`claim` is that rule. A folder is written into or replaced only when it is missing,
empty, or holds breastus's own marker file of the same kind, recognised by its content, not
just its name:

    dataset   DATA/prepare.json       breastus_version and manifest_sha256
    predict   OUT/predict.json        format "breastus-predict"
    run       RUN/config.json         task cls/seg, settings, environment or versions
    cv        CV_DIR/cv.json          task, folds, train
    sweep     SWEEP/sweep.json        task, trials, train
    split     DATA/split/split.json   format "breastus-split"
    synth     OUT/synth.json          format "breastus-synth"
    export    OUT/metadata.json       format tflite/savedmodel, exports, source_model_sha256
    compare   OUT/compare.json        format "breastus-compare"
    shift     OUT/shift.json          format "breastus-shift"

(evaluate writes RUN/eval-*/ inside a run or cross-validation folder it claimed as such.)

Besides: the folder never equals, contains or lies inside a folder the command reads, and no
symbolic link inside it leads out of it (a file written through such a link would land in
someone else's folder). Anything else is refused with exit 2 and one line naming the folder;
nothing there is touched.
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
SYNTH_FORMAT = "breastus-synth"
EXPORT_FORMATS = ("tflite", "savedmodel")
COMPARE_FORMAT = "breastus-compare"
SHIFT_FORMAT = "breastus-shift"


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


def _is_synth(data: dict[str, Any]) -> bool:
    return data.get("format") == SYNTH_FORMAT


def _is_export(data: dict[str, Any]) -> bool:
    return (data.get("format") in EXPORT_FORMATS and isinstance(data.get("exports"), dict)
            and "source_model_sha256" in data)
def _is_compare(data: dict[str, Any]) -> bool:
    return data.get("format") == COMPARE_FORMAT


def _is_shift(data: dict[str, Any]) -> bool:
    return data.get("format") == SHIFT_FORMAT


#: kind -> (marker file name, test of its parsed content)
MARKERS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "dataset": ("prepare.json", _is_dataset),
    "predict": ("predict.json", _is_predict),
    "run": ("config.json", _is_run),
    "cv": ("cv.json", _is_cv),
    "sweep": ("sweep.json", _is_sweep),
    "split": ("split.json", _is_split),
    "synth": ("synth.json", _is_synth),
    "export": ("metadata.json", _is_export),
    "compare": ("compare.json", _is_compare),
    "shift": ("shift.json", _is_shift),
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


def claim(folder: str | os.PathLike[str], kind: str, *,
          inputs: Iterable[str | os.PathLike[str]] = (), option: str = "--out",
          legacy: Callable[[Path], bool] | None = None, inside_ok: bool = False) -> Path:
    """The one ownership rule: return ``folder`` when breastus may write into or replace it.

    Refused (:class:`InputError`/:class:`UsageError`, exit 2, one line naming the folder):
    something other than a folder at that path; a folder that equals, contains or (unless
    ``inside_ok``) lies inside one of ``inputs``; a non-empty folder without breastus's marker
    of ``kind`` (``legacy`` may recognise breastus output written before the marker existed);
    a symbolic link inside the folder that leads out of it. Nothing is written or deleted here.

    >>> claim("notes", "dataset")  # doctest: +SKIP
    InputError: --out notes is not a breastus dataset folder and is not empty: ...
    """
    path = Path(os.path.expanduser(os.fspath(folder)))
    where = f"{option} {folder}" if option else str(folder)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise InputError(f"{where} exists and is not a folder: refusing to write there")
    if not (is_empty(path) or is_owned(path, kind) or (legacy is not None and legacy(path))):
        raise InputError(f"{where} is not a breastus {kind} folder and is not empty: it was "
                         f"not written by breastus (no {marker_name(kind)}), refusing to write "
                         "into or replace it", hint="choose an empty or new folder")
    check_out_not_in(path, inputs, option or "--out", inside_ok=inside_ok)
    check_links(path, option)
    return path


def escaping_link(folder: str | os.PathLike[str]) -> Path | None:
    """The first symbolic link inside ``folder`` (at any depth) that leads out of it, or None.

    Linked folders are not entered (``os.walk`` does not follow links): the link itself is the
    finding."""
    root = Path(folder)
    if not root.is_dir():
        return None
    real_root = root.resolve()
    for current, folders, files in os.walk(root):
        for name in (*folders, *files):
            entry = Path(current) / name
            if entry.is_symlink():
                target = entry.resolve()
                if target != real_root and real_root not in target.parents:
                    return entry
    return None


def check_links(folder: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse (exit 2) a folder holding a symbolic link that leads out of it: nothing is ever
    written through it into someone else's folder."""
    link = escaping_link(folder)
    if link is not None:
        where = f"{option} {folder}" if option else str(folder)
        raise InputError(f"{where}: {link} is a symbolic link to {link.resolve()}, outside "
                         "the folder: refusing to write through it",
                         hint="remove the link, or choose an empty or new folder")


def ensure_replaceable(folder: str | os.PathLike[str], kind: str,
                       legacy: Callable[[Path], bool] | None = None) -> None:
    """:func:`claim` for a folder about to be replaced as a whole (no option in the message)."""
    claim(folder, kind, option="", legacy=legacy)


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_out_not_in(out: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]],
                     option: str = "--out", inside_ok: bool = False) -> None:
    """Refuse an output folder that equals, contains or lies inside any source folder
    (``inside_ok``: lying inside is allowed, a run's own ``RUN/export``).

    Real paths are compared (symbolic links followed), so a link to the source is the source.
    """
    target = _real(out)
    for source in dict.fromkeys(_real(s) for s in sources):
        if target == source:
            raise UsageError(f"{option} {out} is the source folder {source}: choose another "
                             "folder")
        if source in target.parents and not inside_ok:
            raise UsageError(f"{option} {out} lies inside the source folder {source}: choose a "
                             "folder outside it")
        if target in source.parents:
            raise UsageError(f"{option} {out} contains the source folder {source}: choose a "
                             "folder outside it")


def ensure_own_or_empty(folder: str | os.PathLike[str], kind: str, option: str = "--out") -> None:
    """:func:`claim` for commands that resume into their output folder (cv, sweep): they never
    mix their files with someone else's."""
    claim(folder, kind, option=option)
