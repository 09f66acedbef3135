"""``breastus shift`` and ``breastus adapt``: bringing a run to a new hospital (shift: a
classifier; adapt: a classifier or a segmenter)."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console


@app.command(
    "shift",
    epilog="Examples: breastus shift runs/cls/x new_scans/ --out shift-new  |  "
           "breastus shift runs/cls/x data/other_hospital --out shift-other",
)
def shift_cmd(
    run: Path = typer.Argument(..., help="A classifier run directory."),
    inputs: Path = typer.Argument(..., help="The new scans: a prepared dataset (its manifest "
                                            "gives pixel spacing) or a folder of images/DICOMs."),
    out: Path = typer.Option(..., "--out", help="Folder for shift.json, scans.csv, report.md "
                                                "and plots."),
    data: Path = typer.Option(None, "--data", help="The run's training dataset, when it moved "
                                                   "from the path config.json records."),
    workers: int = typer.Option(2, "--workers", min=1, help="Decoding threads."),
) -> None:
    """How new scans differ from the run's training scans, and whether the run should be
    trusted on them.

    Compares image sizes, pixel spacing, grey levels, contrast and the ultrasound share of the
    frame, and scores each scan's distance from the training cases in the model's own feature
    space, at several depths of its backbone (ood_score; 1 = the 95th percentile of the run's
    validation cases). Prints a one-line
    verdict; writes OUT/shift.json, OUT/scans.csv (one row per scan), OUT/report.md with plots.
    The run's feature statistics (RUN/feature_stats.npz/.json) are computed once if missing.
    """
    from breastus_cli.engine.evaluation.shift import shift
    from breastus_cli.reports.shift import write_report

    result = shift(run, inputs, out, data=data, workers=workers)
    report = write_report(result.out, result.summary, result.scans, result.scores)
    console.info(result.verdict)
    console.detail(f"report: {report}  ({result.summary['n_scans']} scan(s), "
                   f"{result.summary['n_errors']} unreadable, {result.seconds:.1f} s)")


@app.command(
    "adapt",
    epilog="Examples: breastus adapt runs/cls/x --data new_scans/ --out runs/cls/x-site2  |  "
           "breastus adapt runs/cls/x --data new_scans/ --labels data/site2 --out runs/cls/x-site2"
           "  |  breastus adapt runs/seg/unet --data new_scans/ --out runs/seg/unet-site2",
)
def adapt_cmd(
    run: Path = typer.Argument(..., help="A classifier or segmenter run directory."),
    data: Path = typer.Option(..., "--data", help="The new hospital's scans (unlabeled folder "
                                                  "or prepared dataset)."),
    out: Path = typer.Option(..., "--out", help="The new run folder."),
    labels: Path = typer.Option(None, "--labels", help="A prepared dataset of labelled local "
                                                       "cases: choose the threshold again on "
                                                       "them (a classifier run only)."),
    target_sensitivity: float = typer.Option(0.9, "--target-sensitivity",
                                             help="With --labels: the sensitivity the threshold "
                                                  "is chosen for."),
    workers: int = typer.Option(2, "--workers", min=1, help="Decoding threads."),
) -> None:
    """A copy of a classifier or segmenter run adapted to a new hospital without retraining
    (AdaBN).

    Every batch-normalization layer's statistics are re-estimated on the --data scans (no
    labels needed; other weights unchanged). A classifier, with --labels: the decision
    threshold is chosen again for --target-sensitivity on those local cases, with the number
    of cases and a bootstrap CI of the sensitivity reached. A segmenter: its U-Net adapted the
    same way, its postprocess.json copied as it is (--labels is refused: thresholds are a
    classifier's). config.json records adapted_from (path, SHA-256), the scans' fingerprint,
    their number and the method.
    """
    from breastus_cli.engine.export.adapt import adapt

    result = adapt(run, data, out, labels=labels, target_sensitivity=target_sensitivity,
                   workers=workers)
    console.info(f"adapted run: {result.out} ({result.n_layers} batch-norm layer(s) "
                 f"re-estimated on {result.n_scans} scan(s), {result.n_errors} unreadable, "
                 f"{result.seconds:.1f} s)")
    chosen = result.threshold
    if chosen is not None:
        ci = chosen.get("local_sensitivity_ci")
        ci_text = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        console.info(f"threshold {chosen['threshold']:.4f}: sensitivity "
                     f"{chosen['local_sensitivity']:.2f}{ci_text}, specificity "
                     f"{chosen['local_specificity']:.2f} on {chosen['local_n']} local cases "
                     f"({chosen['local_malignant']} malignant)")
