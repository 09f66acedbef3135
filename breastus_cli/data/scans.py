"""New scans for prediction: expand inputs, shard them, decode them ahead in a bounded stream.

Inputs may be files, folders (searched recursively, hidden entries skipped) or glob patterns.
Every regular file found is a candidate: a file that is not an image is reported as an error
row, not silently dropped, so the user sees what was left out.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from breastus_cli.data.dicom import is_dicom, read_dicom
from breastus_cli.data.imaging import read_luminance
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


def decode(path: Path) -> list[Frame]:
    """Decode one file into frames (RowError when it cannot be read)."""
    if is_dicom(path):
        frames, pixel = read_dicom(path)
        if len(frames) == 1:
            return [Frame(path, None, frames[0], pixel)]
        return [Frame(path, i, f, pixel) for i, f in enumerate(frames)]
    return [Frame(path, None, read_luminance(path))]


def _decode_safely(path: Path,
                   prepare: Callable[[Frame], None] | None = None) -> list[Frame] | Unreadable:
    try:
        frames = decode(path)
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


def stream(files: list[Path], workers: int = 2, ahead: int = 32,
           prepare: Callable[[Frame], None] | None = None) -> Iterator[list[Frame] | Unreadable]:
    """Decode ``files`` in order with ``workers`` threads, at most ``ahead`` files in flight, so
    memory stays flat however many files there are. ``prepare(frame)`` runs in the same thread
    right after decoding (predict resizes there, overlapping the model's forward pass)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future] = deque()
        iterator = iter(files)
        for path in iterator:
            pending.append(pool.submit(_decode_safely, path, prepare))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(iterator, None)
            if nxt is not None:
                pending.append(pool.submit(_decode_safely, nxt, prepare))
            yield result
