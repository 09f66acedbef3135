"""Several forward passes as one model: a cross-validation folder's fold ensemble
(:func:`open_ensemble`, the mean of its folds' outputs) and test-time augmentation
(:func:`with_tta`, the mean over an image and its mirror image)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.engine.apply.loaded_run import LoadedRun, keras_runner, load_model
from breastus_cli.engine.apply.tflite_model import EXPORT_DIR, TFLiteModel, tflite_export
from breastus_cli.engine.runs.cvdir import fold_runs
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError, UsageError

#: ``--tta`` values: none, or the mean over the image and its horizontal mirror image
TTA_MODES = ("none", "flip")


def mean_runner(runners: list[Callable[[np.ndarray], np.ndarray]]
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The mean of several forward passes' outputs (probabilities, probability maps)."""
    def run(images: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        for runner in runners:
            out = np.asarray(runner(images), dtype=np.float64)
            total = out if total is None else total + out
        assert total is not None
        return (total / len(runners)).astype(np.float32)

    return run


def open_ensemble(cv_dir: str | Path, expected: str | None = None, engine: str = "keras",
                  need_keras: bool = False) -> LoadedRun:
    """A cross-validation folder as one model whose ``run`` is the mean of its fold models'
    outputs (a segmenter's: the mean probability map); threshold: :func:`ensemble_threshold`.
    Every fold must have finished and share the task, input size and roi settings;
    ``engine='tflite'`` runs every fold's export (each fold must have one)."""
    cv_dir = Path(cv_dir)
    plan, members = fold_runs(cv_dir)
    task = plan.get("task")
    if expected is not None and task != expected:
        option = "--cls-run" if expected == "cls" else "--seg-run"
        raise UsageError(f"{option} {cv_dir} is a '{task}' cross-validation, not '{expected}'")
    if need_keras:
        raise UsageError(f"--explain needs one run directory, not the fold ensemble {cv_dir}: "
                         "give one of its folds")
    if engine not in ("keras", "tflite"):
        raise UsageError(f"engine must be keras or tflite (got '{engine}')")
    configs = [RunConfig.read(run) for run in members]

    def trained_as(config: RunConfig) -> dict[str, Any]:
        return {"task": config.task, "input size": config.img_size,
                "roi": (config.roi_source, config.roi_margin)}

    first = trained_as(configs[0])
    if first["task"] != task:
        raise InputError(f"{cv_dir}: fold-0 is a '{first['task']}' run in a '{task}' "
                         "cross-validation")
    for k, config in enumerate(configs[1:], start=1):
        for name, value in trained_as(config).items():
            if value != first[name]:
                raise InputError(f"{cv_dir}: fold-{k} differs from fold-0 in {name} ({value} "
                                 f"vs {first[name]}): the folds of an ensemble must be trained "
                                 "alike")
    size = first["input size"]
    if engine == "tflite":
        exports = [tflite_export(run) for run in members]
        for run, found in zip(members, exports):
            if found is None:
                raise InputError(f"--engine tflite: {run.name} of the fold ensemble {cv_dir} "
                                 f"has no TFLite export in {run / EXPORT_DIR}",
                                 hint=f"run 'breastus export {run} --format tflite' for every "
                                      "fold, or use --engine keras")
        runners = [TFLiteModel(found).predict for found in exports if found is not None]
    else:
        runners = [keras_runner(load_model(run), size) for run in members]
    config = json.loads(json.dumps(configs[0].raw))  # fold-0's settings, as the ensemble's
    config.setdefault("settings", {})["fold"] = None
    config["ensemble"] = {"cv": str(cv_dir), "folds": [str(run) for run in members]}
    return LoadedRun(str(task), size, mean_runner(runners), cv_dir, config,
                     roi_margin=configs[0].roi_margin, members=members,
                     concurrent=engine != "tflite")


def with_tta(loaded: LoadedRun, tta: str = "none") -> LoadedRun:
    """``loaded`` whose ``run`` is the mean of the outputs on each image and on its horizontal
    mirror image (``tta='flip'``; a segmenter's map of the mirror image is flipped back
    first); ``'none'``: ``loaded`` itself. A single run and an ensemble alike."""
    if tta not in TTA_MODES:
        raise UsageError(f"--tta must be {' or '.join(TTA_MODES)} (got '{tta}')")
    if tta == "none" or loaded.tta == tta:
        return loaded
    base, seg = loaded.run, loaded.task == "seg"

    def run(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        plain = np.asarray(base(x), dtype=np.float32)
        mirrored = np.asarray(base(np.ascontiguousarray(x[:, :, ::-1])), dtype=np.float32)
        if seg:  # (N, S, S, 1): the map of the mirror image, flipped back
            mirrored = mirrored[:, :, ::-1]
        return ((plain + mirrored) / 2).astype(np.float32)

    return replace(loaded, run=run, tta=tta)
