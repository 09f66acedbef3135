"""``breastus sweep cls|seg DATA``, ``sweep collect DIR`` and ``sweep trial DIR --index I``.

Every train-cls / train-seg option passes through (declared once, in train_cmds); the sweep
adds its grid, ``--out``, ``--independent``, ``--jobs`` and the Slurm options.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import typer

from breastus_cli.cli.app import app
from breastus_cli.cli.slurm_options import pop_slurm, slurm_options
from breastus_cli.cli.train_cmds import (
    CLS_DEFAULTS, SEG_DEFAULTS, _param, _shared_options, cls_options, seg_options,
)
from breastus_cli.errors import UsageError
from breastus_cli.reports import console

sweep_app = typer.Typer(
    help="Sweep learning rate x epochs (the reference study's 7 x 5 grid by default), locally "
         "or as a Slurm array; epochs reuse one training per learning rate.",
    no_args_is_help=True,
)
app.add_typer(sweep_app, name="sweep")

_NOT_SWEPT = {"lr", "epochs", "run_dir", "resume"}


def _numbers(text: str, kind: type, option: str) -> tuple[Any, ...]:
    try:
        values = tuple(kind(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    except ValueError:
        raise UsageError(f"{option} takes a comma-separated list of numbers (got '{text}')") from None
    if not values:
        raise UsageError(f"{option} is empty")
    return values


def _sweep_options() -> list[inspect.Parameter]:
    return [
        _param("out", Path, typer.Option(..., "--out", "-o", help="Sweep folder (resumable).")),
        _param("lr_list", str, typer.Option("1e-6,1e-5,1e-4,1e-3,5e-3,1e-2,5e-2", "--lr",
                                            help="Learning rates, comma-separated.")),
        _param("epochs_list", str, typer.Option("10,20,30,40,50", "--epochs",
                                                help="Epoch counts, comma-separated.")),
        _param("independent", bool, typer.Option(
            False, "--independent", help="Train every grid point from scratch (no prefixes).")),
        _param("jobs", int, typer.Option(1, "--jobs", "-j",
                                         help="Trials run at once here, cores divided.")),
        *slurm_options("sweep"),
    ]


def _make_sweep(kind: str, settings_type: str, defaults: dict[str, Any],
                own: list[inspect.Parameter]) -> None:
    params = [p for p in _shared_options(kind, defaults) + own if p.name not in _NOT_SWEPT]
    params += _sweep_options()

    def command(**options: Any) -> None:
        from breastus_cli.engine import settings as settings_module
        from breastus_cli.engine.sweep import SweepSettings, sweep

        slurm = pop_slurm(options)
        sweep_keys = {p.name for p in _sweep_options()}
        s = {k: options.pop(k) for k in list(options) if k in sweep_keys}
        train = getattr(settings_module, settings_type)(**options)
        settings = SweepSettings(task=kind, train=train, out=s["out"],
                                 lrs=_numbers(s["lr_list"], float, "--lr"),
                                 epochs=_numbers(s["epochs_list"], int, "--epochs"),
                                 independent=s["independent"], jobs=s["jobs"], slurm=slurm)
        settings.validate()
        _with_engine()
        result = sweep(settings)
        _render(result)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (f"Sweep a {'classifier' if kind == 'cls' else 'segmenter'} over learning "
                       "rate x epochs; any train option passes through.")
    command.__name__ = f"sweep_{kind}"
    sweep_app.command(kind, epilog=(
        f"Examples: breastus sweep {kind} data/breast --out sweeps/{kind}  |  "
        f"breastus sweep {kind} data/breast --lr 1e-4,1e-3 --epochs 5,10 --out s --jobs 2  |  "
        f"breastus sweep {kind} data/breast --out s --slurm --partition gpu --time 2:00:00"))(command)


def _with_engine() -> None:
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()


def _render(result: Any) -> None:
    from breastus_cli.reports.sweep import sweep_table, write_sweep_plots

    if result.rows:
        write_sweep_plots(result)
    if not console.state.quiet:
        console.out().print(sweep_table(result))


_make_sweep("cls", "ClsSettings", CLS_DEFAULTS, cls_options())
_make_sweep("seg", "SegSettings", SEG_DEFAULTS, seg_options())


@sweep_app.command("collect")
def collect_cmd(sweep_dir: Path = typer.Argument(..., help="A sweep folder.")) -> None:
    """Gather finished trials into results.csv, best.json, grid.png and heatmap.png."""
    from breastus_cli.engine.sweep import collect

    _render(collect(sweep_dir))


@sweep_app.command("trial")
def trial_cmd(sweep_dir: Path = typer.Argument(..., help="A sweep folder."),
              index: int = typer.Option(..., "--index", help="Trial number (0-based).")) -> None:
    """Run, resume or skip one trial of a sweep (what each local job and Slurm task runs)."""
    _with_engine()
    from breastus_cli.engine.sweep import run_trial

    outcome = run_trial(sweep_dir, index)
    console.info(f"trial {index}: {outcome}")
