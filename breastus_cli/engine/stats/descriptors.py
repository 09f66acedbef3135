"""Lesion descriptors: the BI-RADS words (size, orientation, shape, margin, echo pattern,
posterior features) as numbers computed from a lesion mask and the image's luminance.

See ``../shared/docs/lesion-descriptors.md``. Pure numpy/scipy/scikit-image (no TensorFlow).
The mask is described at its native resolution; with several connected components the
largest is described and ``components`` says how many there were.

>>> describe(mask, image, pixel_size_mm=0.1)["circularity"]  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from breastus_cli.errors import InputError

#: unit-free model features, in this order (the fused classifier relies on it)
DESCRIPTORS: tuple[str, ...] = (
    "taller_than_wide", "circularity", "solidity", "eccentricity", "ellipse_residual",
    "irregularity", "lobulation", "extent", "echo_contrast", "heterogeneity", "posterior",
)
#: size keys: in mm when the pixel size is known, else in px (never both from :func:`describe`)
SIZE_MM = ("width_mm", "height_mm", "area_mm2")
SIZE_PX = ("width_px", "height_px", "area_px")
EXTRA = ("log_area", "not_parallel", "components")
#: every column :func:`describe_both_units` fills (predict's fixed predictions.csv columns)
ALL_COLUMNS: tuple[str, ...] = (*DESCRIPTORS, *EXTRA, *SIZE_PX, *SIZE_MM)

RING = 0.10        # echo ring: dilation by this share of the equivalent diameter
OPENING = 0.08     # irregularity: opening disc radius, share of the equivalent diameter
LOBE_DEPTH = 0.05  # lobulation: a defect counts when deeper than this share of the diameter
LOBE_MIN_PX = 2.0  # ... and at least this many pixels deep (pixel-grid noise is ~1 px)


def _pixel(pixel_size_mm: float | None) -> float | None:
    if pixel_size_mm is None:
        return None
    try:
        value = float(pixel_size_mm)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _empty(pixel: float | None, both: bool) -> dict[str, float]:
    sizes = (*SIZE_PX, *SIZE_MM) if both else (SIZE_MM if pixel else SIZE_PX)
    out = {k: math.nan for k in (*DESCRIPTORS, *sizes, "log_area", "not_parallel")}
    out["components"] = 0.0
    return out


def _largest(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected component of ``mask`` and the number of components."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask, n
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes)), n


def _perimeter(mask: np.ndarray) -> float:
    from skimage.measure import perimeter

    return float(perimeter(mask))  # regionprops' perimeter (4-neighbourhood)


def _opened(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary opening with a Euclidean disc of ``radius`` (through distance transforms: fast
    for large discs). ``mask`` needs a background border of one pixel: the opened set
    stays inside it."""
    from scipy.ndimage import distance_transform_edt

    eroded = distance_transform_edt(mask) > radius
    if not eroded.any():
        return eroded
    return distance_transform_edt(~eroded) <= radius


def _hull(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The convex hull of the pixels (squares) of ``image``, filled, and its facets
    (``normal . (row, col) + offset <= 0`` inside); as regionprops' ``image_convex``, but
    through the outline pixels' edge midpoints and a fill by half-planes (several times faster)."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial import ConvexHull, QhullError

    edge = image & ~binary_erosion(image)
    rows, cols = np.nonzero(edge)
    points = np.concatenate([np.stack([rows + dr, cols + dc], 1)  # edge midpoints
                              for dr, dc in ((-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5))])
    try:
        hull = ConvexHull(points)
    except QhullError:  # flat: a line of pixels is its own hull
        return image.copy(), None
    # fill row by row: each facet bounds the columns from one side (n_r r + n_c c + d <= 0)
    n_r, n_c, d = (hull.equations[:, k] for k in range(3))
    rows = np.arange(image.shape[0], dtype=np.float64)[:, None]
    bound = -(n_r * rows + d)  # n_c * c <= bound
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = bound / n_c
    eps = 1e-9
    low = np.where(n_c < -eps, limit, -np.inf).max(axis=1)
    high = np.where(n_c > eps, limit, np.inf).min(axis=1)
    flat = np.abs(n_c) <= eps  # facets along a row bound the rows, not the columns
    if flat.any():
        high[(bound[:, flat] < -eps).any(axis=1)] = -np.inf
    cols = np.arange(image.shape[1], dtype=np.float64)[None, :]
    filled = (cols >= low[:, None] - eps) & (cols <= high[:, None] + eps)
    return filled | image, hull.equations


def _lobes(image: np.ndarray, hull: np.ndarray, facets: np.ndarray | None,
           diameter: float) -> int:
    """Convexity defects (4-connected regions of hull minus lesion) deeper than
    ``LOBE_DEPTH`` of the equivalent diameter and ``LOBE_MIN_PX``; depth = the largest
    distance of a defect pixel to the hull's outline."""
    from scipy.ndimage import find_objects, label

    defects = hull & ~image
    if facets is None or not defects.any():
        return 0
    need = max(LOBE_MIN_PX, LOBE_DEPTH * diameter)
    labels, n = label(defects)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = find_objects(labels)
    lobes = 0
    for k in np.nonzero(sizes[1:] >= need)[0] + 1:  # shallower ones cannot have enough pixels
        box = boxes[k - 1]
        rows, cols = np.nonzero(labels[box] == k)
        rows, cols = rows + box[0].start, cols + box[1].start
        # inside a convex polygon, the distance to its outline is the one to the nearest facet
        depth = -(facets[:, 0:1] * rows + facets[:, 1:2] * cols + facets[:, 2:3]).max(axis=0)
        lobes += int(depth.max() > need)
    return lobes


def _geometry(lesion: np.ndarray) -> dict[str, float]:
    """Shape and margin numbers of one component (cropped to its box)."""
    from skimage.measure import regionprops

    diameter = math.sqrt(4 * float(lesion.sum()) / math.pi)
    pad = 1  # background border: enough for the opening (it stays inside the lesion)
    local = np.pad(lesion, pad)
    props = regionprops(local.astype(np.uint8))[0]
    area = float(props.area)
    r0, c0, r1, c1 = props.bbox
    height, width = r1 - r0, c1 - c0
    perimeter = float(props.perimeter)
    circularity = min(1.0, 4 * math.pi * area / perimeter**2) if perimeter > 0 else math.nan

    # ellipse with the same second moments: Mahalanobis distance^2 <= 4 from the centroid
    mu = props.moments_central
    cov = np.array([[mu[2, 0], mu[1, 1]], [mu[1, 1], mu[0, 2]]]) / mu[0, 0]
    rc, cc = props.centroid
    er, ec = 2 * math.sqrt(max(cov[0, 0], 0.0)), 2 * math.sqrt(max(cov[1, 1], 0.0))
    g0, g1 = math.floor(min(r0, rc - er)) - 1, math.ceil(max(r1, rc + er)) + 1
    h0, h1 = math.floor(min(c0, cc - ec)) - 1, math.ceil(max(c1, cc + ec)) + 1
    dr = np.arange(g0, g1, dtype=np.float64)[:, None] - rc
    dc = np.arange(h0, h1, dtype=np.float64)[None, :] - cc
    det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
    if det > 1e-12:
        inv = np.array([[cov[1, 1], -cov[0, 1]], [-cov[0, 1], cov[0, 0]]]) / det
        ellipse = inv[0, 0] * dr**2 + 2 * inv[0, 1] * dr * dc + inv[1, 1] * dc**2 <= 4.0
        grid = np.zeros(ellipse.shape, bool)
        grid[r0 - g0:r1 - g0, c0 - h0:c1 - h0] = props.image
        residual = float(np.logical_xor(grid, ellipse).sum()) / area
    else:  # a line of pixels has no ellipse
        residual = math.nan

    opened = _opened(local, max(1.0, OPENING * diameter))
    smooth = _perimeter(opened) if opened.any() else 0.0
    irregularity = max(1.0, perimeter / smooth) if smooth > 0 else math.nan

    hull, facets = _hull(np.pad(props.image, 1))
    solidity = area / float(hull.sum())
    lobes = _lobes(np.pad(props.image, 1), hull, facets, diameter)
    return {
        "taller_than_wide": height / width, "circularity": circularity,
        "solidity": solidity, "eccentricity": float(props.eccentricity),
        "ellipse_residual": residual, "irregularity": irregularity, "lobulation": float(lobes),
        "extent": float(props.extent), "_width": float(width), "_height": float(height),
        "_area": area, "_diameter": diameter,
    }


def _intensity(component: np.ndarray, mask: np.ndarray, image: np.ndarray,
               box: tuple[int, int, int, int], diameter: float) -> dict[str, float]:
    """Echo contrast (ring - inside), heterogeneity (std inside), posterior (band - inside)."""
    from scipy.ndimage import distance_transform_edt

    r0, c0, r1, c1 = box
    height, width = image.shape
    inside = image[component].astype(np.float64)
    mean_in = float(inside.mean())
    radius = max(1.0, RING * diameter)
    pad = math.ceil(radius) + 1
    a0, a1 = max(0, r0 - pad), min(height, r1 + pad)
    b0, b1 = max(0, c0 - pad), min(width, c1 + pad)
    near = distance_transform_edt(~component[a0:a1, b0:b1]) <= radius
    ring = near & ~mask[a0:a1, b0:b1]
    values = image[a0:a1, b0:b1][ring]
    echo = float(values.mean()) - mean_in if values.size else math.nan
    band = image[r1:min(height, r1 + max(1, round((r1 - r0) / 2))), c0:c1]
    posterior = float(band.mean()) - mean_in if band.size else math.nan
    return {"echo_contrast": echo, "heterogeneity": float(inside.std()), "posterior": posterior}


def _describe(mask: np.ndarray, image: np.ndarray | None, pixel: float | None,
              both: bool) -> dict[str, float]:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise InputError(f"a lesion mask must be a 2-D array (got shape {mask.shape})")
    if image is not None:
        image = np.asarray(image)
        if image.shape != mask.shape:
            raise InputError(f"image {image.shape} and mask {mask.shape} differ in size")
    if not mask.any():
        return _empty(pixel, both)
    component, n = _largest(mask)
    rows, cols = np.nonzero(component)
    box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    geometry = _geometry(component[box[0]:box[2], box[1]:box[3]])
    width, height, area = geometry.pop("_width"), geometry.pop("_height"), geometry.pop("_area")
    diameter = geometry.pop("_diameter")
    out: dict[str, float] = dict(geometry)
    if image is not None:
        out.update(_intensity(component, mask, image, box, diameter))
    else:
        out.update({"echo_contrast": math.nan, "heterogeneity": math.nan, "posterior": math.nan})
    out = {k: out[k] for k in DESCRIPTORS}
    if pixel is None or both:
        out.update({"width_px": width, "height_px": height, "area_px": area})
    if pixel is not None:
        out.update({"width_mm": width * pixel, "height_mm": height * pixel,
                    "area_mm2": area * pixel**2})
    elif both:
        out.update({k: math.nan for k in SIZE_MM})
    out["log_area"] = math.log(area * pixel**2 if pixel is not None else area)
    out["not_parallel"] = 1.0 if out["taller_than_wide"] > 1 else 0.0
    out["components"] = float(n)
    return out


def describe(mask: np.ndarray, image: np.ndarray | None = None,
             pixel_size_mm: float | None = None) -> dict[str, float]:
    """Descriptors of the largest lesion in ``mask`` (H, W; nonzero = lesion).

    Returns every name in :data:`DESCRIPTORS` plus the size as ``width_mm``, ``height_mm``,
    ``area_mm2`` when ``pixel_size_mm`` is a positive finite number, else ``width_px``,
    ``height_px``, ``area_px`` (bounding box and pixel count; only one kind is present);
    ``log_area`` (natural log of the area in mm^2 when the pixel size is known, else in px),
    ``not_parallel`` (1.0 when taller than wide) and ``components`` (connected components).
    The intensity descriptors (``echo_contrast``, ``heterogeneity``, ``posterior``) are in the
    image's grey levels and need ``image``, the luminance the models see (same H, W), else NaN.
    Definitions: taller_than_wide = box height / width; circularity = 4 pi area / perimeter^2
    (<= 1); ellipse_residual = |lesion xor same-moment ellipse| / area; irregularity =
    perimeter / perimeter after an opening with a disc of 8% of the equivalent diameter (>= 1);
    lobulation = connected regions of convex hull minus lesion deeper than 5% of the
    equivalent diameter (and 2 px); echo_contrast = mean of a ring (10% of the equivalent
    diameter) outside minus mean inside; heterogeneity = std inside; posterior = mean of the
    band below the box (box width, half its height) minus mean inside. A value that is not
    defined is NaN (a lesion too thin for the opening, no band below the image's edge); an
    empty mask gives NaN everywhere and ``components`` 0.
    """
    return _describe(mask, image, _pixel(pixel_size_mm), both=False)


def describe_both_units(mask: np.ndarray, image: np.ndarray | None = None,
                        pixel_size_mm: float | None = None) -> dict[str, float]:
    """:func:`describe` with every key of :data:`ALL_COLUMNS`: the px sizes always, the mm
    sizes NaN when the pixel size is unknown (fixed columns for a CSV written in batches)."""
    return _describe(mask, image, _pixel(pixel_size_mm), both=True)


def describe_many(masks: Iterable[np.ndarray], images: Iterable[np.ndarray | None] | None,
                  pixel_sizes: Iterable[float | None] | None) -> Any:
    """One :func:`describe` row per case as a pandas DataFrame (``images`` / ``pixel_sizes``
    may be None for none known)."""
    import pandas as pd

    masks = list(masks)
    images = [None] * len(masks) if images is None else list(images)
    pixel_sizes = [None] * len(masks) if pixel_sizes is None else list(pixel_sizes)
    if not len(images) == len(pixel_sizes) == len(masks):
        raise InputError(f"{len(masks)} masks, {len(images)} images and {len(pixel_sizes)} "
                         "pixel sizes: give one of each per case")
    return pd.DataFrame([describe(m, i, p) for m, i, p in zip(masks, images, pixel_sizes)])


def agreement(table: Any) -> dict[str, dict[str, Any]]:
    """How far a segmenter's masks carry the ground truth's descriptors: per descriptor (and
    log_area), from a table with ``gt_<name>`` and ``pred_<name>`` columns (seg evaluate's
    descriptors.csv), the mean absolute error, the Spearman correlation and n (cases where
    both are finite)."""
    from scipy.stats import spearmanr

    block: dict[str, dict[str, Any]] = {}
    for name in (*DESCRIPTORS, "log_area"):
        gt = table.get(f"gt_{name}")
        pred = table.get(f"pred_{name}")
        if gt is None or pred is None:
            block[name] = {"mae": None, "spearman": None, "n": 0}
            continue
        gt, pred = gt.to_numpy(np.float64), pred.to_numpy(np.float64)
        both = np.isfinite(gt) & np.isfinite(pred)
        n = int(both.sum())
        rho = math.nan
        if n >= 3 and np.ptp(gt[both]) > 0 and np.ptp(pred[both]) > 0:
            rho = float(spearmanr(gt[both], pred[both]).statistic)
        block[name] = {"mae": float(np.abs(gt[both] - pred[both]).mean()) if n else math.nan,
                       "spearman": rho, "n": n}
    return block
