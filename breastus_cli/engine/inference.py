"""Forward passes for evaluation and prediction: a compiled function over a tf.data stream
(faster than ``model.predict`` on small CPUs, and the same code for every task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.engine.rundir import MODEL
from breastus_cli.errors import InputError


def load_model(run_dir_or_file: str | Path) -> Any:
    """Load a run's best ``model.keras`` (or a .keras file) for inference, without compiling.

    Only a native zip ``.keras`` file whose config names nothing but Keras's, breastus's and the
    encoders' objects is loaded (:mod:`breastus_cli.models.safe_load`): no code from the file runs.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise InputError(f"no model at {path}: has the run finished at least one epoch?")
    from breastus_cli.engine import tasks  # noqa: F401  (registers custom metrics/losses)
    from breastus_cli.models.safe_load import load_keras_model

    return load_keras_model(path)


def forward(model: Any, dataset: Any) -> np.ndarray:
    """Run ``model`` over every batch of ``dataset`` ((image, target) pairs) in a tf.function."""
    tf = backend.tf()

    @tf.function(reduce_retracing=True)
    def step(images: Any) -> Any:
        return model(images, training=False)

    outputs = [step(images).numpy() for images, _ in dataset]
    if not outputs:
        return np.zeros((0,) + tuple(model.output_shape[1:]), dtype=np.float32)
    return np.concatenate(outputs, axis=0)
