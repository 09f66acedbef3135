"""``breastus evaluate``: numbers for a run on a split, written as predictions.csv and
metrics.json in ``RUN/eval-<split>/`` (the reports layer adds plots and the report).

Classification: p(malignant) per case, the threshold (0.5, ``--threshold``, or the one that
reaches ``--target-sensitivity`` on the validation split), metrics with bootstrap CIs.

The jobs live beside it: settings and EvalResult (eval_settings), which cases and the checks
that they are fair (eval_cases), scoring a classifier (evaluate_cls) or a segmenter
(evaluate_seg).
"""

from __future__ import annotations

import time
from pathlib import Path

from breastus_cli.atomic import write_json
from breastus_cli.engine.apply.masks import mask_cache
from breastus_cli.engine.evaluation.eval_cases import ensemble_config, twins_in_training
from breastus_cli.engine.evaluation.eval_settings import EvalResult, EvalSettings
from breastus_cli.engine.evaluation.evaluate_cls import evaluate_cls
from breastus_cli.engine.evaluation.evaluate_seg import evaluate_seg
from breastus_cli.engine.runs.rundir import read_config
from breastus_cli.errors import InputError
from breastus_cli.ownership import claim


def evaluate(settings: EvalSettings) -> EvalResult:
    """Evaluate one run; writes ``RUN/eval-<split>/predictions.csv`` and ``metrics.json``."""
    settings.validate()
    start = time.perf_counter()
    config = (ensemble_config(settings.run_dir, Path(settings.data or "")) if settings.ensemble
              else read_config(settings.run_dir))
    # RUN/eval-*/ (and threshold.json, fusion.json ...) go into the run or cross-validation
    # folder: breastus's own, with no link in it that leads out of it
    claim(settings.run_dir, "cv" if settings.ensemble else "run", option="")
    if config.get("task") == "seg":
        result = evaluate_seg(settings, config, start)
    elif config.get("task") != "cls":
        raise InputError(f"{settings.run_dir}: unknown task '{config.get('task')}' in config.json")
    else:
        with mask_cache():  # the segmenter's masks, computed once for crops and descriptors
            result = evaluate_cls(settings, config, start)
    result.metrics["tta"] = settings.tta
    twins = None if settings.ensemble else twins_in_training(settings, config)
    if twins is not None:
        result.metrics["near_duplicates"] = twins
    if settings.ensemble:
        result.metrics["ensemble"] = config["ensemble"]
        if result.task == "seg" and settings.threshold is None:  # the median, said so
            result.threshold_source = config["ensemble"]["threshold_source"]
            result.metrics["threshold_source"] = result.threshold_source
    write_json(result.out_dir / "metrics.json", result.metrics)
    return result

