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
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend, runfiles
from breastus_cli.data.imaging import resize_grey
from breastus_cli.engine.runs.cvdir import fold_runs, is_cv_dir
from breastus_cli.engine.runs.rundir import MODEL, Threshold, read_config, read_threshold
from breastus_cli.errors import InputError, UsageError

EXPORT_DIR = "export"
#: TFLite files of ``breastus export`` in RUN/export/, in the order predict looks for them.
TFLITE_EXPORTS = ("model.tflite", "model-float16.tflite", "model-int8.tflite")
METADATA = "metadata.json"
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
    import hashlib

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
    tf = backend.tf()
    if size is None:
        size = int(model.input_shape[1])
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                       input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])

    def run(images: Any) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0,) + tuple(model.output_shape[1:]), dtype=np.float32)
        return np.concatenate([step(x[i:i + MAX_BATCH]).numpy()
                               for i in range(0, len(x), MAX_BATCH)], axis=0)

    return run


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
        from breastus_cli.engine.apply import postprocess

        if self.exported_postprocess is not None:
            return postprocess.Postprocess(self.exported_postprocess, "export metadata")
        if self.members:
            return postprocess.ensemble(self.members)
        return postprocess.read(self.source)

    def run_files(self, paths: list[str], batch_size: int = 16) -> np.ndarray:
        """Outputs for prepared image files, decoded and resized by the training pipeline."""
        from breastus_cli.data.pipeline import make_dataset

        outputs = [self.run(images.numpy())
                   for images, _ in make_dataset(paths, self.size, batch_size, cache=False)]
        if not outputs:
            return self.run(np.zeros((0, self.size, self.size, 1), np.float32))
        return np.concatenate(outputs, axis=0)


def roi_margin(config: dict[str, Any]) -> float | None:
    """The crop margin of a lesion-centred classifier (``train-cls --roi mask``; config.json
    or an export's metadata.json), else None."""
    roi = config.get("roi") or {}
    if config.get("task") == "cls" and roi.get("source") == "mask":
        return float(roi.get("margin", 0.2))
    return None


def open_run(source: str | Path, expected: str | None = None, engine: str = "keras",
             need_keras: bool = False, config: dict[str, Any] | None = None,
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
                 config: dict[str, Any] | None) -> LoadedRun:
    """:func:`open_run` for one run directory or .tflite file."""
    if source.suffix == ".tflite":
        lite = TFLiteModel(source)
        task = lite.task or expected or "cls"
        if expected is not None and task != expected:
            raise UsageError(f"{source} is a {task} model, not a {expected} model")
        if need_keras:
            raise UsageError("--explain needs the run directory (Keras model), not a .tflite file")
        chosen = Threshold(float(lite.metadata.get("threshold", 0.5)),
                           str(lite.metadata.get("threshold_source", "export metadata")))
        return LoadedRun(task, lite.input_size, lite.predict, source,
                         roi_margin=roi_margin({**lite.metadata, "task": task}),
                         exported_threshold=chosen,
                         exported_postprocess=str(lite.metadata.get("postprocess", "none")))
    config = read_config(source) if config is None else config
    task = config.get("task")
    if expected is not None and task != expected:
        option = "--cls-run" if expected == "cls" else "--seg-run"
        raise UsageError(f"{option} {source} is a '{task}' run, not '{expected}'")
    size = int(config["settings"]["img_size"])
    keras_model = None
    runner: Callable[[np.ndarray], np.ndarray] | None = None
    if engine == "keras" or need_keras:
        keras_model = load_model(source)
        runner = keras_runner(keras_model, size)
    if engine == "tflite":
        export = source / EXPORT_DIR
        found = next((export / n for n in TFLITE_EXPORTS if (export / n).is_file()), None)
        if found is None:
            raise InputError(f"no TFLite export in {export}",
                             hint=f"run 'breastus export {source} --format tflite' first")
        runner = TFLiteModel(found).predict
    if runner is None:
        raise UsageError(f"engine must be keras or tflite (got '{engine}')")
    return LoadedRun(str(task), size, runner, source, config, keras_model, roi_margin(config),
                     concurrent=engine != "tflite")


# ---- fold ensembles and test-time augmentation ------------------------------------------------
#: ``--tta`` values: none, or the mean over the image and its horizontal mirror image
TTA_MODES = ("none", "flip")


def tflite_export(run_dir: Path) -> Path | None:
    """The run's TFLite export predict uses (the first of :data:`TFLITE_EXPORTS`), or None."""
    export = Path(run_dir) / EXPORT_DIR
    return next((export / n for n in TFLITE_EXPORTS if (export / n).is_file()), None)


def ensemble_threshold(members: list[Path]) -> Threshold:
    """A fold ensemble's decision threshold: the median of its folds' thresholds, each by
    :func:`rundir.read_threshold`'s rule."""
    chosen = [read_threshold(run) for run in members]
    value = float(np.median([c.value for c in chosen]))
    validation = "chosen on validation cases"
    if all(c.source.startswith(validation) for c in chosen):
        rest = {c.source[len(validation):] for c in chosen}
        why = ", each chosen on its fold's validation cases" + (rest.pop() if len(rest) == 1
                                                                  else "")
    else:
        why = f" ({'; '.join(sorted({c.source for c in chosen}))})"
    return Threshold(value, f"median of {len(chosen)} fold thresholds{why}")


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
    configs = [read_config(run) for run in members]

    def trained_as(config: dict[str, Any]) -> dict[str, Any]:
        roi = config.get("roi") or {}
        return {"task": config.get("task"),
                "input size": int((config.get("settings") or {}).get("img_size") or 0),
                "roi": (roi.get("source", "none"), roi_margin(config))}

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
    config = json.loads(json.dumps(configs[0]))  # fold-0's settings, as the ensemble's
    config.setdefault("settings", {})["fold"] = None
    config["ensemble"] = {"cv": str(cv_dir), "folds": [str(run) for run in members]}
    return LoadedRun(str(task), size, mean_runner(runners), cv_dir, config,
                     roi_margin=roi_margin(configs[0]), members=members,
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


# ---- images in, outputs back at the original size --------------------------------------------
def resize_input(image: np.ndarray, size: int, tf: Any = None) -> np.ndarray:
    """The training pipeline's resize of a (H, W) image to the model's (S, S, 1) float32 input:
    :func:`breastus_cli.data.imaging.resize_grey`, the same function the training cache uses.
    (``tf`` is accepted for callers that pass it; it is not needed.)"""
    return resize_grey(image, size)[..., None].astype(np.float32)


def upsample(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (S, S) or (S, S, 1) map (probabilities, a heat map) at the image's original
    (height, width): PIL bilinear on float32."""
    from PIL import Image

    height, width = shape
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 3:
        prob = prob[..., 0]
    return np.asarray(Image.fromarray(np.ascontiguousarray(prob))
                      .resize((int(width), int(height)), Image.BILINEAR))


def to_original_size(prob: np.ndarray, shape: tuple[int, int], threshold: float,
                     postprocess: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """A segmenter's probability map at the image's original (height, width) and the lesion
    mask there (``p >= threshold`` after upsampling, as evaluate scores it, then the run's
    ``postprocess`` method: :mod:`breastus_cli.engine.apply.postprocess`)."""
    from breastus_cli.engine.apply.postprocess import apply

    big = upsample(prob, shape)
    return big, apply(big >= threshold, postprocess)


def lesion_crop(image: np.ndarray, mask: np.ndarray,
                margin: float) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """A lesion-centred classifier's view of ``image``: the crop around ``mask``'s lesion
    (data/roi.py's square box plus margin), the box, and whether a lesion was found (an
    empty mask gives the whole image)."""
    from breastus_cli.data.roi import crop, roi_box

    box, found = roi_box(mask, margin)
    return crop(image, box), box, found


# ---- running a .tflite file ------------------------------------------------------------------
def _cpu_count() -> int:
    """Cores this process may use: BREASTUS_THREADS when set (parallel sweep trials, Slurm
    tasks sharing a node), else the CPU affinity (Slurm and taskset limit it below
    os.cpu_count())."""
    threads = os.environ.get("BREASTUS_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def read_export_metadata(path: Path) -> dict:
    """``metadata.json`` of an export: give the export folder, the metadata file, or an exported
    model (a .tflite file or the savedmodel folder) to read the one beside it."""
    path = Path(path)
    if path.is_dir() and (path / METADATA).is_file():
        file = path / METADATA
    elif path.name == METADATA:
        file = path
    else:
        file = path.parent / METADATA
    if not file.is_file():
        raise InputError(f"no {METADATA} for {path}: export it with 'breastus export RUN'")
    return runfiles.read_export_metadata(file)


class TFLiteModel:
    """A .tflite file run with the XNNPACK delegate on num_threads (default: all cores)."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"TFLite file not found: {self.path}")
        if num_threads is not None and num_threads < 1:
            raise UsageError(f"num_threads must be at least 1 (got {num_threads})")
        self.num_threads = int(num_threads or _cpu_count())
        tf = backend.tf()
        try:
            with warnings.catch_warnings(), backend._quiet_native_stderr():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                # OpResolverType.AUTO (the default) applies XNNPACK to float and int8 graphs.
                self._interpreter = tf.lite.Interpreter(model_path=str(self.path),
                                                        num_threads=self.num_threads)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"cannot read TFLite model {self.path}: {exc}") from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{self.path}: expected one input and one output, found "
                             f"{len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        shape = [int(s) for s in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
            raise InputError(f"{self.path}: input shape {shape} is not (N, S, S, 1)")
        self.input_size: int = shape[1]
        signature = [int(s) for s in self._input.get("shape_signature", shape)]
        self._dynamic = signature[0] == -1
        self._fixed_batch = shape[0]
        self._batch = shape[0]
        self._allocated = False
        self.metadata: dict = self._read_metadata()
        self.task: str | None = self.metadata.get("task")

    def _read_metadata(self) -> dict:
        if not (self.path.parent / METADATA).is_file():
            return {}
        try:
            data = read_export_metadata(self.path)
        except InputError:
            return {}
        entry = data.get("exports", {}).get(self.path.name)
        if isinstance(entry, dict):  # this file's own quantize / agreement / size
            data = {**data, **entry}
        return data

    @property
    def input_dtype(self) -> Any:
        return self._input["dtype"]

    def _resize(self, n: int) -> None:
        if n != self._batch or not self._allocated:
            if n != self._batch:
                self._interpreter.resize_tensor_input(self._input["index"],
                                                      [n, self.input_size, self.input_size, 1],
                                                      strict=False)
            with backend._quiet_native_stderr():  # "INFO: Created ... XNNPACK delegate"
                self._interpreter.allocate_tensors()
            self._batch, self._allocated = n, True

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype != np.float32:  # integer input: quantize with the model's own parameters
            scale, zero = self._input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"]).copy()
        if out.dtype != np.float32:
            scale, zero = self._output["quantization"]
            out = (out.astype(np.float32) - zero) * (scale or 1.0)
        return out.astype(np.float32, copy=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 1) float32 pixels 0..255 -> (N, 2) or (N, S, S, 1) float32."""
        x = np.asarray(images, dtype=np.float32)
        size = self.input_size
        if x.ndim == 3 and x.shape[1:] == (size, size):
            x = x[..., np.newaxis]
        if x.ndim != 4 or x.shape[1:] != (size, size, 1):
            raise InputError(f"{self.path.name} takes images of shape (N, {size}, {size}, 1); "
                             f"got {tuple(np.shape(images))}")
        n = len(x)
        if n == 0:
            shape = [int(s) for s in self._output["shape"][1:]]
            return np.zeros([0, *shape], np.float32)
        x = np.ascontiguousarray(x)
        results = []
        if self._dynamic:
            for i in range(0, n, MAX_BATCH):
                chunk = x[i:i + MAX_BATCH]
                self._resize(len(chunk))
                results.append(self._invoke(chunk))
        else:  # a fixed batch: pad the last chunk
            self._resize(self._fixed_batch)
            step = self._fixed_batch
            for i in range(0, n, step):
                chunk = x[i:i + step]
                pad = step - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
                results.append(self._invoke(chunk)[:step - pad])
        return np.concatenate(results, axis=0)

    def __repr__(self) -> str:
        return (f"TFLiteModel({str(self.path)!r}, input_size={self.input_size}, "
                f"task={self.task!r}, "
                f"num_threads={self.num_threads})")
