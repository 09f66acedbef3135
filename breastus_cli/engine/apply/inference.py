"""Applying a trained run to images, in one place: evaluate, predict and export's agreement
check all go through it.

    open_run(RUN or FILE.tflite)  -> LoadedRun: task, input size, threshold, roi, forward pass
    open_run(CV_DIR)              -> one LoadedRun: the mean of its fold models' outputs
    with_tta(loaded, "flip")      the mean of the outputs on the image and its mirror image
    LoadedRun.run(batch)          (N, S, S, 1) float32 0..255 -> (N, 2) or (N, S, S, 1)
    LoadedRun.run_files(paths)    the training pipeline's decode + resize, then run
    resize_input(image, S)        the training pipeline's resize for an in-memory image
    to_original_size(prob, shape, threshold, postprocess)  a probability map back at the
                                              image's size, masked (and post-processed)
    lesion_crop(image, mask, margin)          a lesion-centred classifier's input

The forward pass is a compiled function (Keras: faster than ``model.predict`` on small CPUs, the
same code for every task) or a TFLite interpreter with XNNPACK (:class:`TFLiteModel`).

The parts live beside it: LoadedRun and the Keras model (loaded_run), fold ensembles and
test-time augmentation (ensemble), the TFLite runtime and export file names (tflite_model),
images in and outputs at the original size (images).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.engine.apply.ensemble import TTA_MODES, open_ensemble, with_tta
from breastus_cli.engine.apply.loaded_run import LoadedRun, keras_runner, load_model, roi_margin
from breastus_cli.engine.apply.tflite_model import EXPORT_DIR, TFLiteModel, tflite_export
from breastus_cli.engine.runs.cvdir import is_cv_dir
from breastus_cli.engine.runs.provenance import CHOSEN_IN_EXPORT
from breastus_cli.engine.runs.rundir import Threshold
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError, UsageError


def open_run(source: str | Path, expected: str | None = None, engine: str = "keras",
             need_keras: bool = False, config: dict[str, Any] | RunConfig | None = None,
             tta: str = "none") -> LoadedRun:
    """A run directory (its Keras model or, ``engine='tflite'``, its TFLite export) or an
    exported .tflite file, with the task, input size, threshold and roi settings it was
    trained with. ``expected``: the task the caller needs (else a one-line UsageError).
    A cross-validation folder opens as its fold ensemble (:func:`open_ensemble`; ``config``
    is not used then); ``tta``: see :func:`with_tta`."""
    source = Path(source)
    if tta not in TTA_MODES:
        raise UsageError(f"--tta must be {' or '.join(TTA_MODES)} (got '{tta}')")
    if is_cv_dir(source):
        return with_tta(open_ensemble(source, expected, engine, need_keras), tta)
    return with_tta(_open_single(source, expected, engine, need_keras, config), tta)


def _open_single(source: Path, expected: str | None, engine: str, need_keras: bool,
                 config: dict[str, Any] | RunConfig | None) -> LoadedRun:
    """:func:`open_run` for one run directory or .tflite file."""
    if source.suffix == ".tflite":
        lite = TFLiteModel(source)
        task = lite.task or expected or "cls"
        if expected is not None and task != expected:
            raise UsageError(f"{source} is a {task} model, not a {expected} model")
        if need_keras:
            raise UsageError("--explain needs the run directory (Keras model), not a .tflite file")
        chosen = Threshold(float(lite.metadata.get("threshold", 0.5)),
                           str(lite.metadata.get("threshold_source", "export metadata")),
                           chosen_on=CHOSEN_IN_EXPORT)
        return LoadedRun(task, lite.input_size, lite.predict, source,
                         roi_margin=roi_margin({**lite.metadata, "task": task}),
                         exported_threshold=chosen,
                         exported_postprocess=str(lite.metadata.get("postprocess", "none")))
    run = RunConfig.read(source) if config is None else RunConfig.of(config)
    task = run.task
    if expected is not None and task != expected:
        option = "--cls-run" if expected == "cls" else "--seg-run"
        raise UsageError(f"{option} {source} is a '{task}' run, not '{expected}'")
    size = run.img_size
    keras_model = None
    runner: Callable[[np.ndarray], np.ndarray] | None = None
    if engine == "keras" or need_keras:
        keras_model = load_model(source)
        runner = keras_runner(keras_model, size)
    if engine == "tflite":
        export = source / EXPORT_DIR
        found = tflite_export(source)
        if found is None:
            raise InputError(f"no TFLite export in {export}",
                             hint=f"run 'breastus export {source} --format tflite' first")
        runner = TFLiteModel(found).predict
    if runner is None:
        raise UsageError(f"engine must be keras or tflite (got '{engine}')")
    return LoadedRun(str(task), size, runner, source, run.raw, keras_model, run.roi_margin,
                     concurrent=engine != "tflite")
