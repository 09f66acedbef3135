"""The one module that sets TensorFlow's environment and imports TensorFlow / Keras.

Nothing else in the package imports ``tensorflow``, ``tf_keras`` or ``segmentation_models``
directly: they are reached through :func:`tf`, :func:`keras` and :func:`sm`, which import on
first use. That keeps ``breastus --help``, ``synth``, ``prepare`` and ``split`` instant.

``segmentation-models`` needs the Keras 2 API, so the process runs on ``tf-keras`` with
``TF_USE_LEGACY_KERAS=1`` and ``SM_FRAMEWORK=tf.keras``; both must be set before TensorFlow
loads, which is why they are set here and only here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

_verbose = False

#: Environment every TensorFlow import in this process sees.
REQUIRED_ENV = {"TF_USE_LEGACY_KERAS": "1", "SM_FRAMEWORK": "tf.keras"}


def _require_env() -> None:
    for name, value in REQUIRED_ENV.items():
        os.environ[name] = value


# Set on import (cheap, no TensorFlow): whoever imports TensorFlow after any breastus module
# then gets the Keras 2 API, even code that imports tensorflow directly.
_require_env()


def configure(*, verbose: bool = False) -> None:
    """Set the environment TensorFlow reads at import; quiet its start-up logs unless verbose.

    Safe to call more than once; has no effect on log levels once TensorFlow is loaded.
    """
    global _verbose
    _verbose = verbose
    _require_env()
    if not is_loaded():
        # 0 = all C++ logs, 2 = warnings and errors hidden (errors still raise in Python).
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "2"
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def is_loaded() -> bool:
    """True once TensorFlow has been imported in this process (by us or by anyone)."""
    return "tensorflow" in sys.modules


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ start-up lines (absl, oneDNN, CUDA probing) that bypass Python's logging."""
    if _verbose:
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield  # stderr is not a real file (pytest capture, notebooks): nothing to redirect
        return
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, fd)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def tf() -> ModuleType:
    """Import and return ``tensorflow`` (configured, quiet)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    configure(verbose=_verbose)
    with quiet_native_stderr():
        import tensorflow

        if not _verbose:
            tensorflow.get_logger().setLevel(logging.ERROR)
            logging.getLogger("absl").setLevel(logging.ERROR)
        threads = os.environ.get("BREASTUS_THREADS", "").strip()
        if threads.isdigit() and int(threads) > 0:
            # parallel sweep trials and Slurm tasks share a node: each gets its share of cores
            tensorflow.config.threading.set_intra_op_parallelism_threads(int(threads))
            tensorflow.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
        # Force the native runtime to initialise now, while its chatter is still silenced.
        tensorflow.config.list_physical_devices()
    return tensorflow


def keras() -> ModuleType:
    """Return the Keras 2 API (``tf_keras``), the one ``segmentation-models`` works with."""
    tf()
    import tf_keras

    return tf_keras


def sm() -> ModuleType:
    """Import ``segmentation_models`` on the tf.keras framework, without its banner."""
    if "segmentation_models" in sys.modules:
        return sys.modules["segmentation_models"]
    keras()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import segmentation_models

        segmentation_models.set_framework("tf.keras")
    return segmentation_models


def versions() -> dict[str, Any]:
    """Versions of the runtime stack, for config.json."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version()}
    tensorflow = tf()
    info["tensorflow"] = tensorflow.__version__
    info["tf_keras"] = keras().__version__
    try:
        from importlib.metadata import version

        info["segmentation_models"] = version("segmentation-models")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        info["segmentation_models"] = None
    return info
