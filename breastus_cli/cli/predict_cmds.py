"""``breastus predict``: batch prediction of files and folders (and ``--merge`` of shards)."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.cli.review_cmds import write_page
from breastus_cli.reports import console


@app.command(
    "predict",
    epilog=(
        "Examples: breastus predict scans/ --cls-run runs/cls/RUN --seg-run runs/seg/RUN "
        "--out out --save-masks --save-overlays  |  "
        "breastus predict 'scans/**/*.dcm' --cls-run RUN --out out/part-3 --num-parts 8 "
        "--part-id 3  |  breastus predict --merge out/part-* --out out/all"
    ),
)
def predict_cmd(
    inputs: list[str] = typer.Argument(..., help="Files, folders (recursive) or globs; with "
                                                 "--merge: the part folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    cls_run: Path = typer.Option(None, "--cls-run",
                                 help="Classifier run directory (or .tflite), or a 'breastus cv' "
                                      "folder: the mean of its fold models (an ensemble)."),
    seg_run: Path = typer.Option(None, "--seg-run",
                                 help="Segmenter run directory (or .tflite), or a 'breastus cv' "
                                      "folder: the mean probability map of its fold models."),
    engine: str = typer.Option("keras", "--engine", help="keras, or tflite (the run's export)."),
    tta: str = typer.Option("none", "--tta",
                            help="Test-time augmentation: none, or flip (the mean of the outputs "
                                 "on the image and on its horizontal mirror image)."),
    threshold: float = typer.Option(None, "--threshold",
                                    help="Malignant threshold (default: the run's chosen one)."),
    seg_threshold: float = typer.Option(0.5, "--seg-threshold", help="Lesion mask threshold."),
    seg_postprocess: str = typer.Option(
        None, "--seg-postprocess", metavar="none|largest",
        help="Lesion mask post-processing (largest: the largest connected component, holes "
             "filled). Default: the segmenter's, chosen on its validation cases "
             "(RUN/postprocess.json, written by train-seg, cv or 'breastus calibrate')."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="mm per pixel, for mm^2 areas."),
    manifest: Path = typer.Option(None, "--manifest",
                                  help="A manifest.csv giving pixel sizes by file name."),
    save_masks: bool = typer.Option(False, "--save-masks", help="Write OUT/masks/ (0/255 PNG)."),
    save_overlays: bool = typer.Option(False, "--save-overlays", help="Write OUT/overlays/."),
    explain: bool = typer.Option(False, "--explain", help="Grad-CAM heat maps in OUT/explain/."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Images per forward pass."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in predictions.csv."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the results of an OUT predict wrote "
                                        "(predict.json); other folders are never touched."),
    num_parts: int = typer.Option(1, "--num-parts", help="Split the inputs into N parts..."),
    part_id: int = typer.Option(1, "--part-id", help="...and predict part I (1-based)."),
    merge: bool = typer.Option(False, "--merge", help="Join part folders (INPUTS) into --out."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", metavar="N",
                                   help="List in errors.csv, undecoded, any image with more than "
                                        "N pixels per frame, and any DICOM whose frames decode to "
                                        "more than 8 x N bytes in all (read from the header)."),
    report: bool = typer.Option(False, "--report",
                                help="At the end, write OUT/index.html: a review page (one row "
                                     "per scan, sortable; 'breastus review OUT' rewrites it)."),
) -> None:
    """Batch-predict scans: p(malignant) and label, lesion mask and area, per image.

    PNG, JPEG, BMP, TIFF (8/16-bit; grey, RGB, RGBA, palette) and DICOM (multi-frame frame by
    frame; pixel size from the ultrasound regions or Pixel Spacing). Unreadable files go to
    OUT/errors.csv and the batch goes on; rows are appended as they are done (--resume).
    """
    from breastus_cli.engine.apply.predict_merge import merge as merge_parts
    from breastus_cli.engine.apply.predict_settings import PredictSettings
    from breastus_cli.reports.prediction import predict_table

    if merge:
        result = merge_parts([Path(p) for p in inputs], out, overwrite=overwrite)
        if not console.state.quiet:
            console.out().print(predict_table(result, merged=len(inputs)))
        if result.errors:
            console.warn(f"{result.errors} error row(s): see {out / 'errors.csv'}")
        if report:
            write_page(out)
        return
    settings = PredictSettings(
        inputs=[Path(i) for i in inputs], out=out, cls_run=cls_run, seg_run=seg_run,
        engine=engine, threshold=threshold, seg_threshold=seg_threshold, pixel_size=pixel_size,
        manifest=manifest, save_masks=save_masks, save_overlays=save_overlays, explain=explain,
        batch_size=batch_size, resume=resume, overwrite=overwrite, num_parts=num_parts,
        part_id=part_id, max_pixels=max_pixels, tta=tta, seg_postprocess=seg_postprocess)
    settings.validate()
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine.apply.predict import predict
    from breastus_cli.reports.progress import progress

    with progress("predicting", rate=True) as update:
        result = predict(settings, on_progress=update)
    if not console.state.quiet:
        console.out().print(predict_table(result))
    if result.errors:
        console.warn(f"{result.errors} file(s) could not be read: see {out / 'errors.csv'}")
    if report:
        write_page(out)
