"""A segmenter's lesion masks of a list of images, at each image's size, computed once per list
inside :func:`mask_cache` (evaluate's lesion crops, the fused classifier's descriptors and a
lesion-centred partner's crops all need the same masks of the same cases).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.data.imaging import read_luminance
from breastus_cli.engine.apply import inference
from breastus_cli.engine.apply.images import to_original_size

#: while an evaluation runs: each segmenter opened once, and its masks of an image list kept
#: (the lesion crops, the fused classifier's descriptors and a lesion-centred partner's crops
#: all need the same masks of the same cases)
_MASKS: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("breastus_masks", default=None)


@contextmanager
def mask_cache() -> Iterator[None]:
    """Within this block ``predicted_masks`` runs a segmenter once per image list (nested blocks
    share the outer one's cache; it is dropped when the outermost block ends)."""
    token = _MASKS.set({}) if _MASKS.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _MASKS.reset(token)


def predicted_masks(seg_run: Path, image_paths: list[str], batch_size: int = 16,
                    threshold: float = 0.5, tta: str = "none") -> list[np.ndarray]:
    """Lesion masks at each image's original size from a segmentation run (or a cv folder:
    its fold ensemble); computed once per image list inside ``mask_cache()``."""
    memo = _MASKS.get()
    run_key = (str(Path(seg_run).resolve()), tta)
    key = (*run_key, tuple(image_paths), float(threshold))
    if memo is not None and key in memo:
        return memo[key]
    loaded = memo.get(run_key) if memo is not None else None
    if loaded is None:
        loaded = inference.open_run(seg_run, "seg", tta=tta)
    probabilities = loaded.run_files(image_paths, batch_size)
    method = loaded.postprocess.method  # the segmenter's own (RUN/postprocess.json)
    masks = [to_original_size(prob, read_luminance(path).shape, threshold, method)[1]
             for path, prob in zip(image_paths, probabilities)]
    if memo is not None:
        memo[run_key], memo[key] = loaded, masks
    return masks

