"""Images in, outputs back at the original size: the training pipeline's resize of an
in-memory image, a probability map upsampled and masked (and post-processed), the crop a
lesion-centred classifier sees."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from breastus_cli.data.imaging import resize_grey
from breastus_cli.data.roi import crop, roi_box
from breastus_cli.engine.apply.postprocess import apply

# ---- images in, outputs back at the original size --------------------------------------------
def resize_input(image: np.ndarray, size: int, tf: Any = None) -> np.ndarray:
    """The training pipeline's resize of a (H, W) image to the model's (S, S, 1) float32 input:
    :func:`breastus_cli.data.imaging.resize_grey`, the same function the training cache uses.
    (``tf`` is accepted for callers that pass it; it is not needed.)"""
    return resize_grey(image, size)[..., None].astype(np.float32)


def upsample(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (S, S) or (S, S, 1) map (probabilities, a heat map) at the image's original
    (height, width): PIL bilinear on float32."""
    height, width = shape
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 3:
        prob = prob[..., 0]
    return np.asarray(Image.fromarray(np.ascontiguousarray(prob))
                      .resize((int(width), int(height)), Image.BILINEAR))


def to_original_size(prob: np.ndarray, shape: tuple[int, int], threshold: float,
                     postprocess: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """A segmenter's probability map at the image's original (height, width) and the lesion
    mask there (``p >= threshold`` after upsampling, as evaluate scores it, then the run's
    ``postprocess`` method: :mod:`breastus_cli.engine.apply.postprocess`)."""
    big = upsample(prob, shape)
    return big, apply(big >= threshold, postprocess)


def lesion_crop(image: np.ndarray, mask: np.ndarray,
                margin: float) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """A lesion-centred classifier's view of ``image``: the crop around ``mask``'s lesion
    (data/roi.py's square box plus margin), the box, and whether a lesion was found (an
    empty mask gives the whole image)."""
    box, found = roi_box(mask, margin)
    return crop(image, box), box, found
