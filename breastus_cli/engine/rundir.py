"""The run directory: everything a run needs to be re-evaluated, resumed, exported or used by
``predict`` from the folder alone.

    RUN/config.json     every setting, seed, versions, data fingerprint, host, Slurm job, command
    RUN/history.csv     one row per epoch
    RUN/model.keras     best checkpoint by the monitored validation metric
    RUN/best.json       which epoch that was, and its metrics
    RUN/checkpoints/    BackupAndRestore state for --resume (removed when the run finishes)
    RUN/train.log       the lines printed while training
    RUN/grid/           with --checkpoint-epochs: the model at each of those epochs
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from breastus_cli import __version__
from breastus_cli.atomic import write_json
from breastus_cli.errors import InputError

CONFIG = "config.json"
HISTORY = "history.csv"
MODEL = "model.keras"
BEST = "best.json"
CHECKPOINTS = "checkpoints"
LOG = "train.log"
GRID = "grid"  # models saved at chosen epochs (sweeps): grid/epoch-010.keras

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
    """Read ``RUN/config.json``; a folder that is not a run is an :class:`InputError`."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise InputError(f"{run_dir} is not a breastus run directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def run_cases(config: dict[str, Any], role: str, data: str | Path | None = None):  # -> DataFrame
    """The cases of ``role`` (train/val/test/all) as the run saw them: its dataset (or ``data``),
    its fold, and the validation it carved with its seed."""
    from breastus_cli.data.split import select_cases

    settings = config.get("settings", {})
    folder = Path(data or config.get("data", {}).get("path") or settings.get("data") or "")
    if not folder.is_dir():
        raise InputError(f"dataset folder not found: {folder}" + (
            "" if data else " (recorded in the run's config.json; give it with --data)"))
    return select_cases(folder, role, fold=settings.get("fold"),
                        seed=int(settings.get("seed", 42)),
                        val_fraction=float(settings.get("val_fraction", 0.1)))


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
