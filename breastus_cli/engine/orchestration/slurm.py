"""Slurm array jobs for sweeps and cross-validation: one task per trial or fold, each a plain
``breastus`` command that resumes its own work when re-submitted after a wall-time kill."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from breastus_cli.atomic import write_text
from breastus_cli.errors import WorkError


@dataclass
class SlurmOptions:
    """What ``--slurm`` passes through to sbatch."""

    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    gpus: str | None = None
    mem: str | None = None
    account: str | None = None
    extra: list[str] = field(default_factory=list)
    dry_run: bool = False


def task_command(*args: str) -> list[str]:
    """``python -m breastus_cli ARGS``: the interpreter of this very installation, so compute
    nodes run the same environment as the login node that submitted. Not quiet: the output goes
    to the task's log, where "finished already" and "resuming" are worth reading."""
    return [sys.executable, "-m", "breastus_cli", *args]


def write_array(folder: Path, name: str, n_tasks: int, command: list[str],
                options: SlurmOptions) -> Path:
    """``folder/<name>.sbatch``: an array of ``n_tasks``; ``command`` gets the task id last."""
    folder = Path(folder).resolve()
    lines = ["#!/bin/bash", f"#SBATCH --job-name=breastus-{name}",
             f"#SBATCH --array=0-{n_tasks - 1}",
             f"#SBATCH --output={folder}/logs/%A_%a.out"]
    for flag, value in (("partition", options.partition), ("time", options.time),
                        ("cpus-per-task", options.cpus_per_task), ("gpus", options.gpus),
                        ("mem", options.mem), ("account", options.account)):
        if value not in (None, ""):
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {arg}" for arg in options.extra]
    lines += ["set -euo pipefail",
              "# each task takes its share of the node's cores",
              'export BREASTUS_THREADS="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}"',
              "# a re-submitted task resumes its work; a finished one returns at once",
              shlex.join(command) + ' "$SLURM_ARRAY_TASK_ID"', ""]
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.sbatch"
    write_text(path, "\n".join(lines))
    os.chmod(path, 0o755)
    return path


def submit(path: Path) -> str:
    """``sbatch --parsable``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise WorkError(f"sbatch not found: is this a Slurm login node? (--dry-run only writes "
                        f"{path})")
    proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkError(f"sbatch refused {path}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]
