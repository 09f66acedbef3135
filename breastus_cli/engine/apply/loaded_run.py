"""A trained run ready to apply to images (:class:`LoadedRun`), its Keras model loaded safely
and once per process (:func:`load_model`), the compiled forward pass (:func:`keras_runner`),
and the decision threshold of a fold ensemble (:func:`ensemble_threshold`)."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.data.pipeline import make_dataset
from breastus_cli.engine.apply import postprocess
from breastus_cli.engine.runs.provenance import CHOSEN_BY_FOLDS, CHOSEN_ON_VALIDATION
from breastus_cli.engine.runs.rundir import MODEL, Threshold, read_threshold
from breastus_cli.engine.runs.runconfig import lesion_margin
from breastus_cli.errors import InputError

#: A forward pass runs at most this many images per call (memory stays bounded).
MAX_BATCH = 32


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
    # registers breastus's custom metric (imports TensorFlow, hence here and not at the top)
    from breastus_cli.models import cls_objectives  # noqa: F401
    from breastus_cli.models.safe_load import load_keras_model

    key = _content_key(path)
    if key in _LOADED:  # the same bytes, already checked and loaded in this process
        _LOADED.move_to_end(key)
        return _LOADED[key]
    model = load_keras_model(path)
    _LOADED[key] = model
    while len(_LOADED) > MODEL_CACHE_SIZE:
        _LOADED.popitem(last=False)
    return model


def remember(path: str | Path, model: Any) -> None:
    """Hand :func:`load_model` the model that ``path`` (a model.keras) was just written from in
    this process (training's own copy, the weights of the file): calibrating and evaluating the
    run right after training then skip reading and checking the file again."""
    key = _content_key(Path(path))
    _LOADED[key] = model
    _LOADED.move_to_end(key)
    while len(_LOADED) > MODEL_CACHE_SIZE:
        _LOADED.popitem(last=False)


#: Models loaded in this process, by the SHA-256 of their file: a notebook or a test session
#: that applies the same run again, or a copy of it, does not rebuild it (a U-Net
#: EfficientNetB2 takes ~10 s to load on 2 cores). A changed file has another key and is checked
#: and loaded anew. Inference never changes a model, so sharing it is safe.
MODEL_CACHE_SIZE = 4
_LOADED: OrderedDict[str, Any] = OrderedDict()
#: each file's digest by (real path, size, mtime), so an unchanged file is read once
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _content_key(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes (remembered while its size and mtime stay the same)."""
    stat = path.stat()
    where = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if where not in _DIGESTS:
        if len(_DIGESTS) >= 64:
            _DIGESTS.clear()
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[where] = digest.hexdigest()
    return _DIGESTS[where]


def keras_runner(model: Any, size: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The compiled forward pass of a Keras model: (N, S, S, 1) float32 -> numpy outputs, at
    most :data:`MAX_BATCH` images per call."""
    if size is None:
        size = int(model.input_shape[1])
    step = _forward(model, size)

    def run(images: Any) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0,) + tuple(model.output_shape[1:]), dtype=np.float32)
        return np.concatenate([step(x[i:i + MAX_BATCH]).numpy()
                               for i in range(0, len(x), MAX_BATCH)], axis=0)

    return run


#: each live model's traced forward pass by input size: a model opened again from the cache
#: above is not traced again (about 1 s for a U-Net on 2 cores). The traced function holds the
#: model weakly, so an entry goes when its model does.
_FORWARD: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _forward(model: Any, size: int) -> Any:
    steps = _FORWARD.setdefault(model, {})
    if size not in steps:
        tf = backend.tf()
        held = weakref.ref(model)
        steps[size] = tf.function(lambda x: held()(x, training=False), reduce_retracing=True,
                                  input_signature=[tf.TensorSpec([None, size, size, 1],
                                                                 tf.float32)])
    return steps[size]


def ensemble_threshold(members: list[Path]) -> Threshold:
    """A fold ensemble's decision threshold: the median of its folds' thresholds, each by
    :func:`rundir.read_threshold`'s rule."""
    chosen = [read_threshold(run) for run in members]
    value = float(np.median([c.value for c in chosen]))
    if all(c.chosen_on == CHOSEN_ON_VALIDATION for c in chosen):
        rest = {f" for target sensitivity {c.target_sensitivity:g}"
                if c.target_sensitivity else "" for c in chosen}
        why = ", each chosen on its fold's validation cases" + (rest.pop() if len(rest) == 1
                                                                  else "")
    else:
        why = f" ({'; '.join(sorted({c.source for c in chosen}))})"
    return Threshold(value, f"median of {len(chosen)} fold thresholds{why}",
                     chosen_on=CHOSEN_BY_FOLDS)



@dataclass
class LoadedRun:
    """A trained run (or an exported .tflite file) ready to apply to images."""

    task: str  # cls | seg
    size: int  # square input side S
    run: Callable[[np.ndarray], np.ndarray]  # (N, S, S, 1) float32 0..255 -> outputs
    source: Path
    config: dict[str, Any] = field(default_factory=dict)  # config.json ({} for a .tflite)
    keras_model: Any = None  # None for the TFLite engine (unless asked for, e.g. Grad-CAM)
    roi_margin: float | None = None  # lesion-centred classifier: crop around the lesion
    exported_threshold: Threshold | None = None  # a .tflite file's, from its metadata.json
    exported_postprocess: str | None = None  # a .tflite segmenter's, from its metadata.json
    members: list[Path] = field(default_factory=list)  # a fold ensemble's fold run directories
    tta: str = "none"  # test-time augmentation applied by ``run`` (:func:`with_tta`)
    #: ``run`` may be called from two threads at once: a Keras model's compiled function can
    #: (two batches in flight fill the cores its own parallel sections leave idle); a TFLite
    #: interpreter cannot (one set of tensors; XNNPACK already keeps every core busy)
    concurrent: bool = False

    @cached_property
    def decision(self) -> Threshold:
        """The decision threshold by :func:`rundir.read_threshold`'s rule, read when first
        asked (a caller with its own threshold never needs a readable threshold.json); a fold
        ensemble's is the median of its folds' thresholds."""
        if self.exported_threshold is not None:
            return self.exported_threshold
        if self.members:
            return ensemble_threshold(self.members)
        return read_threshold(self.source, self.config)

    @property
    def threshold(self) -> float:
        return self.decision.value

    @cached_property
    def postprocess(self) -> Any:
        """A segmenter's mask post-processing (:mod:`breastus_cli.engine.apply.postprocess`):
        RUN/postprocess.json, a fold ensemble's majority, a .tflite file's metadata."""
        if self.exported_postprocess is not None:
            return postprocess.Postprocess(self.exported_postprocess, "export metadata")
        if self.members:
            return postprocess.ensemble(self.members)
        return postprocess.read(self.source)

    def run_files(self, paths: list[str], batch_size: int = 16) -> np.ndarray:
        """Outputs for prepared image files, decoded and resized by the training pipeline."""
        outputs = [self.run(images.numpy())
                   for images, _ in make_dataset(paths, self.size, batch_size, cache=False)]
        if not outputs:
            return self.run(np.zeros((0, self.size, self.size, 1), np.float32))
        return np.concatenate(outputs, axis=0)


def roi_margin(config: dict[str, Any]) -> float | None:
    """The crop margin of a lesion-centred classifier (``train-cls --roi mask``; config.json
    or an export's metadata.json), else None."""
    return lesion_margin(config.get("task"), config.get("roi"))
