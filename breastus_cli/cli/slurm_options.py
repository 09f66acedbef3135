"""The ``--slurm`` options shared by ``sweep`` and ``cv``, declared once."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from breastus_cli.cli.train_cmds import _param
from breastus_cli.errors import UsageError


def slurm_options(what: str) -> list[inspect.Parameter]:
    return [
        _param("slurm", bool, typer.Option(False, "--slurm",
                                           help="Write and submit an sbatch array job.")),
        _param("dry_run", bool, typer.Option(False, "--dry-run",
                                             help=f"With --slurm: only write {what}.sbatch.")),
        _param("partition", str, typer.Option(None, "--partition", help="Slurm partition.")),
        _param("time", str, typer.Option(None, "--time", help="Slurm wall time per task.")),
        _param("cpus_per_task", int, typer.Option(None, "--cpus-per-task", help="Slurm CPUs.")),
        _param("gpus", str, typer.Option(None, "--gpus", help="Slurm GPUs per task.")),
        _param("mem", str, typer.Option(None, "--mem", help="Slurm memory per task.")),
        _param("account", str, typer.Option(None, "--account", help="Slurm account.")),
        _param("sbatch_arg", list[str], typer.Option(
            None, "--sbatch-arg", help="Any other sbatch option, e.g. --sbatch-arg=--qos=short.")),
    ]


def pop_slurm(options: dict[str, Any]) -> Any:
    """Take the Slurm options out of ``options``; a SlurmOptions with --slurm, else None."""
    from breastus_cli.engine.orchestration.slurm import SlurmOptions

    values = {p.name: options.pop(p.name) for p in slurm_options("")}
    if not values["slurm"]:
        if values["dry_run"]:
            raise UsageError("--dry-run goes with --slurm")
        return None
    return SlurmOptions(partition=values["partition"], time=values["time"],
                        cpus_per_task=values["cpus_per_task"], gpus=values["gpus"],
                        mem=values["mem"], account=values["account"],
                        extra=list(values["sbatch_arg"] or []), dry_run=values["dry_run"])
