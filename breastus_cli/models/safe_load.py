"""Load a ``.keras`` model file without ever running code from it.

Keras can run code from a model file in two ways: a legacy HDF5 (or SavedModel) file goes to the
legacy loader, which rebuilds ``Lambda`` layers from marshalled bytecode whatever ``safe_mode``
says; and a native zip file's ``config.json`` names Python modules that the deserializer imports
to find a class. So before Keras sees a file, :func:`check_model_file` reads it as data:

* it must be the native zip format (``config.json`` + ``model.weights.h5`` or ``.npz``, nothing
  else), named ``*.keras`` so that Keras takes the zip path;
* the sizes its members declare (each, their total, and each one's compression ratio) must be
  within caps before anything is inflated, and ``config.json`` is inflated as a bounded stream,
  so that a small archive cannot make breastus hold gigabytes (a zip bomb);
* every object in ``config.json`` (layers, initializers, regularizers, constraints, activations,
  losses, metrics, optimizers, functions, at any depth) must name a module and class of the
  allowlist below; ``Lambda``-like layers and Python lambdas are refused outright.

Then, with breastus's and the encoders' objects registered, every name the deserializer will
look up must resolve to an object already in memory (so nothing gets imported).
:func:`load_keras_model` loads a checked file with ``compile=False, safe_mode=True``. A refusal
is an :class:`~breastus_cli.errors.InputError`: ``not a safe Keras model file: PATH: REASON``.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from breastus_cli import backend
from breastus_cli.errors import InputError, one_line

CONFIG = "config.json"
WEIGHTS = ("model.weights.h5", "model.weights.npz")
#: What tf-keras writes into a .keras archive for a model without assets.
ENTRIES = {CONFIG, "metadata.json", *WEIGHTS}
#: config.json larger than this is not a model breastus wrote (a U-Net EfficientNetB2: ~0.5 MB).
MAX_CONFIG_BYTES = 64 * 1024 * 1024
#: weights larger than this are read through the archive, as tf-keras does (slower, but not all
#: in memory at once); breastus's largest, ResNet50, are 95 MB
MAX_WEIGHTS_IN_MEMORY = 2 * 1024**3
#: The archive's members may declare at most this many bytes in all (and the file on disk may be
#: at most this large): a ResNet50 .keras is ~95 MB, a U-Net EfficientNetB2 ~60 MB.
MAX_ARCHIVE_BYTES = 2 * 1024**3
#: A member that declares more than MIN_RATIO_BYTES may inflate at most MAX_RATIO times its
#: compressed size. tf-keras stores members uncompressed (ratio 1); float weights deflate to
#: ~0.9 of their size, a JSON config ~10x; a run of zeros deflates up to ~1000x.
MAX_RATIO = 100
MIN_RATIO_BYTES = 1024**2
#: Keras's reason for not loading a file is cut to this many characters on the one error line.
MAX_MESSAGE = 300

#: Public tf-keras API modules the serializer writes for built-in classes (the deserializer maps
#: them to ``tf_keras`` symbols by name, never importing anything outside tf-keras).
KERAS_CLASS_MODULES = frozenset({
    "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.losses", "keras.metrics", "keras.optimizers", "keras.optimizers.schedules",
})
#: ``keras`` itself: only the model containers.
KERAS_TOP_CLASSES = frozenset({"Sequential", "Model"})
#: Internal tf-keras modules the serializer writes for model classes, with those classes.
TF_KERAS_CLASSES = {
    "tf_keras.src.engine.functional": frozenset({"Functional"}),
    "tf_keras.src.engine.sequential": frozenset({"Sequential"}),
    "tf_keras.src.engine.training": frozenset({"Model"}),
}
#: Modules of built-in functions (activations, losses, ...) serialized as objects.
KERAS_FUNCTION_MODULES = frozenset({
    "keras.activations", "keras.losses", "keras.metrics", "keras.initializers",
    "keras.regularizers", "keras.constraints",
})
#: Where the deserializer looks up a plain function name written with module ``builtins``.
BUILTIN_FUNCTION_MODULES = ("activations", "constraints", "initializers", "losses", "metrics",
                            "optimizers", "regularizers")
#: (module, class or function name) -> registered name, for what breastus registers
#: (``register_keras_serializable(package="breastus")``) and what efficientnet registers when
#: segmentation-models is imported (``swish``, ``FixedDropout``).
CUSTOM_OBJECTS = {
    ("breastus_cli.models.cls_objectives", "MalignantAUC"): "breastus>MalignantAUC",
    ("breastus_cli.models.seg_objectives", "SegLoss"): "breastus>SegLoss",
    ("breastus_cli.models.seg_objectives", "MeanOverlap"): "breastus>MeanOverlap",
    ("efficientnet.model", "FixedDropout"): "FixedDropout",
    ("efficientnet.model", "swish"): "swish",
}
#: Layers that call Python code named or carried by their config.
CODE_LAYERS = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "InstanceMethod",
                         "InstanceProperty", "ClassMethod"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class _Refused(Exception):
    """Why a file is not safe (turned into the one InputError line)."""


def _refuse(path: Path, reason: str) -> InputError:
    return InputError(f"not a safe Keras model file: {path}: {reason}")


# ---- the check ----------------------------------------------------------------------------------
def check_model_file(path: str | Path) -> dict[str, Any]:
    """Read ``path``'s config without deserializing it; raise InputError unless it is a native
    zip ``.keras`` file whose every object is on the allowlist and resolves to an object already
    in memory. Returns the config.

    The allowlist is checked first, as plain data, before TensorFlow is even imported; then
    breastus's and the encoders' objects are registered and every name is resolved.
    """
    path = Path(path)
    try:
        config = _read_config(path)
        for node, where in _objects(config):
            _check_object(node, where)
        keras = backend.keras()
        from breastus_cli.models import seg_objectives  # noqa: F401  (registers losses/metrics)

        backend.sm()  # registers the encoders' custom objects (swish, FixedDropout) with Keras
        _check_resolvable(config, keras)
    except _Refused as exc:
        raise _refuse(path, str(exc)) from None
    return config


def _read_config(path: Path) -> Any:
    if path.suffix != ".keras":
        raise _Refused("the name must end in .keras (the native zip format)")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_HDF5_SIGNATURE))
    except OSError as exc:
        raise _Refused(f"cannot read it ({exc.strerror or exc})") from None
    if head == _HDF5_SIGNATURE:
        raise _Refused("a legacy HDF5 model (it can carry Python code); only the native zip "
                       ".keras format is loaded")
    if not zipfile.is_zipfile(path):
        raise _Refused("not a zip archive (the native .keras format)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            extra = sorted(set(names) - ENTRIES)
            if extra:
                raise _Refused(f"unexpected entry '{extra[0]}' in the archive")
            if CONFIG not in names:
                raise _Refused(f"no {CONFIG} in the archive")
            if not any(name in names for name in WEIGHTS):
                raise _Refused(f"no {WEIGHTS[0]} in the archive")
            _check_sizes(archive.infolist())
            with archive.open(CONFIG) as member:  # a header that under-declares reads no further
                raw = member.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise _Refused(f"{CONFIG} is larger than {MAX_CONFIG_BYTES // 2**20} MB")
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise _Refused(f"unreadable archive ({exc})") from None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Refused(f"{CONFIG} is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise _Refused(f"{CONFIG} does not describe a model")
    return config


def _check_sizes(members: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose members declare more than the caps, from its directory alone
    (nothing inflated): ``config.json`` over MAX_CONFIG_BYTES, a member over MIN_RATIO_BYTES
    that inflates more than MAX_RATIO times, or a total over MAX_ARCHIVE_BYTES."""
    total = 0
    for info in members:
        if info.filename == CONFIG and info.file_size > MAX_CONFIG_BYTES:
            raise _Refused(f"{CONFIG} is larger than {MAX_CONFIG_BYTES // 2**20} MB")
        if info.file_size > MIN_RATIO_BYTES \
                and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise _Refused(f"'{info.filename}' inflates {info.compress_size:,} bytes to "
                           f"{info.file_size:,}, more than {MAX_RATIO} times (a zip bomb?)")
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise _Refused(f"its members inflate to {total:,} bytes, more than the cap of "
                       f"{MAX_ARCHIVE_BYTES // 2**20} MB")


def _objects(config: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every dict in ``config`` (iteratively: a deep file cannot exhaust the stack), with a
    readable location ("layers[3].config.activation")."""
    stack: list[tuple[Any, str]] = [(config, "config")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            yield node, where
            stack.extend((value, f"{where}.{key}") for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{where}[{i}]") for i, value in enumerate(node))


def _check_object(node: dict[str, Any], where: str) -> None:
    class_name = node.get("class_name")
    if "class_name" in node and not isinstance(class_name, str):
        raise _Refused(f"{where}: class_name is not a string")
    if class_name in CODE_LAYERS:
        raise _Refused(f"{where}: a {class_name} layer (it runs Python code from the file)")
    if class_name == "__lambda__" or "function_type" in node:
        raise _Refused(f"{where}: a Python lambda or function (code from the file)")
    if "module" not in node or node["module"] is None:
        # No module: Keras resolves the name among its own and registered objects only.
        if "class_name" in node and class_name != "function" \
                and not (class_name.startswith("__") or _NAME.match(class_name)):
            raise _Refused(f"{where}: class name '{class_name}' is not allowed")
        return
    module = node["module"]
    if not isinstance(module, str):
        raise _Refused(f"{where}: module is not a string")
    if class_name == "function":
        name = node.get("config")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _Refused(f"{where}: function name {name!r} is not allowed")
        if module in KERAS_FUNCTION_MODULES or module == "builtins" \
                or (module, name) in CUSTOM_OBJECTS:
            return
        raise _Refused(f"{where}: function '{name}' from module '{module}' is not allowed")
    if class_name is None or not _NAME.match(class_name):
        raise _Refused(f"{where}: class name '{class_name}' from module '{module}' is not "
                       "allowed")
    if module in KERAS_CLASS_MODULES:
        return
    if module == "keras" and class_name in KERAS_TOP_CLASSES:
        return
    if class_name in TF_KERAS_CLASSES.get(module, ()):
        return
    registered = CUSTOM_OBJECTS.get((module, class_name))
    if registered is not None and node.get("registered_name") == registered:
        return
    raise _Refused(f"{where}: class '{class_name}' from module '{module}' is not allowed")


def _check_resolvable(config: dict[str, Any], keras: Any) -> None:
    """Every name the deserializer looks up must already be known, so that it never falls back
    to ``importlib.import_module``. ``compile_config`` is skipped: loading with
    ``compile=False`` never deserializes it (its names passed the allowlist all the same)."""
    registry = keras.saving.get_custom_objects()
    for node, where in _objects({k: v for k, v in config.items() if k != "compile_config"}):
        module, class_name = node.get("module"), node.get("class_name")
        if not isinstance(module, str):
            continue
        if class_name == "function":
            name = node["config"]
            if (module, name) in CUSTOM_OBJECTS or name in registry:
                if name not in registry:
                    raise _Refused(f"{where}: function '{name}' is not registered")
                continue
            found = _keras_symbol(keras, [module[len("keras."):]] if module != "builtins"
                                  else BUILTIN_FUNCTION_MODULES, name)
            if found is None or not callable(found) or isinstance(found, type):
                raise _Refused(f"{where}: '{name}' is not a Keras built-in function")
            continue
        registered = CUSTOM_OBJECTS.get((module, class_name))
        if registered is not None:
            if registered not in registry:
                raise _Refused(f"{where}: '{registered}' is not registered")
            continue
        if module in TF_KERAS_CLASSES:
            found = getattr(sys.modules.get(module), class_name, None)
        elif module == "keras":
            found = getattr(keras, class_name, None)
        else:
            found = _keras_symbol(keras, [module[len("keras."):]], class_name)
        if not isinstance(found, type):
            raise _Refused(f"{where}: '{module}.{class_name}' is not a Keras class")
        if issubclass(found, keras.layers.Lambda):
            raise _Refused(f"{where}: a Lambda layer (it runs Python code from the file)")


def _keras_symbol(keras: Any, modules: Any, name: str) -> Any:
    for dotted in modules:
        namespace = keras
        for part in dotted.split("."):
            namespace = getattr(namespace, part, None)
        found = getattr(namespace, name, None) if namespace is not None else None
        if found is not None:
            return found
    return None


def load_keras_model(path: str | Path) -> Any:
    """Check ``path`` (:func:`check_model_file`), then load it uncompiled in safe mode.

    Both happen on one private copy of the file (a folder only this process can read), so the
    file that is loaded is the file that was checked, even if ``path`` is replaced meanwhile."""
    import shutil
    import tempfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no model file at {path}")
    if path.suffix != ".keras":
        raise _refuse(path, "the name must end in .keras (the native zip format)")
    if path.stat().st_size > MAX_ARCHIVE_BYTES:  # before it is copied
        raise _refuse(path, f"larger than the cap of {MAX_ARCHIVE_BYTES // 2**20} MB")
    with tempfile.TemporaryDirectory(prefix="breastus-model-") as private:
        copy = Path(private) / "model.keras"  # a name tf-keras sends to the zip loader
        try:
            shutil.copyfile(path, copy)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            config = check_model_file(copy)
        except InputError as exc:  # name the user's file, not the private copy
            raise InputError(exc.message.replace(str(copy), str(path)), hint=exc.hint) from None
        try:
            return _load_checked(copy, config)
        except Exception as exc:  # Keras's message can run several lines: --debug shows it all
            raise InputError(f"cannot load {path}: {type(exc).__name__}: "
                             f"{one_line(exc, MAX_MESSAGE)}") from exc


def _load_checked(path: Path, config: dict[str, Any]) -> Any:
    """What ``keras.models.load_model(path, compile=False, safe_mode=True)`` returns, for a
    checked file and the config :func:`check_model_file` read and checked from it, with its
    HDF5 weights read from memory.

    tf-keras hands h5py the weights as a member of the open zip archive. Python 3.11's zip
    member seeks backwards by reading again from the member's start, and h5py seeks a great
    deal: a ResNet50 took 22-24 s to load, 3-4 s from memory; a U-Net EfficientNetB2 18-22 s,
    7 s. The steps are tf-keras 2.21's own (``saving_lib.load_model``): the model deserialized
    from config.json in safe mode, then its state read from the weights. A file with
    ``.npz`` weights, or another tf-keras, goes through ``load_model`` itself."""
    import io

    keras = backend.keras()
    try:
        from tf_keras.src.saving import saving_lib
        from tf_keras.src.saving.serialization_lib import deserialize_keras_object

        state = (saving_lib._SAVING_V3_ENABLED, saving_lib.ObjectSharingScope,
                 saving_lib.H5IOStore, saving_lib._load_state)
    except (ImportError, AttributeError):
        state = None
    with zipfile.ZipFile(path) as archive:
        if (state is None or WEIGHTS[0] not in archive.namelist()
                or archive.getinfo(WEIGHTS[0]).file_size > MAX_WEIGHTS_IN_MEMORY):
            return keras.models.load_model(path, compile=False, safe_mode=True)
        weights = io.BytesIO(archive.read(WEIGHTS[0]))
    config["compile_config"] = None  # compile=False
    flag, sharing, store_type, load_state = state
    enabled = getattr(flag, "value", False)
    flag.value = True
    try:
        with sharing():
            model = deserialize_keras_object(config, None, safe_mode=True)
        store = store_type(weights, mode="r")  # h5py reads the in-memory file
        try:
            load_state(model, weights_store=store, assets_store=None, inner_path="",
                       visited_trackables=set())
        finally:
            store.close()
    finally:
        flag.value = enabled
    return model
