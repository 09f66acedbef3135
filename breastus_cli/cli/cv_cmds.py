"""``breastus cv cls|seg DATA --folds K``, ``cv fold CV_DIR --index K``, ``cv summarize``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from breastus_cli.cli.app import app
from breastus_cli.cli.slurm_options import pop_slurm, slurm_options
from breastus_cli.cli.sweep_cmds import _with_engine
from breastus_cli.cli.train_cmds import (
    _param,
    apply_config,
    combine_into,
    config_options,
    one_data,
    settings_options,
)
from breastus_cli.engine.runs.settings import ClsSettings, SegSettings, TrainSettings
from breastus_cli.errors import UsageError
from breastus_cli.reports import console

cv_app = typer.Typer(
    help="Case-level k-fold cross-validation: one model per fold, pooled out-of-fold metrics "
         "with 95% bootstrap CIs.",
    no_args_is_help=True,
)
app.add_typer(cv_app, name="cv")

_NOT_IN_CV = {"fold", "run_dir", "resume"}


def _cv_options() -> list[inspect.Parameter]:
    return [
        _param("out", Path, typer.Option(None, "--out", "-o", show_default=False,
                                         help="CV folder (resumable); required.")),
        _param("folds", int, typer.Option(5, "--folds", "-k",
                                          help="Folds (the dataset must be split with them).")),
        _param("target_sensitivity", float, typer.Option(
            None, "--target-sensitivity", metavar="S",
            help="Per fold, the threshold reaching malignant sensitivity S on its validation.")),
        _param("bootstrap", int, typer.Option(2000, "--bootstrap", help="Bootstrap resamples.")),
    ]


def _seg_cv_option() -> list[inspect.Parameter]:
    return [_param("seg_cv", Path, typer.Option(
        None, "--seg-cv", metavar="SEG_CV_DIR",
        help="Fold K's segmenter (fold K of this 'cv seg' folder, which never saw fold K): "
             "lesion crops with --roi mask, lesion descriptors with --fusion; no ground truth "
             "at test time, ground-truth-mask numbers reported beside as the upper bound.")),
        _param("fusion", str, typer.Option(
            "none", "--fusion", metavar="none|descriptors",
            help="descriptors: fuse the CNN's score with lesion descriptors (logistic "
                 "regressions: descriptors on the training folds' ground-truth masks, the "
                 "combination on validation); needs --seg-cv. Adding it to a finished CV "
                 "fits it without retraining.")),
        _param("fuse_with_cv", Path, typer.Option(
            None, "--fuse-with-cv", metavar="CLS_CV_DIR",
            help="With --fusion: fold K's combination also takes the score of fold K of this "
                 "'cv cls' folder (a second classifier on the same folds, e.g. whole image "
                 "beside lesion crops). Adding it to a finished CV refits without retraining."))]


def _make_cv(settings_type: type[TrainSettings]) -> None:
    kind = settings_type.KIND
    params = settings_options(settings_type, skip=_NOT_IN_CV)
    params += _cv_options() + (_seg_cv_option() if kind == "cls" else []) + slurm_options("cv")
    params += config_options()

    def command(**options: Any) -> None:
        from breastus_cli.engine.orchestration.cv import CVSettings, cv

        ctx, config = options.pop("ctx"), options.pop("config")
        extras = apply_config(ctx, options, config, settings_type, not_from_run=_NOT_IN_CV)
        slurm = pop_slurm(options)
        cv_keys = {p.name for p in _cv_options()}
        c = {k: options.pop(k) for k in list(options) if k in cv_keys}
        seg_cv = options.pop("seg_cv", None)
        fusion = options.pop("fusion", "none")
        fuse_with_cv = options.pop("fuse_with_cv", None)
        if c["out"] is None:
            raise UsageError("--out is required (or 'out' in the --config file)")
        datasets = one_data(options)
        if len(datasets) > 1:  # combined once into CV_DIR/data, then read like one dataset
            options["data"] = combine_into(datasets, Path(c["out"]), marker="cv")
        train = settings_type(**options, **extras)
        settings = CVSettings(task=kind, train=train, out=c["out"], folds=c["folds"],
                              target_sensitivity=c["target_sensitivity"],
                              n_bootstrap=c["bootstrap"], slurm=slurm, seg_cv=seg_cv,
                              fusion=fusion, fuse_with_cv=fuse_with_cv)
        settings.validate()
        _with_engine()
        _render(cv(settings))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = (f"Cross-validate a {'classifier' if kind == 'cls' else 'segmenter'}: "
                       "one model per fold, pooled out-of-fold metrics with CIs.")
    command.__name__ = f"cv_{kind}"
    cv_app.command(kind, epilog=(
        f"Example: breastus split data/breast --folds 5 && breastus cv {kind} data/breast "
        f"--folds 5 --weights none --out cv/{kind}"))(command)


def _render(result: Any) -> None:
    from breastus_cli.reports.cv import cv_table, write_summary

    write_summary(result)
    if not console.state.quiet:
        console.out().print(cv_table(result))


_make_cv(ClsSettings)
_make_cv(SegSettings)


@cv_app.command("fold")
def fold_cmd(cv_dir: Path = typer.Argument(..., help="A CV folder."),
             index: int = typer.Option(..., "--index", help="Fold number (0-based).")) -> None:
    """Train and evaluate one fold (what each Slurm array task runs); resumes, or skips if done."""
    _with_engine()
    from breastus_cli.engine.orchestration.cv import run_fold

    console.info(f"fold {index}: {run_fold(cv_dir, index)}")


@cv_app.command("summarize")
def summarize_cmd(cv_dir: Path = typer.Argument(..., help="A CV folder.")) -> None:
    """Pool the finished folds into summary.json and summary.md."""
    from breastus_cli.engine.orchestration.cv import summarize

    _render(summarize(cv_dir))
