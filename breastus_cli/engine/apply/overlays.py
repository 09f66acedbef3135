"""Fast overlay images for batch prediction (numpy + PIL; no matplotlib in the hot path):
lesion probability as a red tint, the thresholded mask's contour in yellow, and Grad-CAM heat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None].astype(np.float32), 3, axis=2)


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boundary pixels of a boolean mask (the mask minus its erosion)."""
    if not mask.any():
        return mask
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def lesion_overlay(image: np.ndarray, probability: np.ndarray, mask: np.ndarray,
                   path: str | Path) -> Path:
    """Grey image, red tint proportional to the lesion probability, yellow mask contour."""
    rgb = _grey_rgb(image)
    alpha = np.clip(probability, 0.0, 1.0)[..., None] * 0.45
    rgb = rgb * (1.0 - alpha) + np.array([255.0, 0.0, 0.0]) * alpha
    edge = contour(mask, width=max(1, round(min(mask.shape) / 250)))
    rgb[edge] = (255.0, 230.0, 0.0)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return Path(path)


def _jet(values: np.ndarray) -> np.ndarray:
    """A small jet-like colour map for values in [0, 1] (blue -> cyan -> yellow -> red)."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.stack([red, green, blue], axis=-1) * 255.0


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, path: str | Path) -> Path:
    """Grad-CAM heat (0..1, image size) blended over the grey image."""
    rgb = _grey_rgb(image)
    alpha = (0.2 + 0.4 * np.clip(heat, 0.0, 1.0))[..., None]
    rgb = rgb * (1.0 - alpha) + _jet(heat) * alpha
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return Path(path)
