"""``breastus compare``: two classifiers on the same cases, the paired difference of AUC."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console


@app.command(
    "compare",
    epilog=(
        "Examples: breastus compare runs/cls/mobilenetv2 runs/cls/resnet50  |  "
        "breastus compare CV_A CV_B --out cmp/  |  breastus compare RUN_A RUN_B --split val"
    ),
)
def compare_cmd(
    run_a: Path = typer.Argument(..., help="Model A: a run directory (its eval-<split>/), an "
                                           "evaluation folder, or a cross-validation folder "
                                           "(its out-of-fold predictions)."),
    run_b: Path = typer.Argument(..., help="Model B, the same kinds; scored on the same cases."),
    out: Path = typer.Option(None, "--out", help="Comparison folder (default: "
                                                 "compare-<A>-vs-<B> here)."),
    split: str = typer.Option("test", "--split", help="Which evaluation of a run directory "
                                                      "(eval-<split>/)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
) -> None:
    """The AUC of two classifiers on the same cases and B minus A with a paired bootstrap CI.

    Reads the predictions 'breastus evaluate' (or 'breastus cv') wrote; runs no model. Writes
    OUT/compare.json, OUT/paired_predictions.csv, OUT/roc_paired.png and OUT/report.md.
    """
    from breastus_cli.engine.evaluation.compare import CompareSettings, compare
    from breastus_cli.reports import comparison

    if out is None:
        out = Path(f"compare-{Path(run_a).resolve().name}-vs-{Path(run_b).resolve().name}")
    result = compare(CompareSettings(run_a=run_a, run_b=run_b, out=out, split=split,
                                     n_bootstrap=bootstrap, seed=seed))
    comparison.write_artifacts(result)
    if not console.state.quiet:
        console.out().print(comparison.table(result))
        console.out().print(f"Wrote {result.out}/")
