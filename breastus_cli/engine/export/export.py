"""``breastus export``: a run's model as TFLite (float32, float16 weights, full int8 or int8 with
the backbone's first half in float32) or as a TensorFlow SavedModel, with a ``metadata.json``
that says how to feed it and how closely it agrees with the Keras model it came from.

    RUN/export/model.tflite            float32
    RUN/export/model-float16.tflite    float16 weights (computed in float32)
    RUN/export/model-int8.tflite       int8 weights and activations, float32 input/output,
                                       calibrated on the run's training images
    RUN/export/model-int8-mixed.tflite the same with the preprocessing and the backbone's first
                                       half of layers in float32 (models whose early layers
                                       int8 cannot follow)
    RUN/export/savedmodel/             SavedModel, signature ``serving_default`` (input ``image``)
    RUN/export/metadata.json           what the last export was, plus one entry per export file

Every exported model takes what the Keras model takes: (N, S, S, 1) float32 pixels 0..255; the
preprocessing is inside the model.

This module runs an export; the parts live where they belong:
    export/export_inputs.py   the agreement samples (test split) and int8 calibration set
                              (training split), lesion crops for --roi mask classifiers
    export/convert.py         Keras -> TFLite bytes / inference SavedModel (and fallbacks)
    export/agreement.py       tolerances, the agreement measurement and its verdict
    apply/inference.py        the runtime (:class:`TFLiteModel`, float or int8, XNNPACK) and
                              the one inference path of evaluate and predict
(paths under breastus_cli/engine/).
Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import __version__, backend
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.manifest import file_sha256
from breastus_cli.engine.apply import postprocess
from breastus_cli.engine.export.agreement import (  # noqa: F401  (re-exported)
    INT8_CLOSE,
    INT8_MIN_LABEL_AGREEMENT,
    INT8_MIN_PIXEL_AGREEMENT,
    TOLERANCE,
    savedmodel_forward,
    disagreement,
    measure_agreement,
)
from breastus_cli.engine.export.convert import (  # noqa: F401  (re-exported)
    CONVERSION_METHODS,
    convert_tflite,
    save_savedmodel,
)
from breastus_cli.engine.export.export_inputs import (  # noqa: F401  (re-exported)
    SAMPLE_IMAGES,
    representative_images,
    sample_images,
    synthetic_images,
)
from breastus_cli.engine.apply.inference import open_run
from breastus_cli.engine.apply.loaded_run import MAX_BATCH, roi_margin  # noqa: F401 (re-exported)
from breastus_cli.engine.apply.tflite_model import (  # noqa: F401  (the runtime, re-exported)
    EXPORT_DIR,
    METADATA,
    TFLITE_FILES,
    TFLiteModel,
    read_export_metadata,
)
from breastus_cli.engine.runs.rundir import (
    MODEL,
    THRESHOLD_RULE,
    check_same_split,
    read_threshold,
)
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.models.grey_input import fold_grey_input
from breastus_cli.ownership import claim

FORMATS = ("tflite", "savedmodel")
QUANTIZE = ("none", "float16", "int8", "int8-mixed")
INT8_KINDS = ("int8", "int8-mixed")
SAVEDMODEL_DIR = "savedmodel"

@dataclass
class ExportSettings:
    """Settings of ``breastus export``."""

    run_dir: Path
    format: str = "tflite"        # tflite | savedmodel
    quantize: str = "none"        # none | float16 | int8 | int8-mixed (tflite only)
    representative: int = 100
    samples: int = SAMPLE_IMAGES  # test cases the agreement check compares on
    out: Path | None = None
    force: bool = False  # keep an export that fails the agreement check
    overwrite: bool = False  # replace the folder's earlier exports (only an export folder's)

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--format must be tflite or savedmodel (got '{self.format}')")
        if self.quantize not in QUANTIZE:
            raise UsageError("--quantize must be none, float16, int8 or int8-mixed "
                             f"(got '{self.quantize}')")
        if self.format == "savedmodel" and self.quantize != "none":
            raise UsageError(f"--quantize {self.quantize} applies to --format tflite only "
                             "(a SavedModel is exported in float32)")
        for option, value in (("--representative", self.representative),
                              ("--samples", self.samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{option} must be at least 1 image (got {value})")
        run_dir = Path(self.run_dir)
        config = RunConfig.read(run_dir)  # InputError: not a folder / not a run directory
        if config.task not in ("cls", "seg"):
            raise InputError(f"{run_dir}: unknown task '{config.task}' in config.json")
        if not (run_dir / MODEL).is_file():
            raise InputError(f"no {MODEL} in {run_dir}: has the run finished at least one epoch?")
        if self.quantize in INT8_KINDS:  # calibrates on the run's training cases: still those?
            check_same_split(run_dir, config)
        # a folder, new, empty or an export folder (its metadata.json); never the run itself
        # or a folder around it; no link in it that leads out of it
        claim(self.out_dir(), "export", inputs=[run_dir], inside_ok=True)

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
    config = RunConfig.read(run_dir)
    task, img_size = str(config.task), config.img_size

    loaded = open_run(run_dir, task, config=config.raw)  # the model as evaluate/predict apply it
    model = loaded.keras_model
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1:] != (img_size, img_size, 1):
        raise InputError(f"{run_dir}/{MODEL} takes input {shape[1:]}, config.json says "
                         f"({img_size}, {img_size}, 1)")
    samples, sample_source = sample_images(config.raw, img_size, settings.samples)
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
            if settings.quantize in INT8_KINDS:
                representative = representative_images(config.raw, img_size,
                                                        settings.representative)
            graph = _tflite_graph(model, task, samples)
            float_layers = first_half(graph) if settings.quantize == "int8-mixed" else ()
            content, conversion = convert_tflite(graph, img_size, settings.quantize,
                                                 representative, float_layers=float_layers)
            if graph is not model:
                conversion["grey_input"] = GREY_INPUT_FOLDED
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
                agreement = agree(savedmodel_forward(tmp, samples))
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
    if settings.overwrite:  # the folder's earlier exports go: only the files export writes
        _remove_other_exports(out_dir, keep=target.name)
    return ExportResult(path=target, metadata_path=metadata_path, format=settings.format,
                        quantize=settings.quantize, size_bytes=int(size), agreement=agreement,
                        seconds=round(time.perf_counter() - start, 2))


def _threshold(run_dir: Path, config: RunConfig) -> tuple[float, str]:
    """The run's decision threshold by the one rule (:func:`read_threshold`, which evaluate
    and predict also use): threshold.json when present, else 0.5; and why."""
    chosen = read_threshold(run_dir, config)
    return chosen.value, chosen.source


#: what conversion info says when the grey -> RGB copy was folded into the first convolution
GREY_INPUT_FOLDED = ("one grey channel into the backbone's first convolution (its kernel summed "
                     "over the 3 copied channels: the same model, and int8 rounds the kernel "
                     "the grey image uses)")


def _tflite_graph(model: Any, task: str, samples: np.ndarray) -> Any:
    """The graph TFLite converts: a classifier with its grey -> RGB copy folded into the
    backbone's first convolution where that gives the same outputs
    (:func:`breastus_cli.models.grey_input.fold_grey_input`), else ``model`` itself."""
    if task != "cls" or not len(samples):
        return model
    return fold_grey_input(model, samples[:4]) or model


def first_half(model: Any) -> tuple[str, ...]:
    """What ``--quantize int8-mixed`` keeps in float32, as TFLite names the layers: those before
    the backbone (grey copy, preprocessing) and the first half of the backbone's layers, in
    their order (``backbone/LAYER``); a model without a nested backbone: its first half.

    Measured on EfficientNet-Lite0 fine-tuned on BUS-BRA (threshold 0.10): int8 weights in the
    early layers moved its labels most (the stem's and first block's alone: 95.7% same labels
    on the test fold; blocks 8-15's and the head's alone: 99.2%)."""
    keras = backend.keras()

    def names(layers: list[Any]) -> list[str]:
        return [layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)]

    nested = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if nested is None:
        own = names(model.layers)
        return tuple(own[:len(own) // 2])
    inner = names(nested.layers)
    before = names(model.layers[:model.layers.index(nested)])
    return (*before, *(f"{nested.name}/{name}" for name in inner[:len(inner) // 2]))


def _metadata(settings: ExportSettings, config: RunConfig, target: Path, size: int,
              conversion: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any]:
    run_dir = Path(settings.run_dir)
    task, img_size = config.task, config.img_size
    threshold, threshold_source = _threshold(run_dir, config)
    described = config.input
    model_sha = file_sha256(run_dir / MODEL)
    entry = {"format": settings.format, "quantize": settings.quantize,
             "file": target.name, "size_bytes": int(size), "conversion": conversion,
             "agreement": agreement, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if task == "cls":
        labels, positive = config.labels, config.positive_label
        output = {"shape": [None, len(labels)], "dtype": "float32",
                  "meaning": f"softmax over labels; column {labels.index(positive)} = "
                             f"p({positive}); label = {positive} when p >= threshold"}
    else:
        labels, positive = ["background", "lesion"], "lesion"
        output = {"shape": [None, img_size, img_size, 1], "dtype": "float32",
                  "meaning": "sigmoid lesion probability per pixel; mask = p >= threshold "
                             "(at the image's size), then the postprocess method"}
    # Entries of earlier exports of the same model.keras stay listed (one folder, many files).
    exports: dict[str, Any] = {}
    previous = target.parent / METADATA
    if previous.is_file():
        with contextlib.suppress(Exception):
            old = json.loads(previous.read_text())
            if old.get("source_model_sha256") == model_sha:
                exports = {k: v for k, v in old.get("exports", {}).items()
                           if (target.parent / k).exists()}
    if settings.overwrite:
        exports = {}
    exports[target.name] = entry
    pp = postprocess.read(run_dir) if task == "seg" else None
    return {
        "task": task,
        "model": config.model_name,
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
        "roi": config.roi if task == "cls" else None,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "threshold_rule": THRESHOLD_RULE,
        # a segmenter's mask post-processing (engine/apply/postprocess.py; predict reads this)
        **({"postprocess": pp.method, "postprocess_source": pp.source} if pp else {}),
        "source_run": str(run_dir.resolve()),
        "source_model": MODEL,
        "source_model_sha256": model_sha,
        "breastus_version": __version__,
        "versions": {"tensorflow": backend.tf().__version__,
                     "tf_keras": backend.keras().__version__},
        "exports": exports,
    }


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


def _remove_other_exports(out_dir: Path, keep: str) -> None:
    """--overwrite: remove the export files other than ``keep`` (names export writes only)."""
    for name in (*TFLITE_FILES.values(), SAVEDMODEL_DIR):
        path = out_dir / name
        if name == keep or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


