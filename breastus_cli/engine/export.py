"""``breastus export``: a run's model as TFLite (float32, float16 weights or full int8) or as a
TensorFlow SavedModel, with a ``metadata.json`` that says how to feed it and how closely it
agrees with the Keras model it came from.

    RUN/export/model.tflite            float32
    RUN/export/model-float16.tflite    float16 weights (computed in float32)
    RUN/export/model-int8.tflite       int8 weights and activations, float32 input/output,
                                       calibrated on the run's training images
    RUN/export/savedmodel/             SavedModel, signature ``serving_default`` (input ``image``)
    RUN/export/metadata.json           what the last export was, plus one entry per export file

Every exported model takes what the Keras model takes: (N, S, S, 1) float32 pixels 0..255; the
preprocessing is inside the model. Conversion goes through an inference-only SavedModel
(tf-keras ``Model.export``) and ``TFLiteConverter.from_saved_model``; ``from_keras_model`` and a
``tf.function`` concrete function with a dynamic batch also work with tf-keras 2.21 on TF 2.21
(classifiers and the segmentation-models U-Net) and are the fallbacks, in that order.

The agreement check applies the run and the exported file through engine/inference.py (the
one inference path of evaluate and predict), which also owns :class:`TFLiteModel`, the runtime
of an exported file (float or int8, XNNPACK); it is re-exported here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import __version__, backend
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.manifest import file_sha256
from breastus_cli.engine.inference import (  # noqa: F401  (the runtime, re-exported)
    EXPORT_DIR, MAX_BATCH, METADATA, TFLiteModel, open_run, read_export_metadata, roi_margin,
)
from breastus_cli.engine.rundir import (
    MODEL, THRESHOLD_RULE, check_same_split, read_config, read_threshold, run_cases,
)
from breastus_cli.errors import InputError, UsageError, WorkError

FORMATS = ("tflite", "savedmodel")
QUANTIZE = ("none", "float16", "int8")
TFLITE_FILES = {"none": "model.tflite", "float16": "model-float16.tflite",
                "int8": "model-int8.tflite"}
SAVEDMODEL_DIR = "savedmodel"
#: Images of the run's test split used to measure agreement with the Keras model.
SAMPLE_IMAGES = 32
#: Largest output difference (probabilities) accepted as "the same model", per export kind;
#: int8 is judged on decisions instead (below): its probabilities move by up to ~0.3.
TOLERANCE = {"savedmodel": 1e-5, "none": 1e-3, "float16": 1e-2, "int8": None}
#: int8 passes when it gives the Keras model's label (at the run's threshold) on at least this
#: share of the sample images (cls) or its mask value (0.5) on this share of the pixels (seg),
#: or when every probability lies within INT8_CLOSE of the Keras one (then only images on the
#: threshold flip). Measured: the test suite's smallcnn (2 epochs, 64 px) 31 of 32 labels, max
#: |dp| 0.004; a MobileNetV2 at 224 px 95% of the labels, max |dp| 0.34 (BENCHMARKS.md).
INT8_MIN_LABEL_AGREEMENT = 0.95
INT8_MIN_PIXEL_AGREEMENT = 0.95
INT8_CLOSE = 0.02


@dataclass
class ExportSettings:
    """Settings of ``breastus export``."""

    run_dir: Path
    format: str = "tflite"        # tflite | savedmodel
    quantize: str = "none"        # none | float16 | int8 (tflite only)
    representative: int = 100
    out: Path | None = None
    force: bool = False  # keep an export that fails the agreement check

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--format must be tflite or savedmodel (got '{self.format}')")
        if self.quantize not in QUANTIZE:
            raise UsageError(f"--quantize must be none, float16 or int8 (got '{self.quantize}')")
        if self.format == "savedmodel" and self.quantize != "none":
            raise UsageError(f"--quantize {self.quantize} applies to --format tflite only "
                             "(a SavedModel is exported in float32)")
        if isinstance(self.representative, bool) or not isinstance(self.representative, int) \
                or self.representative < 1:
            raise UsageError("--representative must be at least 1 image "
                             f"(got {self.representative})")
        run_dir = Path(self.run_dir)
        config = read_config(run_dir)  # InputError: not a folder / not a run directory
        if config.get("task") not in ("cls", "seg"):
            raise InputError(f"{run_dir}: unknown task '{config.get('task')}' in config.json")
        if not (run_dir / MODEL).is_file():
            raise InputError(f"no {MODEL} in {run_dir}: has the run finished at least one epoch?")
        if self.quantize == "int8":  # calibrates on the run's training cases: still those?
            check_same_split(run_dir, config)
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise UsageError(f"--out {self.out} exists and is not a folder")

    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.run_dir) / EXPORT_DIR

    def file_name(self) -> str:
        return SAVEDMODEL_DIR if self.format == "savedmodel" else TFLITE_FILES[self.quantize]


@dataclass
class ExportResult:
    """What one export wrote."""

    path: Path
    metadata_path: Path
    format: str
    quantize: str
    size_bytes: int
    agreement: dict
    seconds: float


# ---- the export ------------------------------------------------------------------------------
def export_run(settings: ExportSettings) -> ExportResult:
    """Export a run's ``model.keras``; returns where it went and how well it agrees.

    >>> export_run(ExportSettings(Path("runs/cls/RUN"), quantize="int8"))  # doctest: +SKIP
    """
    settings.validate()
    start = time.perf_counter()
    run_dir = Path(settings.run_dir)
    config = read_config(run_dir)
    task = config["task"]
    img_size = int(config["settings"]["img_size"])

    loaded = open_run(run_dir, task, config=config)  # the model as evaluate/predict apply it
    model = loaded.keras_model
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1:] != (img_size, img_size, 1):
        raise InputError(f"{run_dir}/{MODEL} takes input {shape[1:]}, config.json says "
                         f"({img_size}, {img_size}, 1)")
    samples, sample_source = sample_images(config, img_size)
    reference = loaded.run(samples)

    threshold = loaded.threshold
    out_dir = settings.out_dir()  # created when the first file is in place
    target = out_dir / settings.file_name()
    made_out_dir = not out_dir.exists()

    def agree(outputs: np.ndarray) -> dict[str, Any]:
        # measured on the file before it replaces the target: a failing export replaces
        # nothing (WorkError) unless --force
        agreement = measure_agreement(reference, outputs, task, threshold, settings.format,
                                      settings.quantize)
        if agreement["within_tolerance"] is False and not settings.force:
            raise WorkError(
                f"the export does not agree with the Keras model ({disagreement(agreement)} "
                f"on the {sample_source}): "
                + (f"kept the previous {target}" if target.exists() else "nothing written")
                + "; --force keeps a failing export")
        return agreement

    try:
        if settings.format == "tflite":
            representative = None
            if settings.quantize == "int8":
                representative = representative_images(config, img_size,
                                                        settings.representative)
            content, conversion = convert_tflite(model, img_size, settings.quantize,
                                                 representative)
            with atomic_path(target) as tmp:
                tmp.write_bytes(content)
                agreement = agree(TFLiteModel(tmp).predict(samples))
            size = len(content)
        else:
            conversion = {"method": "tf_keras Model.export (tf.saved_model)",
                          "signature": "serving_default", "input": "image",
                          "output": "output_0"}
            with _atomic_dir(target) as tmp:
                save_savedmodel(model, tmp)
                agreement = agree(_savedmodel_forward(tmp, samples))
            size = _tree_size(target)
    except BaseException:
        if made_out_dir:  # the folder this export made, empty again: no leftover
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise

    agreement.update({"samples": int(len(samples)), "sample_source": sample_source,
                      "reference": f"Keras {MODEL} (float32)"})
    metadata = _metadata(settings, config, target, size, conversion, agreement)
    metadata_path = out_dir / METADATA
    write_json(metadata_path, metadata)
    return ExportResult(path=target, metadata_path=metadata_path, format=settings.format,
                        quantize=settings.quantize, size_bytes=int(size), agreement=agreement,
                        seconds=round(time.perf_counter() - start, 2))


def disagreement(agreement: dict[str, Any]) -> str:
    """What failed the check, in words."""
    if "min_label_agreement" in agreement:
        return (f"same label on {agreement['label_agreement']:.1%} of the images, at least "
                f"{agreement['min_label_agreement']:.0%} required; max |difference| "
                f"{agreement['max_abs_diff']:.3g}")
    if "min_pixel_agreement" in agreement:
        return (f"same mask pixels {agreement['pixel_agreement']:.1%}, at least "
                f"{agreement['min_pixel_agreement']:.0%} required; max |difference| "
                f"{agreement['max_abs_diff']:.3g}")
    if agreement.get("non_finite_outputs"):
        return f"{agreement['non_finite_outputs']} non-finite outputs"
    return (f"max |difference| {agreement['max_abs_diff']:.3g} > tolerance "
            f"{agreement['tolerance']:g}")


def _threshold(run_dir: Path, config: dict[str, Any]) -> tuple[float, str]:
    """The run's decision threshold by the one rule (:func:`read_threshold`, which evaluate
    and predict also use): threshold.json when present, else 0.5; and why."""
    chosen = read_threshold(run_dir, config)
    return chosen.value, chosen.source


def _metadata(settings: ExportSettings, config: dict[str, Any], target: Path, size: int,
              conversion: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any]:
    run_dir = Path(settings.run_dir)
    task = config["task"]
    img_size = int(config["settings"]["img_size"])
    threshold, threshold_source = _threshold(run_dir, config)
    described = config.get("input", {})
    model_sha = file_sha256(run_dir / MODEL)
    entry = {"format": settings.format, "quantize": settings.quantize,
             "file": target.name, "size_bytes": int(size), "conversion": conversion,
             "agreement": agreement, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if task == "cls":
        labels = list(config.get("labels", ["benign", "malignant"]))
        positive = config.get("positive_label", "malignant")
        output = {"shape": [None, len(labels)], "dtype": "float32",
                  "meaning": f"softmax over labels; column {labels.index(positive)} = "
                             f"p({positive}); label = {positive} when p >= threshold"}
    else:
        labels, positive = ["background", "lesion"], "lesion"
        output = {"shape": [None, img_size, img_size, 1], "dtype": "float32",
                  "meaning": "sigmoid lesion probability per pixel; mask = p >= threshold"}
    # Entries of earlier exports of the same model.keras stay listed (one folder, many files).
    exports: dict[str, Any] = {}
    previous = target.parent / METADATA
    if previous.is_file():
        with contextlib.suppress(Exception):
            old = json.loads(previous.read_text())
            if old.get("source_model_sha256") == model_sha:
                exports = {k: v for k, v in old.get("exports", {}).items()
                           if (target.parent / k).exists()}
    exports[target.name] = entry
    settings_ = config.get("settings", {})
    return {
        "task": task,
        "model": settings_.get("model") or (f"unet-{settings_['backbone']}"
                                            if settings_.get("backbone") else None),
        **entry,
        "input": {"size": img_size, "shape": [None, img_size, img_size, 1], "channels": 1,
                  "dtype": "float32", "range": [0, 255], "layout": "NHWC",
                  "preprocessing": "inside the model",
                  "backbone_preprocessing": described.get("preprocessing"),
                  "resize": described.get("resize", "bilinear, antialiased, aspect not kept")},
        "output": output,
        "labels": labels,
        "positive_label": positive,
        # lesion-centred classifier: feed crops around the lesion (predict reads this)
        "roi": config.get("roi") if task == "cls" else None,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "threshold_rule": THRESHOLD_RULE,
        "source_run": str(run_dir.resolve()),
        "source_model": MODEL,
        "source_model_sha256": model_sha,
        "breastus_version": __version__,
        "versions": {"tensorflow": backend.tf().__version__,
                     "tf_keras": backend.keras().__version__},
        "exports": exports,
    }


# ---- inputs: agreement samples and the int8 calibration set ---------------------------------
def _model_inputs(config: dict[str, Any], role: str, n: int | None, seed: int | None,
                  img_size: int) -> np.ndarray:
    """(n, S, S, 1) float32 inputs the run's model saw in ``role``: the task's usable cases
    (cls: benign/malignant; seg: with a mask), lesion crops for a ``--roi mask`` classifier;
    the first ``n`` (seed None) or a seeded draw of ``n``."""
    from breastus_cli.data.pipeline import load_arrays

    frame = run_cases(config, role)
    margin = roi_margin(config)
    if config.get("task") == "seg" or margin is not None:
        frame = frame[frame["mask_path"] != ""]
    if config.get("task") == "cls":
        frame = frame[frame["label"].isin(["benign", "malignant"])]
    frame = frame.reset_index(drop=True)
    if n is not None and len(frame) > n:
        rows = (np.arange(n) if seed is None else
                np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False)))
        frame = frame.iloc[rows].reset_index(drop=True)
    if len(frame) == 0:
        return np.zeros((0, img_size, img_size, 1), np.float32)
    if margin is None:
        return load_arrays(list(frame["image_path"]), img_size).astype(np.float32)
    from breastus_cli.data.roi import write_roi_crops

    with tempfile.TemporaryDirectory(prefix="breastus-roi-") as folder:
        paths = write_roi_crops(frame, Path(folder), margin)
        return load_arrays(paths, img_size).astype(np.float32)


def sample_images(config: dict[str, Any], img_size: int,
                  n: int = SAMPLE_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` images of the run's test split (float32 0..255; lesion crops for a
    ``--roi mask`` classifier), or synthetic scans when the dataset is not reachable; returns
    (images, where they came from)."""
    try:
        images = _model_inputs(config, "test", n, None, img_size)
        if len(images):
            crops = " lesion crops" if roi_margin(config) is not None else " images"
            return images, f"test split ({len(images)}{crops})"
    except Exception:  # no dataset here (a run copied elsewhere): fall back to synthetic
        pass
    return synthetic_images(n, img_size), f"synthetic ({n} images)"


def synthetic_images(n: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Speckled grey scans with one dark oval each: inputs in the models' range and look."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:img_size, 0:img_size].astype(np.float32) / img_size
    images = np.empty((n, img_size, img_size, 1), np.float32)
    for i in range(n):
        base = 60 + 80 * yy[::-1] * rng.uniform(0.5, 1.0)
        cx, cy, rx, ry = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.08, 0.25, 2)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        image = base * np.where(inside, rng.uniform(0.2, 0.5), 1.0)
        image = image * rng.gamma(4.0, 0.25, size=image.shape)  # speckle
        images[i, ..., 0] = np.clip(image, 0, 255)
    return images


def representative_images(config: dict[str, Any], img_size: int,
                          n: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The int8 calibration set: up to ``n`` images of the run's TRAINING split (seeded draw;
    lesion crops for a ``--roi mask`` classifier), as the converter wants it (a callable
    yielding ``[batch of 1]``)."""
    seed = int(config.get("settings", {}).get("seed", 42))
    try:
        # decoded once, kept in memory (n * S * S * 4 bytes), replayed on each converter attempt
        images = _model_inputs(config, "train", n, seed, img_size)
    except InputError as exc:
        raise InputError(f"--quantize int8 calibrates on the run's training images: {exc.message}",
                         hint="export on a machine where the dataset is at the recorded path, "
                              "or use --quantize float16") from None
    if not len(images):
        raise InputError("--quantize int8: the run's training split has no image to calibrate on")

    def dataset() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[np.newaxis]]

    dataset.count = len(images)  # type: ignore[attr-defined]
    return dataset


# ---- conversion ------------------------------------------------------------------------------
CONVERSION_METHODS = ("from_saved_model", "from_keras_model", "concrete_function")
_METHOD_NAMES = {
    "from_saved_model": "tf_keras Model.export (inference SavedModel, input 'image' "
                        "(None, S, S, 1)) -> tf.lite.TFLiteConverter.from_saved_model",
    "from_keras_model": "tf.lite.TFLiteConverter.from_keras_model",
    "concrete_function": "tf.lite.TFLiteConverter.from_concrete_functions "
                         "(tf.function, input (None, S, S, 1))",
}


def _converter(model: Any, img_size: int, method: str, workdir: Path) -> Any:
    tf = backend.tf()
    if method == "from_saved_model":
        # The fastest path: an inference-only SavedModel (variables and one traced call, no
        # per-layer Keras tracing); twice as fast as from_keras_model on the U-Net.
        saved = workdir / "savedmodel"
        if not saved.is_dir():
            save_savedmodel(model, saved)
        return tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if method == "from_keras_model":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    function = tf.function(lambda image: model(image, training=False), input_signature=[
        tf.TensorSpec([None, img_size, img_size, 1], tf.float32, name="image")])
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model)


def convert_tflite(model: Any, img_size: int, quantize: str = "none",
                   representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
                   methods: tuple[str, ...] = CONVERSION_METHODS,
                   ) -> tuple[bytes, dict[str, Any]]:
    """Convert a Keras model to TFLite bytes; returns (bytes, how it was converted).

    int8: full-integer (TFLITE_BUILTINS_INT8 only) with float32 input and output; if an op has
    no int8 kernel, int8 where possible with float ops left in ("mixed").
    """
    backend.tf()  # configured and quiet before the converter loads
    if quantize == "int8" and representative is None:
        raise ValueError("int8 quantization needs a representative dataset")
    int8_modes = ("full-integer", "mixed") if quantize == "int8" else (None,)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="breastus-export-") as workdir:
        return _convert(model, img_size, quantize, representative, methods, int8_modes,
                        failures, Path(workdir))


def _convert(model: Any, img_size: int, quantize: str, representative: Any,
             methods: tuple[str, ...], int8_modes: tuple[str | None, ...], failures: list[str],
             workdir: Path) -> tuple[bytes, dict[str, Any]]:
    tf = backend.tf()
    for method in methods:
        for mode in int8_modes:
            try:
                with _quiet():
                    converter = _converter(model, img_size, method, workdir)
                    if quantize == "float16":
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.target_spec.supported_types = [tf.float16]
                    elif quantize == "int8":
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.representative_dataset = representative
                        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                        if mode == "mixed":
                            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
                        converter.target_spec.supported_ops = ops
                        converter.inference_input_type = tf.float32
                        converter.inference_output_type = tf.float32
                    content = converter.convert()
            except Exception as exc:  # try the next path; all failing is reported below
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                failures.append(f"{method}{f' ({mode})' if mode else ''}: "
                                f"{type(exc).__name__}: {first}")
                continue
            info: dict[str, Any] = {"method": _METHOD_NAMES[method],
                                    "tensorflow": tf.__version__}
            if quantize == "float16":
                info["quantization"] = "float16 weights, float32 compute, float32 input/output"
            elif quantize == "int8":
                info["quantization"] = (
                    "full-integer: int8 weights and activations" if mode == "full-integer"
                    else "int8 where supported, some ops left in float32") + \
                    "; float32 input/output (quantize/dequantize inside the model)"
                info["int8_mode"] = mode
                info["representative_images"] = int(getattr(representative, "count", 0))
                info["representative_source"] = "training split"
            else:
                info["quantization"] = "none (float32)"
            if failures:
                info["earlier_failures"] = failures
            return content, info
    raise WorkError("TFLite conversion failed: " + " | ".join(failures))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter's Python warnings and native log lines stay out of the CLI's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backend._quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
            yield


def save_savedmodel(model: Any, path: Path) -> None:
    """An inference-only SavedModel: ``serve`` and the ``serving_default`` signature."""
    with _quiet():
        model.export(str(path))


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Build a folder beside ``target``; swap it in only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    shutil.rmtree(tmp)  # the exporter wants to create it
    old: Path | None = None
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- agreement -------------------------------------------------------------------------------
def _savedmodel_forward(path: Path, images: np.ndarray) -> np.ndarray:
    tf = backend.tf()
    with _quiet():
        loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    outputs = [next(iter(serve(image=tf.constant(images[i:i + 16])).values())).numpy()
               for i in range(0, len(images), 16)]
    return np.concatenate(outputs, axis=0)


def measure_agreement(reference: np.ndarray, outputs: np.ndarray, task: str, threshold: float,
                      format: str = "tflite", quantize: str = "none") -> dict[str, Any]:
    """How closely an export's outputs follow the Keras model's on the same inputs.

    Always: max and mean absolute difference. cls: fraction of images with the same label at
    ``threshold`` on column 1. seg: fraction of pixels with the same mask value at 0.5 and the
    mean over images of the IoU between the two masks (both empty counts as 1).
    """
    reference = np.asarray(reference, np.float64)
    outputs = np.asarray(outputs, np.float64)
    if reference.shape != outputs.shape:
        raise WorkError(f"the exported model outputs shape {outputs.shape[1:]}, the Keras "
                        f"model {reference.shape[1:]}")
    diff = np.abs(reference - outputs)
    tolerance = TOLERANCE["savedmodel" if format == "savedmodel" else quantize]
    int8 = format != "savedmodel" and quantize == "int8"
    result: dict[str, Any] = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "tolerance": tolerance,
    }
    if task == "cls":
        same = (reference[:, 1] >= threshold) == (outputs[:, 1] >= threshold)
        result["label_agreement"] = float(same.mean()) if len(same) else 1.0
        result["threshold"] = float(threshold)
    else:
        a, b = reference >= 0.5, outputs >= 0.5
        result["pixel_agreement"] = float((a == b).mean()) if a.size else 1.0
        axes = tuple(range(1, a.ndim))
        inter = (a & b).sum(axis=axes)
        union = (a | b).sum(axis=axes)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        result["mean_iou"] = float(iou.mean()) if len(iou) else 1.0
        result["threshold"] = 0.5
    if int8 and task == "cls":
        result["min_label_agreement"] = INT8_MIN_LABEL_AGREEMENT
        within = (result["label_agreement"] >= INT8_MIN_LABEL_AGREEMENT
                  or result["max_abs_diff"] <= INT8_CLOSE)
    elif int8:
        result["min_pixel_agreement"] = INT8_MIN_PIXEL_AGREEMENT
        within = (result["pixel_agreement"] >= INT8_MIN_PIXEL_AGREEMENT
                  or result["max_abs_diff"] <= INT8_CLOSE)
    else:
        within = bool(result["max_abs_diff"] <= tolerance)
    if not np.isfinite(outputs).all():
        result["non_finite_outputs"] = int((~np.isfinite(outputs)).sum())
        within = False
    result["within_tolerance"] = bool(within)
    return result
