"""``breastus evaluate``: one run, several runs (a comparison), or the folds of a CV; and
``breastus calibrate``: the choices a run makes on its validation cases, alone. The options
both take are declared once here (``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console

Data = Annotated[Path, typer.Option("--data", help="Dataset (default: the one in config.json).")]
TargetSensitivity = Annotated[float, typer.Option(
    "--target-sensitivity", metavar="S",
    help="Pick the threshold on the validation split that reaches malignant sensitivity S "
         "(the run keeps it in threshold.json for predict, export and later evaluations; "
         "with evaluate: --split test or train). Default threshold: threshold.json, else 0.5.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Inference batch size.")]
SegRun = Annotated[Path, typer.Option(
    "--seg-run", help="Lesion-centred classifiers: take the crops from this segmenter (no "
                      "ground truth needed); both are reported. Without it the crops come "
                      "from the ground-truth masks: oracle numbers (an upper bound), labelled "
                      "so. Fused classifiers: the descriptors come from its masks.")]
Fusion = Annotated[str, typer.Option(
    "--fusion", metavar="none|descriptors",
    help="descriptors: fit the run's fused classifier (CNN score + lesion descriptors; "
         "descriptors on its training cases' ground-truth masks, the combination and "
         "threshold on its validation cases; RUN/fusion.json); evaluate then reports CNN, "
         "descriptors and fused side by side. Needs --seg-run. A run with fusion.json is "
         "scored fused whenever --seg-run is given.")]
FuseWith = Annotated[Path, typer.Option(
    "--fuse-with", metavar="RUN2",
    help="With --fusion descriptors: the combination also takes this second classifier's "
         "score (another view of the scan, e.g. a whole-image CNN beside a lesion-centred "
         "one). RUN2 must have trained on the same split and fold: it is refused when it saw "
         "any case scored. fusion.json names it and its model's SHA-256; predict runs it too.")]


@app.command(
    "evaluate",
    epilog=(
        "Examples: breastus evaluate runs/cls/20261124-101500-mobilenetv2  |  "
        "breastus evaluate RUN --target-sensitivity 0.9  |  "
        "breastus evaluate RUN_A RUN_B (comparison)  |  breastus evaluate runs/cv-parent/  |  "
        "breastus evaluate CV_DIR --ensemble --data OTHER_DATA --split all --tta flip"
    ),
)
def evaluate_cmd(
    runs: list[Path] = typer.Argument(..., help="Run directories, or a folder of runs (folds)."),
    data: Data = None,
    split: str = typer.Option("test", "--split", help="test, val, train or all."),
    target_sensitivity: TargetSensitivity = None,
    threshold: float = typer.Option(None, "--threshold", help="Fixed decision threshold."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples for the CIs."),
    batch_size: BatchSize = 32,
    seg_run: SegRun = None,
    fusion: Fusion = "none",
    fuse_with: FuseWith = None,
    ensemble: bool = typer.Option(
        False, "--ensemble", help="Score each cross-validation folder as one model: the mean of "
                                  "its fold models, threshold the median of theirs. Only on "
                                  "another dataset (--data): its folds together saw every case "
                                  "of their own. Writes CV_DIR/eval-ensemble-<data>-<split>/."),
    tta: str = typer.Option("none", "--tta",
                            help="Test-time augmentation: none, or flip (the mean of the outputs "
                                 "on the image and on its horizontal mirror image)."),
    postprocess: str = typer.Option(
        None, "--postprocess", metavar="none|largest",
        help="Segmentation runs: force the mask post-processing (largest: keep the largest "
             "connected component, holes filled) and write eval-<split>-postprocess-<method>/. "
             "Default: the run's (RUN/postprocess.json, chosen on its validation cases by "
             "train-seg, cv or 'breastus calibrate'; predict applies it too), else none."),
) -> None:
    """Metrics with 95% bootstrap CIs, plots and a report for runs on a split.

    Classification runs: RUN/eval-<split>/ gets predictions.csv, metrics.json, report.md,
    report.html, confusion_matrix.png, roc.png, pr.png, calibration.png. Segmentation runs:
    per_case.csv, metrics.json, masks/, overlays/ (best, median, worst), report.md/html.

    Evaluate reads the run and writes only its eval folder. With --target-sensitivity or
    --fusion it first calibrates the run (what 'breastus calibrate' does alone: threshold.json,
    fusion.json) and says which files it wrote.
    """
    from breastus_cli import backend
    from breastus_cli.engine.evaluation.eval_cases import find_runs
    from breastus_cli.engine.evaluation.eval_settings import EvalSettings

    settings = [EvalSettings(run_dir=r, data=data, split=split,
                             target_sensitivity=target_sensitivity, threshold=threshold,
                             n_bootstrap=bootstrap, batch_size=batch_size, seg_run=seg_run,
                             ensemble=ensemble, tta=tta, fusion=fusion,
                             fuse_with=fuse_with, postprocess=postprocess)
                for r in find_runs(list(runs), ensemble=ensemble)]
    for s in settings:
        s.validate()
    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine.evaluation.evaluate import evaluate
    from breastus_cli.engine.stats.metrics import fold_summary
    from breastus_cli.reports import evaluation

    from breastus_cli.engine.evaluation.calibrate import summary

    results = []
    for s in settings:
        result = evaluate(s)
        if result.calibration is not None:
            console.info(summary(result.calibration))
        evaluation.write_artifacts(result)
        results.append(result)
        if not console.state.quiet:
            console.out().print(evaluation.result_table(result))
        if evaluation.twins_note(result.metrics, result.split):
            console.warn(f"{result.run_dir}: {evaluation.twins_note(result.metrics, result.split)}")
    if len(results) > 1 and not console.state.quiet:
        tasks = {r.task for r in results}
        if tasks == {"cls"}:
            console.out().print(evaluation.comparison_table(results))
        across = fold_summary([{**r.metrics, "task": r.task} for r in results])
        if across is not None and not ensemble:  # ensembles are not folds of one model
            oracle = any(evaluation.is_oracle(r.metrics) for r in results)
            console.out().print(evaluation.folds_table(
                across["metrics"], f"Across {across['folds']} folds ({across['model']}, {split})"
                + (f" [{evaluation.ORACLE_LABEL}]" if oracle else "")))


@app.command(
    "calibrate",
    epilog=(
        "Examples: breastus calibrate runs/cls/20261124-101500-mobilenetv2 "
        "--target-sensitivity 0.9  |  breastus calibrate runs/seg/20261124-120000-unet  |  "
        "breastus calibrate CLS_RUN --target-sensitivity 0.9 --fusion descriptors --seg-run "
        "SEG_RUN [--fuse-with CLS_RUN2]"
    ),
)
def calibrate_cmd(
    run: Path = typer.Argument(..., help="A run directory (a classifier or a segmenter)."),
    target_sensitivity: TargetSensitivity = None,
    seg_run: SegRun = None,
    fusion: Fusion = "none",
    fuse_with: FuseWith = None,
    data: Data = None,
    batch_size: BatchSize = 32,
) -> None:
    """Choose what a run decides on its own validation cases, and write it into the run.

    A classifier: the decision threshold that reaches --target-sensitivity (RUN/threshold.json)
    and, with --fusion descriptors --seg-run R, the fused classifier (RUN/fusion.json). A
    segmenter: the mask post-processing (RUN/postprocess.json). predict, export and evaluate
    then use them. train-seg and cv run this step at their end, evaluate with
    --target-sensitivity or --fusion before scoring; running it again with the same options
    writes the same files.
    """
    from breastus_cli import backend
    from breastus_cli.engine.evaluation.eval_settings import CalibrateSettings

    settings = CalibrateSettings(run_dir=run, data=data, target_sensitivity=target_sensitivity,
                                 seg_run=seg_run, fusion=fusion, fuse_with=fuse_with,
                                 batch_size=batch_size)
    settings.validate()  # bad options fail before TensorFlow loads
    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine.evaluation.calibrate import calibrate, summary

    result = calibrate(settings)
    if not console.state.quiet:
        console.out().print(summary(result), markup=False)
