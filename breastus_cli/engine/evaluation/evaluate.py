"""``breastus evaluate``: numbers for a run on a split, written as predictions.csv and
metrics.json in ``RUN/eval-<split>/`` (the reports layer adds plots and the report).

Classification: p(malignant) per case, the threshold (0.5, ``--threshold``, or the one that
reaches ``--target-sensitivity`` on the validation split), metrics with bootstrap CIs.

The jobs live beside it: settings and EvalResult (eval_settings), which cases and the checks
that they are fair (eval_cases), scoring a classifier (evaluate_cls) or a segmenter
(evaluate_seg). Evaluate reads the run and writes its own eval folder; given
``--target-sensitivity`` or ``--fusion`` it first runs the calibration step (calibrate.py,
``breastus calibrate``), which writes the run files it chooses, and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from breastus_cli.atomic import write_json
from breastus_cli.engine.apply.masks import mask_cache
from breastus_cli.engine.evaluation.calibrate import calibrate
from breastus_cli.engine.evaluation.eval_cases import (
    data_dir, ensemble_config, is_other_dataset, twins_in_training,
)
from breastus_cli.engine.evaluation.eval_settings import Calibration, EvalResult, EvalSettings
from breastus_cli.engine.evaluation.evaluate_cls import evaluate_cls
from breastus_cli.engine.evaluation.evaluate_seg import evaluate_seg
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError
from breastus_cli.ownership import claim


def evaluate(settings: EvalSettings, calibration: Calibration | None = None) -> EvalResult:
    """Evaluate one run; writes ``RUN/eval-<split>/predictions.csv`` and ``metrics.json``.

    A classifier evaluated with ``--target-sensitivity`` or ``--fusion`` is calibrated first
    (:func:`~breastus_cli.engine.evaluation.calibrate.calibrate`: threshold.json, fusion.json),
    unless ``calibration`` (what cv just chose for the fold) is given; the result's
    ``calibration`` says what was chosen and written."""
    settings.validate()
    start = time.perf_counter()
    config = (RunConfig.of(ensemble_config(settings.run_dir, Path(settings.data or "")))
              if settings.ensemble else RunConfig.read(settings.run_dir))
    # RUN/eval-*/ go into the run or cross-validation folder: breastus's own, with no link in
    # it that leads out of it
    claim(settings.run_dir, "cv" if settings.ensemble else "run", option="")
    if config.task == "seg":
        result = evaluate_seg(settings, config, start)
        result.calibration = calibration  # cv's fold: the post-processing it chose just before
    elif config.task != "cls":
        raise InputError(f"{settings.run_dir}: unknown task '{config.task}' in config.json")
    else:
        with mask_cache():  # the segmenter's masks, computed once for crops and descriptors
            if calibration is None and settings.calibrates():
                calibration = calibrate(settings.calibration(), work_dir=_work_dir(settings,
                                                                                   config))
            result = evaluate_cls(settings, config, start, calibration)
    result.metrics["tta"] = settings.tta
    twins = None if settings.ensemble else twins_in_training(settings, config)
    if twins is not None:
        result.metrics["near_duplicates"] = twins
    ensemble = config.ensemble
    if settings.ensemble and ensemble is not None:  # ensemble_config records it
        result.metrics["ensemble"] = ensemble
        if result.task == "seg" and settings.threshold is None:  # the median, said so
            result.threshold_source = ensemble["threshold_source"]
            result.metrics["threshold_source"] = result.threshold_source
    write_json(result.out_dir / "metrics.json", result.metrics)
    return result


def _work_dir(settings: EvalSettings, config: RunConfig) -> Path:
    """Where the calibration's validation crops go: this evaluation's folder (beside its own)."""
    data = data_dir(settings, config)
    return settings.out_dir(other=is_other_dataset(settings, config, data))
