"""Lesion-centred crops: a square box around the lesion mask plus a margin.

The box is square (side = the lesion's longer side x (1 + 2 x margin)) so that resizing the
crop to the classifier's square input keeps the lesion's shape: taller-than-wide is itself a
sign of malignancy, and a non-square crop squashed to a square would erase it. A box that
would leave the image is shifted back inside, and clipped only when the image is too small.
An empty mask gives the whole image (and says so), so a missed lesion never crashes a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def roi_box(mask: np.ndarray, margin: float = 0.2) -> tuple[Box, bool]:
    """The square crop box around ``mask`` and whether the mask had a lesion at all.

    >>> m = np.zeros((100, 100), bool); m[40:50, 30:60] = True
    >>> roi_box(m, 0.0)
    ((30, 30, 60, 60), True)
    """
    if margin < 0:
        raise ValueError("margin must be >= 0")
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return (0, 0, width, height), False
    y0, y1 = int(rows.min()), int(rows.max()) + 1
    x0, x1 = int(cols.min()), int(cols.max()) + 1
    side = int(round(max(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin)))
    side = max(side, 1)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return _order(_span(cx, side, width), _span(cy, side, height)), True


def _span(centre: float, side: int, limit: int) -> tuple[int, int]:
    """[start, end) of length ``side`` centred on ``centre``, shifted inside [0, limit)."""
    if side >= limit:
        return 0, limit
    start = int(round(centre - side / 2.0))
    start = min(max(start, 0), limit - side)
    return start, start + side


def _order(xs: tuple[int, int], ys: tuple[int, int]) -> Box:
    return xs[0], ys[0], xs[1], ys[1]


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def write_roi_crops(frame, folder: Path, margin: float) -> list[str]:  # frame: DataFrame
    """Crops of each case's image around its ground-truth lesion mask, written once."""
    from breastus_cli.data.imaging import read_luminance, read_mask, save_png

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case_id, image_path, mask_path in zip(frame["case_id"], frame["image_path"],
                                              frame["mask_path"]):
        target = folder / f"{case_id}.png"
        if not target.is_file():
            image = read_luminance(image_path)
            mask = read_mask([mask_path]) if mask_path else np.zeros(image.shape, bool)
            box, _ = roi_box(mask, margin)
            save_png(crop(image, box), target)
        paths.append(str(target))
    return paths
