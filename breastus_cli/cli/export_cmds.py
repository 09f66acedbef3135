"""``breastus export``: a run's model as TFLite or SavedModel, with metadata.json."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console


_HELP = (
    "Export a run's model for deployment: TFLite (float32, float16, int8 or int8-mixed) or "
    "SavedModel.\n\n"
    "The exported model takes what the Keras model takes: (N, S, S, 1) float32 pixels 0..255, "
    "preprocessing inside. metadata.json beside it records the input size, labels, threshold, "
    "source run and the measured agreement with the Keras model on up to 32 test-split images.\n\n"
    "The agreement check: float32 within 1e-3 of the Keras probabilities, float16 1e-2, "
    "SavedModel 1e-5; int8 gives the Keras model's label (at the run's threshold) on at least "
    "95% of the images (segmenters: the same mask value on at least 95% of the pixels), or "
    "stays within 0.02 of every Keras probability (only images on the threshold flip). An "
    "export that fails it replaces nothing (the previous export stays) and exits 1; --force "
    "keeps it, marked within_tolerance: false in metadata.json. int8-mixed (checked as int8) "
    "keeps the preprocessing and the first half of the backbone in float32, for models whose "
    "early layers int8 cannot follow (a fine-tuned EfficientNet-Lite0: 95.7% same labels in "
    "int8, 98.7% in int8-mixed)."
)


@app.command(
    "export",
    help=_HELP,
    epilog=(
        "Examples: breastus export runs/cls/RUN  (RUN/export/model.tflite)  |  "
        "breastus export RUN --quantize int8 --representative 200 --samples 400  |  "
        "breastus export RUN --quantize float16 --out deploy/  |  "
        "breastus export RUN --format savedmodel"
    ),
)
def export_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A finished run directory."),
    format: str = typer.Option("tflite", "--format", "-f", help="tflite or savedmodel."),
    quantize: str = typer.Option(
        "none", "--quantize", help="TFLite only: none (float32), float16 (weights), int8 "
                                   "(weights and activations, calibrated on training images) "
                                   "or int8-mixed (int8 but the preprocessing and the first "
                                   "half of the backbone in float32)."),
    representative: int = typer.Option(
        100, "--representative", metavar="N",
        help="int8, int8-mixed: calibrate on N images of the run's training split."),
    samples: int = typer.Option(
        32, "--samples", metavar="N",
        help="Check the export against the Keras model on the first N test cases (labels at "
             "the run's threshold, largest difference)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export)."),
    force: bool = typer.Option(
        False, "--force", help="Keep an export that fails the agreement check (int8: fewer "
                               "than 95% same labels) instead of keeping the previous one."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the earlier exports of an export folder "
                                   "(metadata.json); other folders are never touched."),
) -> None:
    """Export a run's model for deployment: TFLite (float32, float16, int8 or int8-mixed) or
    SavedModel."""
    from breastus_cli.engine.export.export import ExportSettings

    settings = ExportSettings(run_dir=run_dir, format=format.lower(), quantize=quantize.lower(),
                              representative=representative, samples=samples, out=out,
                              force=force, overwrite=overwrite)
    settings.validate()  # bad options and folders fail before TensorFlow loads
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine.export.export import export_run

    kind = "SavedModel" if settings.format == "savedmodel" else (
        "TFLite" + ("" if settings.quantize == "none" else f" {settings.quantize}"))
    console.info(f"exporting {run_dir} to {kind} (conversion takes from seconds to a few "
                 "minutes)")
    result = export_run(settings)
    if not console.state.quiet:
        console.out().print(_table(result))
    within = result.agreement.get("within_tolerance")
    if within is False:  # only with --force
        from breastus_cli.engine.export.export import disagreement

        console.warn(f"kept with --force although the export does not agree with the Keras "
                     f"model ({disagreement(result.agreement)}); check it before deploying")


def _table(result) -> object:
    from rich.table import Table

    agreement = result.agreement
    table = Table(title=f"Exported to {result.path}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("format", result.format + ("" if result.format == "savedmodel"
                                             else f" ({result.quantize})"))
    table.add_row("size", _size(result.size_bytes))
    table.add_row("compared on", str(agreement.get("sample_source")))
    table.add_row("max |difference| vs Keras", f"{agreement['max_abs_diff']:.3g}")
    if "label_agreement" in agreement:
        table.add_row(f"same label (threshold {agreement['threshold']:.3g})",
                      f"{agreement['label_agreement']:.1%}")
    if "mean_iou" in agreement:
        table.add_row("same mask pixels (0.5)", f"{agreement['pixel_agreement']:.2%}")
        table.add_row("mean IoU of the two masks", f"{agreement['mean_iou']:.3f}")
    table.add_row("metadata", str(result.metadata_path))
    table.add_row("seconds", f"{result.seconds:.1f}")
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
