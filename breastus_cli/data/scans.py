"""New scans for prediction: expand inputs, shard them, decode them ahead in a bounded stream.

Inputs may be files, folders (searched recursively, hidden entries skipped) or glob patterns.
Every regular file found is a candidate: a file that is not an image is reported as an error
row, not silently dropped, so the user sees what was left out.
"""

from __future__ import annotations

import glob
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from breastus_cli.data.dicom import is_dicom, read_dicom
from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS, read_luminance
from breastus_cli.errors import InputError, RowError, UsageError


@dataclass
class Frame:
    """One image to predict: a file, or one frame of a multi-frame DICOM."""

    path: Path
    frame: int | None
    image: np.ndarray  # (H, W) uint8 luminance
    pixel_size_mm: float | None = None
    #: model inputs prepared in the decoding thread, by input size (see ``stream(prepare=...)``)
    inputs: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Unreadable:
    """A file that could not be decoded, and why."""

    path: Path
    reason: str


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (recursive) and globs -> sorted unique file list; InputError if an input
    matches nothing."""
    found: set[Path] = set()
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.update(Path(root) / f for f in files if not f.startswith("."))
        elif glob.has_magic(text):
            matches = [Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise InputError(f"no file matches {text}")
            found.update(files)
        else:
            raise InputError(f"input not found: {text}")
    return sorted(found, key=lambda p: str(p))


def shard(files: list[Path], num_parts: int, part_id: int) -> list[Path]:
    """The ``part_id``-th (1-based) of ``num_parts`` interleaved shares of a sorted file list."""
    if num_parts < 1:
        raise UsageError(f"--num-parts must be at least 1 (got {num_parts})")
    if not 1 <= part_id <= num_parts:
        raise UsageError(f"--part-id must lie in 1..{num_parts} (got {part_id})")
    return [f for i, f in enumerate(files) if i % num_parts == part_id - 1]


def decode(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Frame]:
    """Decode one file into frames (RowError when it cannot be read, or is over ``max_pixels``
    per frame, checked before decoding)."""
    if is_dicom(path):
        frames, pixel = read_dicom(path, max_pixels)
        if len(frames) == 1:
            return [Frame(path, None, frames[0], pixel)]
        return [Frame(path, i, f, pixel) for i, f in enumerate(frames)]
    return [Frame(path, None, read_luminance(path, max_pixels))]


def _decode_safely(path: Path, prepare: Callable[[Frame], None] | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Frame] | Unreadable:
    try:
        frames = decode(path, max_pixels)
        if prepare is not None:
            for frame in frames:
                prepare(frame)
    except RowError as err:
        return Unreadable(path, err.message)
    except Exception as exc:  # a decoder bug on one odd file must not stop a batch
        return Unreadable(path, f"cannot read ({type(exc).__name__}: {exc})")
    if any(f.image.size == 0 for f in frames):
        return Unreadable(path, "image has no pixels")
    return frames


#: Decoded pixels (and model inputs) that may wait in the stream before it stops starting files.
WAITING_BYTES = 512 << 20


def _nbytes(result: list[Frame] | Unreadable) -> int:
    """Bytes of decoded pixels and model inputs a decoding result holds."""
    if not isinstance(result, list):
        return 0
    return sum(f.image.nbytes + sum(a.nbytes for a in f.inputs.values()) for f in result)


def stream(files: list[Path], workers: int = 2, ahead: int = 32,
           prepare: Callable[[Frame], None] | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[list[Frame] | Unreadable]:
    """Decode ``files`` in order with ``workers`` threads, at most ``ahead`` files in flight, so
    memory stays flat however many files there are. ``prepare(frame)`` runs in the same thread
    right after decoding (predict resizes there, overlapping the model's forward pass).

    Files over ``max_pixels`` (per frame; DICOMs also in all) come back :class:`Unreadable`,
    undecoded. At most two files per worker wait to be decoded, and none is started while the
    decoded ones waiting to be consumed hold more than :data:`WAITING_BYTES`: a run of huge
    (but allowed) files never piles up ``ahead`` of them in memory."""
    lock = threading.RLock()  # a done-callback may run at once, in the thread that adds it
    pending: deque[Future] = deque()
    iterator = iter(files)
    state = {"held": 0, "queued": 0, "exhausted": False, "closed": False}
    queue_limit = 2 * max(1, workers)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def finished(future: Future) -> None:
            with lock:
                state["queued"] -= 1
                if not future.cancelled() and future.exception() is None:
                    state["held"] += _nbytes(future.result())
                fill()

        def fill() -> None:  # with the lock held
            while not state["exhausted"] and not state["closed"] and len(pending) < ahead and (
                    not pending or (state["queued"] < queue_limit
                                    and state["held"] < WAITING_BYTES)):
                nxt = next(iterator, None)
                if nxt is None:
                    state["exhausted"] = True
                    return
                future = pool.submit(_decode_safely, nxt, prepare, max_pixels)
                state["queued"] += 1
                pending.append(future)
                future.add_done_callback(finished)

        try:
            with lock:
                fill()
            while True:
                with lock:
                    if not pending:
                        break
                    future = pending.popleft()
                result = future.result()
                with lock:
                    state["held"] -= _nbytes(result)
                    fill()
                yield result
        finally:
            with lock:
                state["closed"] = True
