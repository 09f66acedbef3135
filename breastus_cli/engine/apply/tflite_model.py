"""Running a .tflite file: :class:`TFLiteModel` (XNNPACK on every allowed core), the export
folder's file names and its metadata.json."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend, runfiles
from breastus_cli.engine.apply.loaded_run import MAX_BATCH
from breastus_cli.errors import InputError, UsageError

EXPORT_DIR = "export"
#: TFLite files of ``breastus export`` in RUN/export/, in the order predict looks for them.
TFLITE_FILES = {"none": "model.tflite", "float16": "model-float16.tflite",
                "int8": "model-int8.tflite",  # by export --quantize: the one table of names
                "int8-mixed": "model-int8-mixed.tflite"}
TFLITE_EXPORTS = tuple(TFLITE_FILES.values())
METADATA = "metadata.json"


def tflite_export(run_dir: Path) -> Path | None:
    """The run's TFLite export predict uses (the first of :data:`TFLITE_EXPORTS`), or None."""
    export = Path(run_dir) / EXPORT_DIR
    return next((export / n for n in TFLITE_EXPORTS if (export / n).is_file()), None)



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
            with warnings.catch_warnings(), backend.quiet_native_stderr():
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
            with backend.quiet_native_stderr():  # "INFO: Created ... XNNPACK delegate"
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
