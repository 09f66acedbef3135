"""Keras model -> TFLite bytes (float32, float16 weights, int8, int8 with the first layers in
float32) or an inference SavedModel.

Conversion goes through an inference-only SavedModel (tf-keras ``Model.export``) and
``TFLiteConverter.from_saved_model``; ``from_keras_model`` and a ``tf.function`` concrete
function with a dynamic batch are the fallbacks, in that order."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.errors import WorkError

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
                   float_layers: tuple[str, ...] = (),
                   ) -> tuple[bytes, dict[str, Any]]:
    """Convert a Keras model to TFLite bytes; returns (bytes, how it was converted).

    int8: full-integer (TFLITE_BUILTINS_INT8 only) with float32 input and output; if an op has
    no int8 kernel, int8 where possible with float ops left in ("mixed").
    int8-mixed: int8 weights and activations except the ops of ``float_layers`` (Keras layer
    paths such as ``backbone/block0_dw_conv``), which stay float32.
    """
    backend.tf()  # configured and quiet before the converter loads
    if quantize in ("int8", "int8-mixed") and representative is None:
        raise ValueError("int8 quantization needs a representative dataset")
    if quantize == "int8-mixed" and not float_layers:
        raise ValueError("int8-mixed needs the layers to keep in float32")
    int8_modes = ("full-integer", "mixed") if quantize == "int8" else \
        ("first-layers-float",) if quantize == "int8-mixed" else (None,)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="breastus-export-") as workdir:
        return _convert(model, img_size, quantize, representative, methods, int8_modes,
                        failures, Path(workdir), float_layers)


def _float_nodes(calibrated: bytes, float_layers: tuple[str, ...]) -> list[str]:
    """The calibrated model's tensors made by ``float_layers`` (their names carry the Keras
    layer path, fused ops several of them separated by ';')."""
    tf = backend.tf()
    with quiet():
        interpreter = tf.lite.Interpreter(model_content=calibrated)
    keys = [f"{layer}/" for layer in float_layers]
    return sorted({d["name"] for d in interpreter.get_tensor_details()
                   if any(key in d["name"] for key in keys)})


def _mixed_int8(converter: Any, representative: Any, float_layers: tuple[str, ...]) -> bytes:
    """int8 everywhere but the ops of ``float_layers`` (TFLite's selective quantization)."""
    tf = backend.tf()
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative)  # calibrates on it
    nodes = _float_nodes(debugger.calibrated_model, float_layers)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes))
    return debugger.get_nondebug_quantized_model()


def _convert(model: Any, img_size: int, quantize: str, representative: Any,
             methods: tuple[str, ...], int8_modes: tuple[str | None, ...], failures: list[str],
             workdir: Path, float_layers: tuple[str, ...] = ()) -> tuple[bytes, dict[str, Any]]:
    tf = backend.tf()
    for method in methods:
        for mode in int8_modes:
            try:
                with quiet():
                    converter = _converter(model, img_size, method, workdir)
                    if quantize == "float16":
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.target_spec.supported_types = [tf.float16]
                    elif quantize in ("int8", "int8-mixed"):
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.representative_dataset = representative
                        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                        if mode == "mixed":
                            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
                        converter.target_spec.supported_ops = ops
                        converter.inference_input_type = tf.float32
                        converter.inference_output_type = tf.float32
                    content = (_mixed_int8(converter, representative, float_layers)
                               if quantize == "int8-mixed" else converter.convert())
            except Exception as exc:  # try the next path; all failing is reported below
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                failures.append(f"{method}{f' ({mode})' if mode else ''}: "
                                f"{type(exc).__name__}: {first}")
                continue
            info: dict[str, Any] = {"method": _METHOD_NAMES[method],
                                    "tensorflow": tf.__version__}
            if quantize == "float16":
                info["quantization"] = "float16 weights, float32 compute, float32 input/output"
            elif quantize in ("int8", "int8-mixed"):
                info["quantization"] = (
                    "full-integer: int8 weights and activations" if mode == "full-integer"
                    else "int8 where supported, some ops left in float32" if mode == "mixed"
                    else f"int8 weights and activations but the ops of the first "
                         f"{len(float_layers)} layers, which stay float32") + \
                    "; float32 input/output (quantize/dequantize inside the model)"
                info["int8_mode"] = mode
                if quantize == "int8-mixed":
                    info["float_layers"] = list(float_layers)
                info["representative_images"] = int(getattr(representative, "count", 0))
                info["representative_source"] = "training split"
                classes = getattr(representative, "classes", None)
                if classes:  # a classifier's draw: balanced by class
                    info["representative_classes"] = {str(k): int(v) for k, v in classes.items()}
            else:
                info["quantization"] = "none (float32)"
            if failures:
                info["earlier_failures"] = failures
            return content, info
    raise WorkError("TFLite conversion failed: " + " | ".join(failures))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The converter's Python warnings and native log lines stay out of the CLI's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backend.quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
            yield


def save_savedmodel(model: Any, path: Path) -> None:
    """An inference-only SavedModel: ``serve`` and the ``serving_default`` signature."""
    with quiet():
        model.export(str(path))
