"""The run directory: everything a run needs to be re-evaluated, resumed, exported or used by
``predict`` from the folder alone.

    RUN/config.json     every setting, seed, versions, host, Slurm job, command; the data it
                        trained on (SHA-256 of manifest.csv and splits.csv, fold)
    RUN/threshold.json  the decision threshold the calibration step ('calibrate' or 'evaluate
                        --target-sensitivity') chose on the validation cases (evaluate,
                        predict, export use it; else 0.5)
    RUN/postprocess.json, RUN/fusion.json   a segmenter's mask post-processing, a classifier's
                        fused model: chosen by the same step (engine/evaluation/calibrate.py)
    RUN/history.csv     one row per epoch
    RUN/model.keras     best checkpoint by the monitored validation metric
    RUN/best.json       which epoch that was, and its metrics
    RUN/checkpoints/    BackupAndRestore state for --resume (removed when the run finishes)
    RUN/train.log       the lines printed while training
    RUN/grid/           with --checkpoint-epochs: the model at each of those epochs
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastus_cli import __version__, runfiles
from breastus_cli.atomic import write_json
from breastus_cli.data.combine import members
from breastus_cli.data.manifest import SPLITS, file_sha256, manifest_hash, manifest_path
from breastus_cli.data.split import read_splits, select_cases
from breastus_cli.engine.runs.provenance import CHOSEN_DEFAULT, CHOSEN_ON_VALIDATION
from breastus_cli.engine.runs.runconfig import CONFIG, RunConfig
from breastus_cli.errors import InputError

HISTORY = "history.csv"
MODEL = "model.keras"
BEST = "best.json"
CHECKPOINTS = "checkpoints"
LOG = "train.log"
GRID = "grid"  # models saved at chosen epochs (sweeps): grid/epoch-010.keras
THRESHOLD = "threshold.json"  # the decision threshold calibrate --target-sensitivity chose
#: The one decision-threshold rule of evaluate, predict, export and cv (written in metrics.json).
THRESHOLD_RULE = ("the run's threshold.json (chosen on validation cases by the calibration "
                  "step: 'calibrate --target-sensitivity') when present, else 0.5")

log = logging.getLogger("breastus")


def default_run_dir(kind: str, name: str, root: Path = Path("runs")) -> Path:
    """``runs/<kind>/<YYYYmmdd-HHMMSS>-<name>``, made unique if two runs start in one second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / kind / f"{stamp}-{name}"
    n = 2
    while path.exists():
        path = root / kind / f"{stamp}-{name}-{n}"
        n += 1
    return path


def environment() -> dict[str, Any]:
    """Where and how this process runs: host, Slurm ids, the exact command line."""
    env = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "command": shlex.join(["breastus", *sys.argv[1:]]) if sys.argv else None,
        "cwd": os.getcwd(),
        "breastus_version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST"):
        if key in os.environ:
            env[key.lower()] = os.environ[key]
    return env


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN/config.json`` (checked; :meth:`RunConfig.read` for its typed view); a folder
    that is not a run is an :class:`InputError`."""
    return RunConfig.read(run_dir).raw


def run_cases(config: dict[str, Any] | RunConfig, role: str,
              data: str | Path | None = None):  # -> DataFrame
    """The cases of ``role`` (train/val/test/all) as the run saw them: its dataset (or ``data``),
    its fold, and the validation it carved with its seed."""
    run = RunConfig.of(config)
    folder = Path(data or run.data_path or "")
    if not folder.is_dir():
        raise InputError(f"dataset folder not found: {folder}" + (
            "" if data else " (recorded in the run's config.json; give it with --data)"))
    # every case of the dataset: no fold, no splits.csv needed (another dataset may have none)
    return select_cases(folder, role, fold=run.fold if role != "all" else None,
                        seed=run.seed, val_fraction=run.val_fraction)


def split_fingerprint(data: str | Path, by_fold: bool) -> str | None:
    """SHA-256 of the assignment a run's cases come from: each case's patient and split
    (``by_fold``: its fold) in ``DATA/splits.csv``; None without that file or column. Unlike
    the file's hash it survives re-writing the same split (adding folds with the same seed)."""
    if not (Path(data) / "splits.csv").is_file():
        return None
    return splits_fingerprint(read_splits(data), by_fold)


def splits_fingerprint(splits: Any, by_fold: bool) -> str | None:
    """:func:`split_fingerprint` of a splits table (case_id, patient_id, split[, fold])."""
    import hashlib

    column = "fold" if by_fold else "split"
    if column not in splits.columns:
        return None
    splits = splits.sort_values("case_id")
    text = "\n".join(f"{c},{p},{v}" for c, p, v in zip(
        splits["case_id"], splits.get("patient_id", splits["case_id"]), splits[column]))
    return hashlib.sha256(text.encode()).hexdigest()


def data_record(data: Path, fold: int | None) -> dict[str, Any]:
    """What config.json records about the dataset a run trains on: its path, the manifest's
    and splits.csv's SHA-256, the run's fold, and the :func:`split_fingerprint` it used; for a
    combined dataset (``breastus combine``) also ``members``: each dataset's path, manifest
    and splits.csv SHA-256 as combined, and the fingerprint of its cases' split (or folds) in
    the combination, so that a dataset re-split after it was combined is caught when the run
    is scored on it (:func:`check_same_split`)."""
    splits = Path(data) / SPLITS
    record: dict[str, Any] = {
        "path": str(Path(data).resolve()), "manifest_sha256": manifest_hash(data),
        "splits_sha256": file_sha256(splits) if splits.is_file() else None,
        "split_sha256": split_fingerprint(data, fold is not None), "fold": fold}
    found = members(data)
    if found:
        record["members"] = [
            {"name": member.get("name"), "path": member.get("path"),
             "manifest_sha256": member.get("manifest_sha256"),
             "splits_sha256": member.get("splits_sha256"),
             "split_sha256": splits_fingerprint(part, fold is not None)}
            for member, part in found]
    return record


def same_dataset(folder: Path, recorded: dict[str, Any]) -> bool:
    """Is ``folder`` the dataset the run recorded (the same path, or the same manifest)?"""
    if recorded.get("path") and folder.resolve() == Path(recorded["path"]).resolve():
        return True
    return (manifest_path(folder).is_file()
            and manifest_hash(folder) == recorded.get("manifest_sha256"))


def split_changed(name: str | Path, recorded: dict[str, Any], folder: Path, by_fold: bool,
                  what: str = "trained",
                  advice: str = "evaluate on the split it trained on or retrain") -> str | None:
    """The one-line refusal when ``folder/splits.csv`` no longer holds the split recorded in
    ``recorded`` (splits_sha256, split_sha256), else None."""
    want = recorded.get("splits_sha256")
    path = Path(folder) / SPLITS
    now = file_sha256(path) if path.is_file() else None
    if not want or now == want:
        return None
    if recorded.get("split_sha256") and \
            split_fingerprint(folder, by_fold) == recorded["split_sha256"]:
        return None  # the file was re-written, the run's cases are where they were
    return (f"{name} was {what} on splits.csv sha256 {want[:12]}…, {path} is now "
            + (f"{now[:12]}…" if now else "missing")
            + f": re-split since? {advice}")


def member_split_changed(name: str | Path, recorded: dict[str, Any], member: dict[str, Any],
                         folder: Path, by_fold: bool) -> str | None:
    """The one-line refusal when ``folder``, one dataset (``member``) of the combined dataset a
    run trained on (``recorded``), no longer splits its cases as the combination did."""
    want = member.get("split_sha256")
    now = split_fingerprint(folder, by_fold)
    if not want or now == want:
        return None
    what = "folds" if by_fold else "train/val/test split"
    return (f"{name} was trained on the combined dataset {recorded.get('path')}, where "
            f"{folder} ({member.get('name')}) had another {what} (sha256 {want[:12]}…, now "
            + (f"{now[:12]}…" if now else f"none in {Path(folder) / 'splits.csv'}")
            + "): re-split since? its cases could be training cases; evaluate on the combined "
              "dataset or retrain")


def check_same_split(run_dir: str | Path, config: dict[str, Any] | RunConfig,
                     data: str | Path | None = None) -> None:
    """Refuse (:class:`InputError`, exit 2) when the run's own dataset (``data`` or the recorded
    one: same path or same manifest) has been re-split since the run trained: its "test" cases
    could be training cases. The same for a dataset that was one member of the combined
    dataset the run trained on. Another dataset, and runs that predate the record, pass."""
    run = RunConfig.of(config)
    recorded = run.data
    folder = Path(data or run.data_path or "")
    if not folder.is_dir():
        return
    fold = run.data_fold
    if same_dataset(folder, recorded):
        message = split_changed(run_dir, recorded, folder, fold is not None) \
            if recorded.get("splits_sha256") else None
    else:
        message = next((found for member in recorded.get("members") or []
                        if isinstance(member, dict) and same_dataset(folder, member)
                        and (found := member_split_changed(run_dir, recorded, member, folder,
                                                           fold is not None))), None)
    if message:
        raise InputError(message)


@dataclass
class Threshold:
    """A run's decision threshold: ``value``, why (``source``, a sentence for people), the rule
    that chose it, and what it was chosen on (``chosen_on``, what code compares: one of
    provenance.CHOSEN_*)."""

    value: float
    source: str
    rule: str = THRESHOLD_RULE
    chosen_on: str = CHOSEN_DEFAULT
    target_sensitivity: float | None = None  # chosen on validation for this sensitivity


def read_threshold(run_dir: str | Path,
                   config: dict[str, Any] | RunConfig | None = None) -> Threshold:
    """The run's decision threshold by the one rule: ``RUN/threshold.json`` (chosen on
    validation cases by the calibration step, ``calibrate --target-sensitivity``) when
    present, else config.json's (0.5). A malformed threshold.json is an :class:`InputError`
    naming it."""
    path = Path(run_dir) / THRESHOLD
    if not path.is_file():
        value = RunConfig.of(config if config is not None else read_config(run_dir)).threshold
        return Threshold(value, f"default {value:g}", chosen_on=CHOSEN_DEFAULT)
    chosen = runfiles.read_threshold(path)
    value, target = chosen.threshold, chosen.target_sensitivity
    if target is None:  # written before the target was recorded: "..., target sensitivity 0.9"
        found = re.search(r"target sensitivity ([0-9.]+)", str(chosen.source or ""))
        target = float(found.group(1)) if found else None
    # threshold.json is written by the calibration step only: chosen on validation
    # (its chosen_on field; files written before the field were chosen there too)
    return Threshold(value, "chosen on validation cases"
                     + (f" for target sensitivity {float(target):g}" if target else ""),
                     chosen_on=chosen.chosen_on or CHOSEN_ON_VALIDATION,
                     target_sensitivity=None if target is None else float(target))


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG, config)


def attach_log(run_dir: Path) -> logging.Handler:
    """Copy every ``breastus`` log line into ``RUN/train.log`` (plain text, timestamped)."""
    handler = logging.FileHandler(run_dir / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def detach_log(handler: logging.Handler) -> None:
    log.removeHandler(handler)
    handler.close()
