"""Data commands: ``synth``, ``prepare``, ``split`` (none of them loads TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console


def _show(*renderables: object) -> None:
    if console.state.quiet:
        return
    out = console.out()
    for item in renderables:
        out.print(item)


@app.command(
    "synth",
    epilog="Example: breastus synth demo/src --cases 80 --seed 1",
)
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to create (BrEaST layout: workbook + PNG folder)."),
    cases: int = typer.Option(60, "--cases", "-n", help="Number of cases (>= 4)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same bytes."),
    normal: int = typer.Option(-1, "--normal", help="Normal cases without a mask (-1: like the real 4/256)."),
    malignant_fraction: float = typer.Option(0.39, "--malignant-fraction",
                                             help="Share of malignant among lesion cases."),
    min_side: int = typer.Option(128, "--min-side", help="Smallest image side in pixels."),
    max_side: int = typer.Option(256, "--max-side", help="Largest image side in pixels."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a dataset synth wrote (synth.json) at OUT; "
                                        "other folders are never touched."),
) -> None:
    """Make a synthetic dataset in the exact BrEaST-Lesions_USG layout.

    Lesions look the way BI-RADS describes: benign oval, circumscribed, wider-than-tall;
    malignant irregular or spiculated, taller-than-wide, with posterior shadowing. The files
    carry the real archive's quirks (RGBA, tints, hidden pixels under transparency, '&' lists).
    """
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast
    from breastus_cli.reports.tables import synth_table

    settings = SynthSettings(out=out, cases=cases, seed=seed,
                             normal=None if normal < 0 else normal,
                             malignant_fraction=malignant_fraction,
                             min_side=min_side, max_side=max_side, overwrite=overwrite)
    result = make_synthetic_breast(settings)
    _show(synth_table(result))


@app.command(
    "prepare",
    epilog=(
        "Examples: breastus prepare ~/BrEaST-Lesions_USG --out data/breast  |  "
        "breastus prepare Dataset_BUSI_with_GT --out data/busi --format busi"
    ),
)
def prepare_cmd(
    source: Path = typer.Argument(..., help="Source dataset folder (or the BrEaST workbook)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    format: str = typer.Option("auto", "--format", "-f",
                               help="auto, breast, busi, busbra or folder."),
    strict: bool = typer.Option(False, "--strict",
                                help="Fail (exit 2) on any unusable row instead of skipping it."),
    include_other_masks: bool = typer.Option(False, "--include-other-masks",
                                             help="Unite 'other' masks with the tumor mask."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a dataset prepare wrote (prepare.json) at --out; "
                                        "other folders are never touched."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", metavar="N",
                                   help="Skip (and list) any image with more than N pixels, read "
                                        "from its header before decoding."),
    dup_threshold: float = typer.Option(0.95, "--dup-threshold", metavar="R",
                                        help="Images whose 64x64 thumbnails correlate at R or "
                                             "more are near-duplicates: one dup_group, kept in "
                                             "one split."),
) -> None:
    """Read a source layout, validate and decode every case, write a normalized dataset.

    Writes DATA/manifest.csv, DATA/cls/<label>/, DATA/seg/{images,masks}/ and
    DATA/prepare.json (every skipped row with its reason). Row-level problems are skipped and
    listed; structural ones stop with exit code 2.
    """
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.reports.progress import progress
    from breastus_cli.reports.tables import prepare_tables

    settings = PrepareSettings(source=source, out=out, format=format, strict=strict,
                               include_other_masks=include_other_masks, overwrite=overwrite,
                               max_pixels=max_pixels, dup_threshold=dup_threshold)
    with progress("decoding cases") as update:
        result = prepare(settings, on_progress=update)
    _show(*prepare_tables(result))
    problems = len(result.strict_problems)
    if problems:
        console.warn(f"{problems} row(s) skipped for a problem: see {out / 'prepare.json'}")


@app.command(
    "split",
    epilog="Examples: breastus split data/breast  |  breastus split data/breast --folds 5 --seed 1",
)
def split_cmd(
    data: Path = typer.Argument(..., help="Dataset folder written by 'breastus prepare'."),
    ratio: tuple[float, float, float] = typer.Option(
        (0.8, 0.1, 0.1), "--ratio", help="train val test shares (0 test for no test split).",
        metavar="TRAIN VAL TEST",
    ),
    seed: int = typer.Option(42, "--seed", help="Random seed."),
    folds: int = typer.Option(0, "--folds", "-k", help="Also assign K cross-validation folds."),
    materialize: bool = typer.Option(False, "--materialize",
                                     help="Write DATA/split/{cls,seg}/... folders (split-folders)."),
    published_folds: bool = typer.Option(True, "--published-folds/--no-published-folds",
                                         help="Use a source's published folds when it has them."),
) -> None:
    """Case-level (patient-level where known), stratified, seeded train/val/test split.

    Writes DATA/splits.csv (case_id, patient_id, label, split[, fold]).
    """
    from breastus_cli.data.split import SplitSettings, split_dataset
    from breastus_cli.reports.tables import split_tables

    settings = SplitSettings(data=data, ratio=tuple(ratio),
                             seed=seed, folds=folds or None, materialize=materialize,
                             published_folds=published_folds)
    result = split_dataset(settings)
    _show(*split_tables(result))
    for message in result.warnings:
        console.warn(message)


@app.command(
    "combine",
    epilog="Examples: breastus combine data/breast data/busbra --out data/breast+busbra  |  "
           "breastus train-cls data/breast+busbra --fold 0  |  "
           "breastus evaluate RUN  (every metric per dataset too)",
)
def combine_cmd(
    datasets: list[Path] = typer.Argument(..., help="Two or more folders written by 'breastus "
                                                     "prepare' and split."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the combined dataset (its "
                                                       "manifest points at the datasets' files)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an existing combined dataset breastus wrote."),
) -> None:
    """Several prepared datasets as one, to train across hospitals: every case keeps its
    dataset, split and fold; nothing is copied.

    Writes OUT/manifest.csv, OUT/splits.csv and OUT/prepare.json. Train, cv and evaluate read it
    like any prepared dataset; evaluate reports each dataset beside the pooled numbers.
    """
    from breastus_cli.data.combine import combine
    from breastus_cli.reports.tables import combine_table

    result = combine(datasets, out, overwrite=overwrite)
    _show(combine_table(result))
    for message in result.notes:
        console.warn(message)
