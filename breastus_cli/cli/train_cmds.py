"""Training commands: ``train-cls`` and ``train-seg``, thin shells over the one engine.

Their options come from the settings dataclasses (:mod:`breastus_cli.engine.runs.settings`: the one
owner of defaults, help text and the from-scratch policy) through :func:`settings_options`; cv
and sweep reuse them. ``--config FILE`` fills what the command line does not give
(:func:`apply_config`). The command body builds the settings dataclass and calls the engine,
nothing else.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from breastus_cli.cli.app import app
from breastus_cli.engine.runs.settings import (
    ClsSettings,
    SegSettings,
    TrainSettings,
    read_config_file,
)
from breastus_cli.errors import InputError, UsageError
from breastus_cli.reports import console

_KW = inspect.Parameter.KEYWORD_ONLY


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, _KW, default=default, annotation=annotation)


def _plain(hint: Any) -> Any:
    """``X | None`` -> ``X`` (the default None says it is optional)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def settings_options(settings_type: type[TrainSettings],
                     skip: frozenset[str] | set[str] = frozenset()) -> list[inspect.Parameter]:
    """The options of a settings type, from its fields: default, flags and help live there
    (``Annotated[type, typer.Option(...)] = default``); ``--resume`` follows ``--run-dir``."""
    hints = typing.get_type_hints(settings_type)
    params = []
    for f in fields(settings_type):
        if not f.metadata.get("cli") or f.name in skip:
            continue
        extra = dict(f.metadata["extra"])
        text = settings_type.option_help(f.name)
        kind: Any = _KW
        if extra.pop("argument", False):
            info: Any = typer.Argument(help=text, **extra)
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        else:
            flags = f.metadata["flags"] or (f"--{f.name.replace('_', '-')}",)
            info = typer.Option(*flags, help=text, **extra)
        hint = _plain(hints[f.name])
        if f.name == "data":  # DATA [DATA ...]: several are combined (breastus combine)
            hint = list[Path]
        params.append(inspect.Parameter(f.name, kind, default=f.default,
                                        annotation=Annotated[hint, info]))
        if f.name == "run_dir" and "resume" not in skip:
            params.append(_param("resume", Path, typer.Option(
                None, "--resume", metavar="RUN_DIR",
                help="Continue an interrupted run at its next epoch.")))
    return params


def config_options() -> list[inspect.Parameter]:
    """``--config FILE`` and the click context that tells which options were typed."""
    return [
        inspect.Parameter("ctx", _KW, annotation=typer.Context),
        _param("config", Path, typer.Option(
            None, "--config", metavar="FILE",
            help="Settings from a TOML or JSON file (YAML when PyYAML is installed), or a "
                 "run's config.json to replay it; options given here override the file.")),
    ]


def apply_config(ctx: typer.Context, options: dict[str, Any], config: Path | None,
                 settings_type: type[TrainSettings],
                 not_from_run: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Fill ``options`` from ``config`` where the command line gave nothing (it always wins).

    Keys name options (``img_size``/``img-size`` or the long flag: a sweep's ``lr`` is its
    ``--lr`` grid) or settings without an option (``cache_dir``, ``checkpoint_epochs``, returned
    to pass to the settings); anything else is an error naming the keys. A run's config.json
    loses ``not_from_run`` (what this command sets itself) besides its run_dir and cache_dir.
    """
    if config is None:
        return {}
    values, from_run = read_config_file(config, settings_type.KIND)
    if from_run:
        values = {k: v for k, v in values.items() if k not in not_from_run}
    params = {p.name: p for p in ctx.command.params if p.name}
    by_flag = {opt[2:].replace("-", "_"): p.name for p in params.values()
               for opt in getattr(p, "opts", []) if opt.startswith("--")}
    settings_only = {f.name for f in fields(settings_type) if not f.metadata.get("cli")}
    extras: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        name = key if key in params and key in options else by_flag.get(key)
        if name is None or name == "config" or name not in options:
            if key in settings_only:
                extras[key] = value
            else:
                unknown.append(key)
            continue
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            continue  # typed on the command line: it wins
        options[name] = _convert(ctx, params[name], value, key, config)
    if unknown:
        raise UsageError(f"--config {config}: unknown key(s) for '{ctx.command_path}': "
                         f"{', '.join(sorted(unknown))}")
    return extras


def _convert(ctx: typer.Context, param: Any, value: Any, key: str, config: Path) -> Any:
    """A file's value as the option would have parsed it (a list joins for a grid option)."""
    if value is None:
        return None
    if getattr(param, "nargs", 1) == -1 and not isinstance(value, list):
        value = [value]  # DATA [DATA ...] from a file's single path
    elif isinstance(value, list) and not param.multiple:
        value = ",".join(str(v) for v in value)
    try:
        return param.process_value(ctx, value)
    except typer.BadParameter as exc:
        raise UsageError(f"--config {config}: {key}: {exc.message}") from None


def _make_command(name: str, settings_type: type[TrainSettings], doc: str, epilog: str) -> None:
    def command(**options: Any) -> None:
        ctx, config = options.pop("ctx"), options.pop("config")
        if config is not None and options.get("resume") is not None:
            raise UsageError("--config and --resume exclude each other: a resumed run keeps "
                             "the settings in its config.json")
        extras = apply_config(ctx, options, config, settings_type)
        resume = options.pop("resume")
        datasets = one_data(options)
        settings = settings_type(**options, **extras)
        if resume is None:
            settings.validate()  # bad options fail before TensorFlow loads
        if len(datasets) > 1:
            if resume is not None:
                raise UsageError("--resume takes no DATA: the run keeps its combined dataset")
            from breastus_cli.engine.training import tasks
            from breastus_cli.engine.runs.rundir import default_run_dir

            settings.run_dir = settings.run_dir or default_run_dir(
                settings_type.KIND, tasks.task_for(settings_type.KIND).run_name(settings))
            settings.data = combine_into(datasets, Path(settings.run_dir))
        run_training(settings, settings_type.KIND, resume)

    params = settings_options(settings_type) + config_options()
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    # one paragraph per blank-line block, as Typer's rich help would show a docstring
    command.__doc__ = re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(doc))
    command.__name__ = name.replace("-", "_")
    app.command(name, epilog=epilog)(command)


def one_data(options: dict[str, Any]) -> list[Path]:
    """Replace ``options["data"]`` (DATA [DATA ...]) by its first path; returns them all."""
    datasets = list(options.get("data") or [])
    options["data"] = datasets[0] if datasets else None
    return datasets


def combine_into(datasets: list[Path], folder: Path, marker: str | None = None) -> Path:
    """Several DATA: their combined dataset (``breastus combine``) in ``folder/data``, written
    only into a new or empty folder, one holding just that, or (``marker``) breastus's own."""
    from breastus_cli.data.combine import VIEW, only_view, write_view
    from breastus_cli.ownership import is_empty, is_owned

    if not (is_empty(folder) or only_view(folder) or (marker and is_owned(folder, marker))):
        raise InputError(f"{folder} exists and is not empty: several DATA are combined into "
                         f"{folder}/{VIEW}, which needs a new folder",
                         hint="choose another folder, or combine first: breastus combine "
                              "DATA_A DATA_B --out DATA_AB")
    return write_view(datasets, folder)


def run_training(settings: Any, kind: str, resume: Path | None) -> None:
    """Train (or resume) with progress, then render the result."""
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine.training import tasks
    from breastus_cli.engine.training.train import resume_settings, train
    from breastus_cli.reports.progress import TrainProgress
    from breastus_cli.reports.training import train_table

    task = tasks.task_for(kind)
    if resume is not None:
        settings = resume_settings(resume, task.settings_type)
    from breastus_cli.engine.evaluation.calibrate import after_training, summary

    with TrainProgress() as progress:
        result = train(settings, task, resume=resume is not None, on_batch=progress.on_batch)
    # ood statistics / post-processing
    calibration = after_training(result.run_dir, kind, result.model)
    if not console.state.quiet:
        console.out().print(train_table(result))
        if calibration is not None:
            console.info(summary(calibration))


_make_command(
    "train-cls", ClsSettings,
    """Train a benign/malignant classifier (MobileNetV2, ResNet50, EfficientNet-Lite0/2) into a
    run directory.

    The run directory holds config.json, history.csv, model.keras (best by --monitor),
    train.log and, while running, checkpoints/ for --resume.
    """,
    "Examples: breastus train-cls data/breast --model resnet50 --epochs 30 --lr 1e-4  |  "
    "breastus train-cls data/breast data/busbra --fold 0  (both datasets: RUN/data combines "
    "them)  |  "
    "breastus train-cls data/breast --weights none --img-size 64 --epochs 2  |  "
    "breastus train-cls --resume runs/cls/20261124-101500-mobilenetv2  |  "
    "breastus train-cls --config runs/cls/20261124-101500-mobilenetv2/config.json",
)

_make_command(
    "train-seg", SegSettings,
    """Train a lesion segmenter: U-Net with an EfficientNetB2 (or other) encoder.

    Same run directory, callbacks, resume and progress as train-cls; best checkpoint by
    validation IoU at threshold 0.5. Defaults are the reference study's best setting. It ends
    with the calibration step: the mask post-processing chosen on the validation cases
    (RUN/postprocess.json; 'breastus calibrate RUN' runs it again).
    """,
    "Examples: breastus train-seg data/breast  (U-Net EfficientNetB2, 20 epochs, lr 0.005)  |  "
    "breastus train-seg data/breast --weights none --img-size 64 --epochs 2  |  "
    "breastus train-seg --config seg.toml --epochs 30",
)
