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
    _param,
    apply_config,
    combine_into,
    config_options,
    one_data,
    settings_options,
)
from breastus_cli.engine.runs.settings import (
    PAPER_EPOCHS,
    PAPER_LRS,
    ClsSettings,
    SegSettings,
    TrainSettings,
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
#: What a replayed run's config.json does not give a sweep (the grid and its checkpoints)
_NOT_FROM_RUN = _NOT_SWEPT | {"checkpoint_epochs"}


def _listed(values: tuple[Any, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


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
        _param("out", Path, typer.Option(None, "--out", "-o", show_default=False,
                                         help="Sweep folder (resumable); required.")),
        _param("lr_list", str, typer.Option(
            None, "--lr", show_default=False,
            help=f"Learning rates, comma-separated (default {_listed(PAPER_LRS)}).")),
        _param("epochs_list", str, typer.Option(
            None, "--epochs", show_default=False,
            help=f"Epoch counts, comma-separated (default {_listed(PAPER_EPOCHS)}).")),
        _param("independent", bool, typer.Option(
            False, "--independent", help="Train every grid point from scratch (no prefixes).")),
        _param("jobs", int, typer.Option(1, "--jobs", "-j",
                                         help="Trials run at once here, cores divided.")),
        *slurm_options("sweep"),
    ]


def _make_sweep(settings_type: type[TrainSettings]) -> None:
    kind = settings_type.KIND
    params = settings_options(settings_type, skip=_NOT_SWEPT) + _sweep_options()
    params += config_options()

    def command(**options: Any) -> None:
        from breastus_cli.engine.orchestration.sweep import SweepSettings, sweep

        ctx, config = options.pop("ctx"), options.pop("config")
        extras = apply_config(ctx, options, config, settings_type, not_from_run=_NOT_FROM_RUN)
        slurm = pop_slurm(options)
        sweep_keys = {p.name for p in _sweep_options()}
        s = {k: options.pop(k) for k in list(options) if k in sweep_keys}
        if s["out"] is None:
            raise UsageError("--out is required (or 'out' in the --config file)")
        datasets = one_data(options)
        if len(datasets) > 1:  # combined once into SWEEP/data
            options["data"] = combine_into(datasets, Path(s["out"]), marker="sweep")
        train = settings_type(**options, **extras)
        lrs = PAPER_LRS if s["lr_list"] is None else _numbers(s["lr_list"], float, "--lr")
        epochs = (PAPER_EPOCHS if s["epochs_list"] is None
                  else _numbers(s["epochs_list"], int, "--epochs"))
        settings = SweepSettings(task=kind, train=train, out=s["out"], lrs=lrs, epochs=epochs,
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


_make_sweep(ClsSettings)
_make_sweep(SegSettings)


@sweep_app.command("collect")
def collect_cmd(sweep_dir: Path = typer.Argument(..., help="A sweep folder.")) -> None:
    """Gather finished trials into results.csv, best.json, grid.png and heatmap.png."""
    from breastus_cli.engine.orchestration.sweep import collect

    _render(collect(sweep_dir))


@sweep_app.command("trial")
def trial_cmd(sweep_dir: Path = typer.Argument(..., help="A sweep folder."),
              index: int = typer.Option(..., "--index", help="Trial number (0-based).")) -> None:
    """Run, resume or skip one trial of a sweep (what each local job and Slurm task runs)."""
    _with_engine()
    from breastus_cli.engine.orchestration.sweep import run_trial

    outcome = run_trial(sweep_dir, index)
    console.info(f"trial {index}: {outcome}")
