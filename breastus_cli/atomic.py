"""Atomic writes: a killed process never leaves a half-written artifact.

Every file is written to a temporary sibling, flushed, then renamed over the target
(``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds.

    >>> with atomic_path("out/model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else target.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            # mkstemp creates 0600; give the file the mode a plain open() would (shared clusters)
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


_critical = 0
_pending: list[int] = []


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that SIGINT/SIGTERM must not cut in two (replacing a folder by its new version:
    remove, then rename). The CLI's signal handler defers a signal that arrives inside it; it
    is raised as :class:`~breastus_cli.errors.Interrupted` when the block ends."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
    if not _critical and _pending:
        from breastus_cli.errors import Interrupted

        raise Interrupted(_pending.pop())


def defer_signal(signum: int) -> bool:
    """For the signal handler: True when an :func:`uninterrupted` block runs (the signal is
    kept and raised at its end), False when it may interrupt now."""
    if _critical:
        _pending.append(signum)
        return True
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def write_json(target: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN written as null) atomically."""
    return write_text(target, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats into plain JSON values."""
    import math

    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
