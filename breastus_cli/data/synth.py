"""Synthetic breast-ultrasound datasets in the exact BrEaST-Lesions_USG layout.

Tests, demos and benchmarks need data that no one has to download and that may be committed
nowhere: this module draws it. The output mimics the real TCIA release file for file::

    OUT/BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx
    OUT/BrEaST-Lesions_USG-images_and_masks/case001.png case001_tumor.png case007_other1.png ...
    OUT/synth.json    breastus's marker: only a folder holding it is replaced by --overwrite

What is drawn, and why:

* **Images** look like B-mode breast scans (speckle, skin / fat / glandular / muscle layers,
  depth attenuation, black outside a linear, trapezoid or sector field of view), so that the
  image pipeline meets realistic statistics.
* **Lesions differ by class as BI-RADS describes them**: benign = oval, circumscribed, parallel
  (wider than tall), fairly homogeneous, sometimes posterior enhancement; malignant = irregular,
  spiculated / angular / microlobulated, not parallel (taller than wide), markedly hypoechoic and
  heterogeneous, often posterior shadowing. Everything is jittered so the task is learnable but
  not trivial. The tumor mask is exactly the drawn lesion.
* **The real data's quirks are reproduced** (deterministically) because ``prepare`` must handle
  them: tinted RGB, fully transparent areas with non-black RGB hidden under alpha 0, mask
  pixels with alpha 75 (the real case010), '&'-joined file names and descriptor labels, BIRADS
  mixing ints and strings, 'not available' ages, normal cases without a mask.

Everything is seeded from ``numpy.random.default_rng``/``SeedSequence`` (no global state, no
clock), so the same settings give byte-identical PNGs and the same workbook values.
This module must never import TensorFlow (``synth`` runs on machines and in tests without it).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit

from breastus_cli import __version__
from breastus_cli.atomic import write_json
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import SYNTH_FORMAT, claim, is_empty, marker_name

# --------------------------------------------------------------------------------------------
# The real layout
# --------------------------------------------------------------------------------------------

WORKBOOK_NAME = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
IMAGE_DIR_NAME = "BrEaST-Lesions_USG-images_and_masks"
SHEET_NAME = "BrEaST-Lesions-USG clinical dat"  # Excel cut the real name at 31 characters
DICTIONARY_SHEET = "Data Dictionary"

COLUMNS: tuple[str, ...] = (
    "CaseID", "Image_filename", "Mask_tumor_filename", "Mask_other_filename", "Pixel_size",
    "Age", "Tissue_composition", "Signs", "Symptoms", "Shape", "Margin", "Echogenicity",
    "Posterior_features", "Halo", "Calcifications", "Skin_thickening", "Interpretation",
    "BIRADS", "Verification", "Diagnosis", "Classification",
)

# The real 'Data Dictionary' sheet: columns 'type' and 'description'; the BI-RADS descriptor
# rows after 'Shape' have no description there (one merged cell in the original).
_DESCRIPTOR_NOTE = "BI-RADS descriptor"
DATA_DICTIONARY: tuple[tuple[str, str | None], ...] = (
    ("Case_ID", "unique identifier"),
    ("Image_filename", "filename(s) of ultrasound b-mode image(s)"),
    ("Mask_tumor_filename", "filename(s) of binary mask overlaying a tumor"),
    ("Mask_other_filename",
     "filename(s) of binary mask overlaying other suspicious lesions in the image (e.g. cysts)"),
    ("Pixel_size", ("pixel size of the image in centimeters (allows calculating the physical "
                    "size of objects in the image)")),
    ("Age", "age of patient"),
    ("Tissue_composition", "breast tissue composition assessed during examination"),
    ("Signs", "objective observable abnormalities perceived by physician"),
    ("Symptoms", "subjective experiences reported by patient"),
    ("Shape", _DESCRIPTOR_NOTE),
    ("Margin", None),
    ("Echogenicity", None),
    ("Posterior_features", None),
    ("Halo", None),
    ("Calcifications", None),
    ("Skin_thickening", None),
    ("Interpretation", "image interpretation for mass differentiation"),
    ("BIRADS", "BI-RADS category"),
    ("Verification", "confirmed method for mass classification"),
    ("Diagnosis", "histological type of mass"),
    ("Classification", "lesion type (benign or malignant)"),
)

CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")

# Real proportions (BrEaST, 256 cases) the defaults follow.
_REAL_NORMAL_FRACTION = 4 / 256
_TINTED_FRACTION = 120 / 256
_TRANSPARENT_FRACTION = 31 / 256
_HIDDEN_RGB_SHARE = 7 / 31  # of the transparent ones
_OTHER_MASK_FRACTION = 0.05
_PIXEL_SIZE_RANGE = (0.00434, 0.01389)  # cm per pixel, the real range
_MAX_SIDE_LIMIT = 4096  # a synthetic scan larger than this is a typo, not a wish
NA = "not available"
NOT_APPLICABLE = "not applicable"


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass
class SynthSettings:
    """What to draw. Option names in error messages are the CLI's (``--cases``, ...)."""

    out: Path
    cases: int = 60
    seed: int = 0
    normal: int | None = None  # default max(1, round(cases * 4/256)), like the real 4/256
    malignant_fraction: float = 0.39  # of the non-normal cases (real: 98/252)
    min_side: int = 128
    max_side: int = 256
    overwrite: bool = False


@dataclass
class SynthResult:
    """Where the dataset went and what it holds."""

    out: Path
    workbook: Path
    image_dir: Path
    counts: dict[str, int]
    other_masks: int
    seconds: float


def make_synthetic_breast(settings: SynthSettings) -> SynthResult:
    """Draw a synthetic BrEaST-layout dataset into ``settings.out`` and return a summary.

    The dataset is built in a temporary folder beside ``out`` and renamed into place at the
    end, so an interrupted run never leaves half a dataset behind.

    Raises:
        UsageError: a setting is out of range (the message names the CLI option).
        InputError: ``out`` exists and is not empty while ``overwrite`` is false, or
            ``overwrite`` would delete something that is not a dataset.
    """
    started = time.perf_counter()
    n_benign, n_malignant, n_normal = _validate(settings)
    out = Path(settings.out).expanduser()
    _check_target(out, settings.overwrite)

    rng = np.random.default_rng(settings.seed)
    plans = _plan_cases(rng, settings.cases, n_benign, n_malignant, n_normal)
    # One independent child stream per case: a case's pixels do not depend on how many random
    # numbers the cases before it consumed.
    child_seeds = np.random.SeedSequence(settings.seed).spawn(len(plans))

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".synth-tmp", dir=out.parent)
        )
    except OSError as exc:
        raise InputError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        image_dir = staging / IMAGE_DIR_NAME
        image_dir.mkdir()
        rows: list[dict[str, Any]] = []
        other_masks = 0
        for plan, child in zip(plans, child_seeds, strict=True):
            case_rng = np.random.default_rng(child)
            drawn = _draw_case(case_rng, plan, settings.min_side, settings.max_side)
            stem = case_stem(plan.case_id, settings.cases)
            _save_rgba(drawn.rgba, image_dir / f"{stem}.png")
            tumor_name: str | None = None
            if drawn.tumor_mask is not None:
                tumor_name = f"{stem}_tumor.png"
                _save_rgba(drawn.tumor_mask, image_dir / tumor_name)
            other_names = []
            for k, other in enumerate(drawn.other_masks, start=1):
                name = f"{stem}_other{k}.png"
                _save_rgba(other, image_dir / name)
                other_names.append(name)
            other_masks += len(other_names)
            rows.append(
                _clinical_row(case_rng, plan, drawn.lesion, f"{stem}.png", tumor_name, other_names)
            )
        _write_workbook(rows, staging / WORKBOOK_NAME)
        write_json(staging / marker_name("synth"), {
            "format": SYNTH_FORMAT, "breastus_version": __version__, "cases": settings.cases,
            "seed": settings.seed})
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    counts = {"benign": n_benign, "malignant": n_malignant, "normal": n_normal}
    return SynthResult(
        out=out,
        workbook=out / WORKBOOK_NAME,
        image_dir=out / IMAGE_DIR_NAME,
        counts=counts,
        other_masks=other_masks,
        seconds=time.perf_counter() - started,
    )


def case_stem(case_id: int, total: int) -> str:
    """File stem of a case as BrEaST names it: ``case007``; 4+ digits only beyond 999 cases."""
    return f"case{case_id:0{max(3, len(str(total)))}d}"


# --------------------------------------------------------------------------------------------
# Settings, target folder, plan
# --------------------------------------------------------------------------------------------


def _validate(settings: SynthSettings) -> tuple[int, int, int]:
    """Check the settings and return the class counts (benign, malignant, normal)."""
    cases = settings.cases
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 4:
        raise UsageError(f"--cases must be an integer >= 4 (got {cases!r})")
    if isinstance(settings.seed, bool) or not isinstance(settings.seed, (int, np.integer)) \
            or settings.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer (got {settings.seed!r})")
    frac = settings.malignant_fraction
    if not isinstance(frac, (int, float)) or not math.isfinite(frac) or not 0.0 < frac < 1.0:
        raise UsageError(
            f"--malignant-fraction must be strictly between 0 and 1 (got {frac!r})"
        )
    if not isinstance(settings.min_side, (int, np.integer)) or settings.min_side < 32:
        raise UsageError(f"--min-side must be an integer >= 32 (got {settings.min_side!r})")
    max_side = settings.max_side
    if not isinstance(max_side, (int, np.integer)) or max_side < settings.min_side:
        raise UsageError(
            f"--max-side must be >= --min-side ({settings.min_side}); got {settings.max_side!r}"
        )
    if settings.max_side > _MAX_SIDE_LIMIT:
        raise UsageError(f"--max-side must be <= {_MAX_SIDE_LIMIT} (got {settings.max_side})")

    if settings.normal is None:
        normal = max(1, round(cases * _REAL_NORMAL_FRACTION))
    else:
        normal = settings.normal
        # Both lesion classes must be present, or the dataset cannot train a classifier.
        if isinstance(normal, bool) or not isinstance(normal, (int, np.integer)) \
                or not 0 <= normal <= cases - 2:
            raise UsageError(
                f"--normal must be an integer between 0 and --cases - 2 ({cases - 2}); "
                f"got {normal!r}"
            )
    lesions = cases - normal
    malignant = min(max(1, round(lesions * frac)), lesions - 1)
    return lesions - malignant, malignant, int(normal)


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; ``overwrite`` replaces only a folder
    synth wrote (its synth.json), never one that merely looks like a BrEaST copy."""
    if is_empty(out):
        return
    claim(out, "synth", option="")  # one line, exit 2: a file, someone else's folder, a link out
    if not overwrite:
        raise InputError(f"{out} exists and is not empty; use --overwrite to replace it",
                         hint="or choose another --out")


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder onto ``out`` (both on one file system)."""
    if out.is_dir() and any(out.iterdir()):
        # Move the old dataset aside first, so ``out`` is never half deleted; then drop it.
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, aside / "old")
        try:
            os.replace(staging, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.replace(aside / "old", out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()  # empty: rename(2) could replace it, but be explicit
        os.replace(staging, out)


@dataclass
class _Plan:
    """What one case must contain, decided up front so quotas are exact."""

    case_id: int
    label: str
    tinted: bool = False
    transparent: bool = False
    hidden_rgb: bool = False
    alpha75: bool = False
    n_other: int = 0


def _plan_cases(
    rng: np.random.Generator, cases: int, n_benign: int, n_malignant: int, n_normal: int
) -> list[_Plan]:
    """Shuffle the classes over case ids and assign every quirk to exact, seeded cases."""
    labels = np.array(["benign"] * n_benign + ["malignant"] * n_malignant + ["normal"] * n_normal)
    labels = labels[rng.permutation(cases)]
    plans = [_Plan(case_id=i + 1, label=str(lab)) for i, lab in enumerate(labels)]
    lesion_idx = [i for i, p in enumerate(plans) if p.label != "normal"]
    big = cases >= 10  # from 10 cases on, every quirk is guaranteed at least once

    for i in rng.permutation(cases)[: round(cases * _TINTED_FRACTION)]:
        plans[i].tinted = True
    n_transparent = round(cases * _TRANSPARENT_FRACTION)
    if big:
        n_transparent = max(2, n_transparent)
    transparent = rng.permutation(cases)[:n_transparent]
    n_hidden = round(n_transparent * _HIDDEN_RGB_SHARE)
    if big:
        n_hidden = max(1, n_hidden)
    for k, i in enumerate(transparent):
        plans[i].transparent = True
        plans[i].hidden_rgb = k < n_hidden

    if lesion_idx:
        order = rng.permutation(lesion_idx)
        if big:
            plans[int(order[0])].alpha75 = True
        n_other = round(len(lesion_idx) * _OTHER_MASK_FRACTION)
        n_multi = 0
        if big:
            n_other = max(2, n_other)
            n_multi = max(1, n_other // 3)
        chosen = rng.permutation(lesion_idx)[:n_other]
        for k, i in enumerate(chosen):
            plans[int(i)].n_other = 2 if k < n_multi else 1
    return plans


# --------------------------------------------------------------------------------------------
# Drawing one case
# --------------------------------------------------------------------------------------------


@dataclass
class _Lesion:
    """The BI-RADS descriptors of the drawn lesion (they become workbook cells)."""

    shape: str = NOT_APPLICABLE
    margin: str = NOT_APPLICABLE
    echogenicity: str = NOT_APPLICABLE
    posterior: str = NOT_APPLICABLE
    halo: str = NOT_APPLICABLE
    calcifications: str = NOT_APPLICABLE
    tissue: str = NA
    skin_thickening: str = "no"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Drawn:
    """One drawn case: RGBA image, RGBA masks and the descriptors for its workbook row."""

    rgba: np.ndarray
    tumor_mask: np.ndarray | None
    other_masks: list[np.ndarray]
    lesion: _Lesion


def _pick(rng: np.random.Generator, options: dict[Any, float]) -> Any:
    """Choose one key of ``options`` with probability proportional to its weight."""
    keys = list(options)
    weights = np.array([options[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation.

    Wide filters are the generator's main cost on large images, so along an axis with a large
    sigma the noise is drawn on a coarser grid, filtered there and linearly upsampled: the field
    is smooth at that scale anyway, and the cost stays flat as images grow.
    """
    sy, sx = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    fy, fx = max(1, int(sy / 2.0)), max(1, int(sx / 2.0))
    h, w = shape
    coarse = rng.standard_normal((-(-h // fy) + 2, -(-w // fx) + 2)).astype(np.float32)
    field = ndimage.gaussian_filter(coarse, (sy / fy, sx / fx))
    if fy > 1 or fx > 1:
        field = ndimage.zoom(field, (fy, fx), order=1, grid_mode=False)
    return _unit(field[:h, :w])


def _unit(values: np.ndarray) -> np.ndarray:
    """Scale to unit standard deviation (unchanged when constant)."""
    std = float(values.std())
    return values / std if std > 0 else values


def _draw_case(rng: np.random.Generator, plan: _Plan, min_side: int, max_side: int) -> _Drawn:
    """Draw the image, its masks and the descriptors of one case."""
    # Width and height drawn independently; real scans are mostly wider than tall.
    s1, s2 = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    w, h = (max(s1, s2), min(s1, s2)) if rng.random() < 0.85 else (min(s1, s2), max(s1, s2))

    lesion = _Lesion()
    lesion.tissue = _pick(rng, {
        "heterogeneous: predominantly fat": 79, "heterogeneous: predominantly fibroglandular": 55,
        NA: 49, "homogeneous: fibroglandular": 42, "homogeneous: fat": 24,
        "lactating&homogeneous: fibroglandular": 4, "lactating": 1,
    })
    lesion.skin_thickening = "yes" if rng.random() < (0.1 if plan.label == "malignant" else 0.04) \
        else "no"

    # A transparent border needs a non-rectangular field of view to hide.
    kind = _pick(rng, {"trapezoid": 0.6, "sector": 0.4} if plan.transparent
                 else {"linear": 0.45, "trapezoid": 0.35, "sector": 0.2})
    inside, depth, top = _field_of_view(rng, h, w, kind)
    echo = _tissue(rng, h, w, top, lesion)

    tumor: np.ndarray | None = None
    factor = np.ones((h, w), dtype=np.float32)
    if plan.label != "normal":
        tumor, factor = _add_lesion(rng, echo, inside, plan.label, lesion)
    others: list[np.ndarray] = []
    for _ in range(plan.n_other):
        others.append(_add_other(rng, echo, inside, tumor, others))
    echo *= factor

    # Depth attenuation (what time-gain compensation leaves of it): deep tissue is darker.
    attenuation = float(rng.uniform(0.5, 1.3))
    echo *= np.exp(-attenuation * depth)
    # Speckle: multiplicative Rayleigh noise, slightly smoothed (laterally more: the beam is
    # wider than the pulse is long), which gives the typical grain of B-mode images.
    scale = max(h, w) / 256.0
    speckle = rng.rayleigh(1.0, size=(h, w)).astype(np.float32)
    speckle = ndimage.gaussian_filter(speckle, (0.6 * scale + 0.3, 1.2 * scale + 0.5))
    speckle /= float(speckle.mean())
    speckle = 1.0 + (speckle - 1.0) * float(rng.uniform(1.5, 2.0))
    image = echo * np.maximum(speckle, 0.05)
    # Soft-saturating display curve (like the scanner's log compression): mid-gray tissue,
    # few clipped pixels, as in the real scans (median gray ~55-90).
    gain = float(rng.uniform(0.6, 0.9))
    gray = 255.0 * (1.0 - np.exp(-gain * image))
    gray[~inside] = 0.0
    gray8 = np.rint(gray).astype(np.uint8)

    rgba = _to_rgba(rng, gray8, inside, plan)
    tumor_rgba = None
    if tumor is not None:
        tumor_rgba = _mask_rgba(tumor, alpha75=plan.alpha75)
    other_rgba = [_mask_rgba(m, alpha75=False) for m in others]
    return _Drawn(rgba=rgba, tumor_mask=tumor_rgba, other_masks=other_rgba, lesion=lesion)


def _field_of_view(
    rng: np.random.Generator, h: int, w: int, kind: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """The scanned area (True inside), a 0..1 depth map and the first scanned row."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top = int(rng.integers(1, max(2, h // 30) + 1))
    if kind == "linear":
        left = int(rng.integers(0, w // 14 + 1))
        right = w - int(rng.integers(0, w // 14 + 1))
        inside = (yy >= top) & (xx >= left) & (xx < right)
        depth = (yy - top) / max(1, h - top)
    elif kind == "trapezoid":
        cx = w / 2 + float(rng.uniform(-0.03, 0.03)) * w
        half_top = float(rng.uniform(0.28, 0.40)) * w
        half_bottom = float(rng.uniform(0.44, 0.52)) * w
        half = half_top + (half_bottom - half_top) * (yy - top) / max(1, h - top)
        inside = (yy >= top) & (np.abs(xx - cx) <= half)
        depth = (yy - top) / max(1, h - top)
    else:  # sector (convex probe): an annulus sector whose apex lies above the image
        cx = w / 2
        r0 = float(rng.uniform(0.35, 0.8)) * w
        apex_y = top - r0
        r1 = (h - 2) - apex_y
        half_angle = min(float(rng.uniform(0.45, 0.7)), math.asin(min(0.99, 0.5 * w / r1)))
        r = np.hypot(xx - cx, yy - apex_y)
        theta = np.arctan2(xx - cx, yy - apex_y)
        inside = (r >= r0) & (r <= r1) & (np.abs(theta) <= half_angle)
        depth = (r - r0) / max(1.0, r1 - r0)
    return inside, np.clip(depth, 0.0, 1.0).astype(np.float32), top


def _tissue(rng: np.random.Generator, h: int, w: int, top: int, lesion: _Lesion) -> np.ndarray:
    """Echogenicity of normal breast tissue: skin, subcutaneous fat, glandular tissue, muscle."""
    scale = max(h, w) / 256.0
    yy = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)

    def boundary(base: float, amp: float) -> np.ndarray:
        # Layer boundaries undulate gently across the image.
        wave = amp * h * np.sin(2 * np.pi * x / (w * float(rng.uniform(0.6, 1.6)))
                                + float(rng.uniform(0, 2 * np.pi)))
        wobble = ndimage.gaussian_filter1d(rng.standard_normal(w), 12 * scale)
        wobble *= 0.02 * h / max(1e-6, float(np.abs(wobble).max()))
        return (top + base * h + wave + wobble)[None, :].astype(np.float32)

    fatty = "fat" in lesion.tissue
    skin_factor = 2.2 if lesion.skin_thickening == "yes" else 1.0  # consistent with the sheet
    skin_end = boundary(float(rng.uniform(0.025, 0.045)) * skin_factor, 0.003)
    fat_end = boundary(float(rng.uniform(0.22, 0.38) if fatty else rng.uniform(0.10, 0.22)), 0.03)
    gland_end = boundary(float(rng.uniform(0.62, 0.85)), 0.04)

    def step(edge: np.ndarray, soft: float) -> np.ndarray:
        return expit((yy - edge) / soft)

    skin = 0.55
    # Fat: dark lobules; gland: brighter, horizontally streaky; muscle: fine striations.
    fat = float(rng.uniform(0.28, 0.38)) * (
        1 + 0.35 * _smooth_noise(rng, (h, w), (3 * scale, 6 * scale)))
    gland_level = float(rng.uniform(0.5, 0.62) if fatty else rng.uniform(0.6, 0.75))
    gland = gland_level * (1 + 0.28 * _smooth_noise(rng, (h, w), (1.2 * scale, 5 * scale)))
    stripes = np.sin(2 * np.pi * yy / (float(rng.uniform(5, 9)) * scale)
                     + 2.0 * _smooth_noise(rng, (h, w), (3 * scale, 20 * scale)))
    muscle = float(rng.uniform(0.3, 0.42)) * (1 + 0.25 * stripes)

    s1, s2, s3 = step(skin_end, 1.0), step(fat_end, 2.0 * scale), step(gland_end, 2.5 * scale)
    echo = skin * (1 - s1) + s1 * (fat * (1 - s2) + s2 * (gland * (1 - s3) + s3 * muscle))
    # Bright interfaces: the skin entry echo, the dermis/fat line and the pectoral fascia.
    echo += 0.9 * np.exp(-(((yy - top - 1.0) / 1.2) ** 2))
    echo += 0.35 * np.exp(-(((yy - skin_end) / 1.0) ** 2))
    echo += 0.55 * np.exp(-(((yy - gland_end) / (1.3 * scale)) ** 2))
    # Short bright horizontal dashes (ducts, Cooper's ligaments) through fat and gland.
    seeds = (rng.random((h, w)) < 0.006 / scale).astype(np.float32)
    dashes = ndimage.gaussian_filter(seeds, (0.6 * scale + 0.2, 9 * scale))
    dashes /= max(1e-6, float(np.percentile(dashes[dashes > 0], 99)) if dashes.any() else 1.0)
    echo += 0.9 * np.clip(dashes, 0, 1.5) * s1
    return np.clip(echo, 0.02, None).astype(np.float32)


@dataclass
class _Design:
    """A lesion's shape drawn once; retries that shrink it keep shape and descriptors."""

    ratio: float  # height / width of the base ellipse
    tilt: float  # radians
    features: list[str]
    harmonics: list[tuple[float, int, float]]  # amplitude, order, phase: lobulation
    lobules: tuple[float, int, float] | None  # microlobulation: amplitude, order, phase
    corners: tuple[np.ndarray, np.ndarray] | None  # angular: vertex angles, radii
    spikes: list[tuple[float, float, float]]  # spiculation: centre, half-width, length


def _lesion_design(rng: np.random.Generator, label: str, lesion: _Lesion) -> _Design:
    """Draw a lesion shape that follows BI-RADS for its class; set shape/margin on ``lesion``.

    Benign: oval (or round), circumscribed, parallel (wider than tall), smooth. Malignant:
    irregular, not parallel (taller than wide), with spiculated / angular / microlobulated /
    indistinct margins, whose names make up the Margin cell.
    """
    features: list[str] = []
    harmonics: list[tuple[float, int, float]] = []
    if label == "benign":
        shape = _pick(rng, {"oval": 0.78, "round": 0.12, "irregular": 0.10})
        ratio = float(rng.uniform(0.85, 1.0) if shape == "round" else rng.uniform(0.42, 0.8))
        tilt = float(rng.normal(0.0, 0.15))
        if shape == "irregular":
            margin = _pick(rng, {"not circumscribed - indistinct": 0.6,
                                 "not circumscribed - microlobulated": 0.4})
            features = margin.split(" - ")[1].split("&")
            # Gentle macro-lobulation.
            harmonics.append((float(rng.uniform(0.06, 0.1)), int(rng.integers(2, 4)),
                              float(rng.uniform(0, 2 * np.pi))))
        else:
            margin = "circumscribed" if rng.random() < 0.9 else "not circumscribed - indistinct"
            if margin != "circumscribed":
                features = ["indistinct"]
        # A faint, smooth departure from a perfect ellipse.
        harmonics += [(float(rng.uniform(0.0, 0.035)), k, float(rng.uniform(0, 2 * np.pi)))
                      for k in (2, 3)]
    else:
        shape = "irregular" if rng.random() < 0.93 else "round"
        ratio = float(rng.uniform(0.95, 1.1) if shape == "round" else rng.uniform(1.0, 1.6))
        tilt = float(rng.normal(0.0, 0.2))
        features = [f for f, p in (("spiculated", 0.5), ("angular", 0.4),
                                   ("microlobulated", 0.35), ("indistinct", 0.55))
                    if rng.random() < p]
        if not features:
            features = [str(_pick(rng, {"spiculated": 1, "angular": 1, "microlobulated": 1}))]
        margin = "not circumscribed - " + "&".join(features)
        # Overall irregularity (weaker for the few 'round' ones).
        amp = (0.0, 0.03) if shape == "round" else (0.03, 0.09)
        harmonics += [(float(rng.uniform(*amp)), k, float(rng.uniform(0, 2 * np.pi)))
                      for k in range(2, 6)]
    lesion.shape, lesion.margin = shape, margin

    lobules = corners = None
    spikes: list[tuple[float, float, float]] = []
    if "microlobulated" in features:
        lobules = (float(rng.uniform(0.05, 0.09)), int(rng.integers(9, 15)),
                   float(rng.uniform(0, 2 * np.pi)))
    if "angular" in features:
        n = int(rng.integers(5, 8))
        corners = (np.sort(rng.uniform(-np.pi, np.pi, size=n)), rng.uniform(0.75, 1.25, size=n))
    if "spiculated" in features:
        spikes = [(float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.04, 0.09)),
                   float(rng.uniform(0.15, 0.5))) for _ in range(int(rng.integers(6, 14)))]
    lesion.extra["features"] = features
    return _Design(ratio, tilt, features, harmonics, lobules, corners, spikes)


def _rasterize(design: _Design, width_px: float, max_height_px: float) -> np.ndarray:
    """The design as a boolean mask in its own square box, ``width_px`` wide (about).

    The boundary is r(t) = ellipse * (1 + perturbation(t)) in polar form around the centre:
    low harmonics for lobulation, narrow triangular spikes for spiculation, piecewise-linear
    radii for angular corners and rectified high harmonics for microlobulation.
    """
    # Semi-axes: a across, b down; keep the (possibly tall) lesion within the scan depth.
    a = width_px / 2.0
    b = a * design.ratio
    spike_room = 1.6 if design.spikes else 1.3
    if 2 * b * spike_room > max_height_px:
        shrink = max_height_px / (2 * b * spike_room)
        a, b = a * shrink, b * shrink
    a, b = max(a, 4.0), max(b, 3.0)

    half = math.ceil(max(a, b) * spike_room) + 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    cos_t, sin_t = math.cos(design.tilt), math.sin(design.tilt)
    u = xx * cos_t + yy * sin_t
    v = -xx * sin_t + yy * cos_t
    rho = np.hypot(u / a, v / b)
    t = np.arctan2(v / b, u / a)

    pert = np.zeros_like(t)
    for amp, k, phase in design.harmonics:
        pert += amp * np.cos(k * t + phase)
    if design.lobules is not None:
        amp, k, phase = design.lobules
        pert += amp * np.abs(np.sin(0.5 * k * t + phase))
    if design.corners is not None:
        angles, radii = design.corners
        pert += np.interp(t, angles, radii, period=2 * np.pi).astype(np.float32) - 1.0
    for centre, spread, length in design.spikes:
        d = np.abs(np.angle(np.exp(1j * (t - centre))))
        pert += length * np.clip(1.0 - d / spread, 0.0, None) ** 1.5
    shape_mask = rho <= 1.0 + pert
    # Keep one connected piece (spikes or lobes could in principle pinch off a speck).
    labels, n = ndimage.label(shape_mask)
    if n > 1:
        sizes = ndimage.sum(shape_mask, labels, range(1, n + 1))
        shape_mask = labels == (int(np.argmax(sizes)) + 1)
    return shape_mask


def _place(rng: np.random.Generator, shape_mask: np.ndarray, allowed: np.ndarray,
           y_range: tuple[float, float], tries: int = 60) -> tuple[int, int] | None:
    """Top-left corner where ``shape_mask`` fits wholly inside ``allowed``, or None."""
    h, w = allowed.shape
    sh, sw = shape_mask.shape
    if sh > h or sw > w:
        return None
    lo = int(max(0, min(h - sh, y_range[0] * h - sh / 2)))
    hi = int(max(lo, min(h - sh, y_range[1] * h - sh / 2)))
    for _ in range(tries):
        y0 = int(rng.integers(lo, hi + 1))
        x0 = int(rng.integers(0, w - sw + 1))
        if allowed[y0:y0 + sh, x0:x0 + sw][shape_mask].all():
            return y0, x0
    return None


def _add_lesion(rng: np.random.Generator, echo: np.ndarray, inside: np.ndarray, label: str,
                lesion: _Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Draw the lesion into ``echo`` and return its exact mask and the posterior-effect factor."""
    h, w = echo.shape
    scale = max(h, w) / 256.0
    margin_px = max(3, int(4 * scale))
    allowed = ndimage.binary_erosion(inside, iterations=margin_px)
    top_row = int(np.argmax(inside.any(axis=1)))
    scan_height = h - top_row

    # Malignant masses are larger on average in BrEaST; both span ~15-40% of the width.
    width = float(rng.uniform(0.15, 0.32) if label == "benign" else rng.uniform(0.22, 0.40)) * w
    design = _lesion_design(rng, label, lesion)
    placed = None
    for _ in range(8):  # shrink (same shape) until it fits the field of view
        shape_mask = _rasterize(design, width, 0.72 * scan_height)
        placed = _place(rng, shape_mask, allowed, (0.3, 0.7))
        if placed is not None:
            break
        width *= 0.85
    if placed is None:  # tiny or odd image: a small lesion in the middle always fits
        shape_mask = _rasterize(design, 0.1 * w, 0.3 * scan_height)
        placed = _place(rng, shape_mask, allowed, (0.2, 0.9), tries=400) or (
            max(0, (h - shape_mask.shape[0]) // 2), max(0, (w - shape_mask.shape[1]) // 2))
    y0, x0 = placed
    mask = np.zeros((h, w), dtype=bool)
    sh, sw = shape_mask.shape
    mask[y0:y0 + sh, x0:x0 + sw] = shape_mask[: h - y0, : w - x0]
    mask &= inside
    if not mask.any():  # cannot happen for sane sizes; keep the mask non-empty regardless
        depth_inside = ndimage.distance_transform_edt(inside)
        cy, cx = np.unravel_index(int(np.argmax(depth_inside)), depth_inside.shape)
        mask[max(0, cy - 2):cy + 3, max(0, cx - 3):cx + 4] = True
        mask &= inside

    features = lesion.extra["features"]
    local = float(echo[ndimage.binary_dilation(mask, iterations=margin_px) & ~mask].mean())

    # Internal echo pattern. Malignant: markedly hypoechoic, heterogeneous; benign: mildly
    # hypoechoic and homogeneous, or an anechoic cyst.
    if label == "benign":
        echogenicity = _pick(rng, {"hypoechoic": 55, "anechoic": 12, "heterogeneous": 12,
                                   "isoechoic": 8, "complex cystic/solid": 6, "hyperechoic": 5})
        level = {"hypoechoic": (0.38, 0.62), "anechoic": (0.03, 0.08),
                 "heterogeneous": (0.35, 0.55), "isoechoic": (0.7, 0.85),
                 "complex cystic/solid": (0.05, 0.1), "hyperechoic": (1.3, 1.6)}[echogenicity]
        hetero = 0.35 if echogenicity == "heterogeneous" else 0.12
    else:
        echogenicity = _pick(rng, {"hypoechoic": 75, "heterogeneous": 20,
                                   "complex cystic/solid": 5})
        level = (0.06, 0.22)
        hetero = float(rng.uniform(0.45, 0.8))
    lesion.echogenicity = echogenicity
    inner = local * float(rng.uniform(*level)) * (
        1 + hetero * _smooth_noise(rng, (h, w), (1.5 * scale + 1, 2.5 * scale + 1)))
    if echogenicity == "complex cystic/solid":
        # A solid (echogenic) nodule growing from the cyst wall.
        ys, xs = np.nonzero(mask)
        k = int(rng.integers(len(ys)))
        radius = max(2.0, 0.35 * math.sqrt(mask.sum() / math.pi))
        yy, xx = np.ogrid[0:h, 0:w]
        nodule = (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= radius**2
        inner = np.where(nodule, local * 0.6, inner)
    calc = "no"
    if rng.random() < (0.16 if label == "malignant" else 0.05):
        calc = "in a mass"
        dots = np.zeros((h, w), dtype=np.float32)
        ys, xs = np.nonzero(mask)
        picks = rng.integers(len(ys), size=int(rng.integers(3, 9)))
        dots[ys[picks], xs[picks]] = 1.0
        dots = ndimage.gaussian_filter(dots, 0.7 * scale + 0.3)
        inner = inner + 1.8 * dots / max(1e-6, float(dots.max()))
    lesion.calcifications = calc
    inner = np.clip(inner, 0.0, None)

    # Blend: sharp for circumscribed, fuzzy for indistinct, but the 50% contour stays the mask.
    soft = (1.6 * scale + 0.6) if "indistinct" in features else 0.5
    weight = ndimage.gaussian_filter(mask.astype(np.float32), soft)
    weight = np.where(mask, np.maximum(weight, 0.75), np.minimum(weight, 0.35))
    echo *= 1 - weight
    echo += weight * inner

    outside = ~mask
    dist = ndimage.distance_transform_edt(outside).astype(np.float32)
    halo = "no"
    if label == "malignant" and rng.random() < 0.45:
        # Echogenic halo: a bright, ragged rim of infiltrated tissue around the mass.
        halo = "yes"
        thick = float(rng.uniform(2.0, 4.0)) * scale + 1
        ragged = 1 + 0.5 * _smooth_noise(rng, (h, w), 1.5 * scale)
        echo += outside * local * 0.7 * np.exp(-dist / thick) * np.clip(ragged, 0, None)
    elif label == "benign" and rng.random() < 0.5:
        # Thin echogenic capsule of a circumscribed mass.
        echo += (outside & (dist <= 1.5)) * local * 0.35
    lesion.halo = halo

    # Posterior features: a vertical band below the lesion, as wide as the lesion.
    if label == "benign":
        posterior = ("enhancement" if echogenicity in ("anechoic", "complex cystic/solid")
                     else _pick(rng, {"no": 64, "enhancement": 26, "shadowing": 6,
                                      "combined": 4}))
    else:
        posterior = _pick(rng, {"shadowing": 66, "no": 20, "combined": 9, "enhancement": 5})
    lesion.posterior = posterior
    factor = _posterior_factor(rng, mask, posterior, label, scale)
    return mask, factor


def _posterior_factor(rng: np.random.Generator, mask: np.ndarray, posterior: str, label: str,
                      scale: float) -> np.ndarray:
    """Multiplicative map: shadowing (<1) or enhancement (>1) below the lesion."""
    h, w = mask.shape
    factor = np.ones((h, w), dtype=np.float32)
    cols = mask.any(axis=0)
    if posterior == "no" or not cols.any():
        if label == "benign" and rng.random() < 0.3:
            posterior = "edges"  # refractive edge shadows only; still recorded as 'no'
        else:
            return factor
    yy = np.arange(h, dtype=np.float32)[:, None]
    bottom = np.where(cols, h - 1 - np.argmax(mask[::-1], axis=0), 0).astype(np.float32)
    xs = np.nonzero(cols)[0]
    bottom[~cols] = np.interp(np.nonzero(~cols)[0], xs, bottom[cols])
    # Effects start at the lesion's lower border (soft edge) and run down the image;
    # enhancement fades with depth, shadows do not.
    below = expit((yy - bottom[None, :]) / (1.5 * scale + 0.5))
    band = ndimage.gaussian_filter1d(cols.astype(np.float32), 1.5 * scale + 0.5)
    left, right = int(xs[0]), int(xs[-1])
    if posterior == "edges":
        edge = np.zeros(w, dtype=np.float32)
        edge[[left, right]] = 1.0
        edge = ndimage.gaussian_filter1d(edge, 1.0 * scale + 0.5)
        edge /= max(1e-6, float(edge.max()))
        return factor * (1 - 0.45 * edge[None, :] * below)
    fade = np.exp(-np.clip(yy - bottom[None, :], 0, None) / (float(rng.uniform(0.25, 0.5)) * h))
    if posterior in ("shadowing", "combined"):
        strength = float(rng.uniform(0.5, 0.8))
        # Real shadows are streaky: some columns darker than others.
        streaks = 1.0 + 0.2 * _unit(ndimage.gaussian_filter1d(rng.standard_normal(w),
                                                              2.5 * scale + 1.0))
        shade = np.clip(band * streaks, 0.0, 1.0)
        if posterior == "combined":  # shadow under one part, enhancement under the other
            split = int(rng.integers(left, right + 1))
            shade[split:] = 0.0
            boost = band.copy()
            boost[:split] = 0.0
            factor *= 1 + float(rng.uniform(0.3, 0.6)) * boost[None, :] * below * fade
        factor *= 1 - strength * shade[None, :] * below
    else:  # enhancement: a brighter band that fades with depth
        factor *= 1 + float(rng.uniform(0.4, 0.8)) * band[None, :] * below * fade
    return factor


def _add_other(rng: np.random.Generator, echo: np.ndarray, inside: np.ndarray,
               tumor: np.ndarray | None, drawn: list[np.ndarray]) -> np.ndarray:
    """Draw a small extra structure (cyst or calcified spot) away from the lesion; its mask."""
    h, w = echo.shape
    scale = max(h, w) / 256.0
    blocked = np.zeros((h, w), dtype=bool)
    for m in ([tumor] if tumor is not None else []) + drawn:
        blocked |= m
    blocked = ndimage.binary_dilation(blocked, iterations=max(3, int(4 * scale)))
    allowed = ndimage.binary_erosion(inside, iterations=max(2, int(3 * scale))) & ~blocked

    placed = None
    radius = float(rng.uniform(0.035, 0.07)) * w
    for _ in range(6):
        ry, rx = max(2.5, radius * float(rng.uniform(0.6, 0.9))), max(3.0, radius)
        half_y, half_x = math.ceil(ry), math.ceil(rx)
        yy, xx = np.mgrid[-half_y:half_y + 1, -half_x:half_x + 1]
        blob = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
        placed = _place(rng, blob, allowed, (0.15, 0.95), tries=80)
        if placed is not None:
            break
        radius *= 0.75
    mask = np.zeros((h, w), dtype=bool)
    if placed is None:  # no room: take the allowed pixel deepest inside the free area
        free = ndimage.distance_transform_edt(allowed if allowed.any() else inside & ~blocked)
        cy, cx = np.unravel_index(int(np.argmax(free)), free.shape)
        mask[max(0, cy - 1):cy + 2, max(0, cx - 1):cx + 2] = True
    else:
        y0, x0 = placed
        mask[y0:y0 + blob.shape[0], x0:x0 + blob.shape[1]] = blob
    local = float(echo[ndimage.binary_dilation(mask, iterations=3) & ~mask].mean())
    if rng.random() < 0.6:  # a small simple cyst: anechoic
        echo[mask] = local * float(rng.uniform(0.03, 0.1))
    else:  # an area of coarse calcifications: bright specks in slightly darker tissue
        ys, xs = np.nonzero(mask)
        specks = np.zeros((h, w), dtype=np.float32)
        picks = rng.integers(len(ys), size=max(2, len(ys) // 12))
        specks[ys[picks], xs[picks]] = 1.0
        specks = ndimage.gaussian_filter(specks, 0.6 * scale + 0.3)
        echo[mask] = local * 0.6 + 2.0 * (specks / max(1e-6, float(specks.max())))[mask]
    return mask


# --------------------------------------------------------------------------------------------
# Pixels out: RGBA conversion, quirks, PNG
# --------------------------------------------------------------------------------------------


def _to_rgba(rng: np.random.Generator, gray: np.ndarray, inside: np.ndarray,
             plan: _Plan) -> np.ndarray:
    """Gray scan -> RGBA with the real data's tint and transparency quirks."""
    h, w = gray.shape
    if plan.tinted:
        # Scanner colour maps: channels scaled differently (bluish or sepia); at least two
        # channels differ clearly so a tint is always measurable.
        gains = 1.0 - rng.uniform(0.0, 0.1, size=3)
        gains[int(rng.integers(3))] = 1.0
        if np.ptp(gains) < 0.04:
            gains[int(np.argmin(gains))] -= 0.05
        rgb = np.rint(gray[..., None].astype(np.float32) * gains[None, None, :])
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    else:
        rgb = np.repeat(gray[..., None], 3, axis=2)
    alpha = np.full((h, w), 255, dtype=np.uint8)
    if plan.transparent:
        # The area outside the field of view is made fully transparent (alpha 0).
        hidden = ~inside
        alpha[hidden] = 0
        if plan.hidden_rgb:
            # Non-black RGB under alpha 0: bright noise plus coloured annotation blocks, only
            # visible to a plain convert('RGB'), hidden when composited on black.
            junk = rng.integers(90, 256, size=(h, w, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(2, 5))):
                y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
                colour = np.array(_pick(rng, {(255, 255, 0): 1, (0, 255, 0): 1,
                                              (255, 255, 255): 1, (0, 200, 255): 1}),
                                  dtype=np.uint8)
                junk[y0:y0 + max(3, h // 20), x0:x0 + max(6, w // 8)] = colour
            rgb = np.where(hidden[..., None], junk, rgb)
    return np.dstack([rgb, alpha])


def _mask_rgba(mask: np.ndarray, alpha75: bool) -> np.ndarray:
    """Boolean mask -> RGBA like the real masks: lesion 255/255, background all 0.

    ``alpha75`` reproduces the real case010: some lesion-border pixels keep RGB 255 but have
    alpha 75, so ``convert('L') > 127`` still gives the exact mask.
    """
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = 255
    if alpha75:
        border = mask & ~ndimage.binary_erosion(mask)
        ys, xs = np.nonzero(border)
        keep = (ys + xs) % 2 == 0  # every other border pixel: deterministic, clearly present
        rgba[ys[keep], xs[keep], 3] = 75
    return rgba


def _save_rgba(array: np.ndarray, path: Path) -> None:
    """Write an (H, W, 4) uint8 array as an RGBA PNG (PIL's PNG writer adds no timestamp)."""
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


# --------------------------------------------------------------------------------------------
# Workbook
# --------------------------------------------------------------------------------------------

_BENIGN_DIAGNOSES = {
    "Fibroadenoma": 29, "Benign mammary dysplasia": 26, "Fibrosclerosis": 10,
    "Intraductal papilloma": 7, "Pseudoangiomatous stromal hyperplasia (PASH)": 5,
    "Usual ductal hyperplasia (UDH)&Pseudoangiomatous stromal hyperplasia (PASH)": 1,
    "Phyllodes tumor": 2, "Mastitis": 2, "Intramammary lymph node": 1,
    "Fibroadenoma&Phyllodes tumor": 1,
}
_MALIGNANT_DIAGNOSES = {
    "Invasive carcinoma of no special type (NST)": 54, "Invasive lobular carcinoma": 12,
    "Invasive carcinoma of no special type (NST)&Ductal carcinoma in situ (DCIS)": 7,
    "Ductal carcinoma in situ (DCIS)": 4, "Mucinous carcinoma": 3,
    "Invasive micropapillary carcinoma": 3, "Tubular carcinoma&Cribriform carcinoma": 1,
    "Invasive lobular carcinoma&Lobular carcinoma in situ (LCIS)": 1,
}


def _clinical_row(rng: np.random.Generator, plan: _Plan, lesion: _Lesion, image_name: str,
                  tumor_name: str | None, other_names: list[str]) -> dict[str, Any]:
    """One workbook row whose descriptors agree with what was drawn."""
    label = plan.label
    pixel_size = round(float(np.exp(rng.uniform(*np.log(_PIXEL_SIZE_RANGE)))), 9)
    mean_age = {"benign": 47, "malignant": 60, "normal": 50}[label]
    age: int | str = NA if rng.random() < 0.15 else int(np.clip(
        round(rng.normal(mean_age, 13)), 18, 87))
    palpable = 0.35 if label == "malignant" else 0.15
    signs = _pick(rng, {"no": 0.6 - palpable / 2, "palpable": palpable, NA: 0.18,
                        "skin retraction&palpable": 0.02 + (0.03 if label == "malignant" else 0),
                        "nipple retraction&palpable": 0.015, "palpable&breast scar": 0.01,
                        "breast scar": 0.01, "redness&warmth&palpable": 0.01})
    symptoms = _pick(rng, {"no": 44, NA: 38, "family history of breast/ovarian cancer": 7,
                           "HRT/hormonal contraception": 5, "nipple discharge": 2.5,
                           "family history of breast/ovarian cancer&HRT/hormonal contraception":
                           1.5, "personal history of breast cancer": 1})
    row: dict[str, Any] = {
        "CaseID": plan.case_id,
        "Image_filename": image_name,
        "Mask_tumor_filename": tumor_name if tumor_name else np.nan,
        "Mask_other_filename": "&".join(other_names) if other_names else np.nan,
        "Pixel_size": pixel_size,
        "Age": age,
        "Tissue_composition": lesion.tissue,
        "Signs": signs,
        "Symptoms": symptoms,
        "Shape": lesion.shape,
        "Margin": lesion.margin,
        "Echogenicity": lesion.echogenicity,
        "Posterior_features": lesion.posterior,
        "Halo": lesion.halo,
        "Calcifications": lesion.calcifications,
        "Skin_thickening": lesion.skin_thickening,
        "Classification": label,
    }
    if label == "normal":
        row.update(Interpretation=NOT_APPLICABLE, BIRADS=1, Verification=NOT_APPLICABLE,
                   Diagnosis=NOT_APPLICABLE, Signs=_pick(rng, {"no": 3, NA: 1}))
        return {c: row[c] for c in COLUMNS}

    birads: int | str
    if label == "benign":
        if lesion.echogenicity == "anechoic":
            birads = _pick(rng, {2: 0.7, 3: 0.3})
            interpretation = "Simple cyst" if birads == 2 else "Complex cyst / Non-simple cyst"
        elif lesion.echogenicity == "complex cystic/solid":
            birads = _pick(rng, {3: 0.4, "4a": 0.6})
            interpretation = "Complex cyst / Non-simple cyst&Cyst filled with thick fluid"
        else:
            suspicious = lesion.shape == "irregular" or lesion.margin != "circumscribed"
            birads = _pick(rng, {2: 0.1, 3: 0.2, "4a": 0.4, "4b": 0.25, "4c": 0.05}
                           if suspicious else {2: 0.22, 3: 0.33, "4a": 0.33, "4b": 0.1,
                                               "4c": 0.02})
            interpretation = _pick(rng, {"Fibroadenoma": 14, "Dysplasia&Fibroadenoma": 5,
                                         "Dysplasia": 5, "Intramammary lymph node": 3,
                                         "Fibroadenoma&Intraductal papilloma": 3})
        if birads in ("4a", "4b", "4c"):
            interpretation = "Suspicion of malignancy&" + interpretation
        follow_up = birads in (2, 3) and rng.random() < 0.85
        verification = "confirmed by follow-up care" if follow_up else "confirmed by biopsy"
        diagnosis = NOT_APPLICABLE if follow_up else _pick(rng, _BENIGN_DIAGNOSES)
    else:
        spiculated = "spiculated" in lesion.margin
        birads = _pick(rng, {"4b": 0.1, "4c": 0.4, 5: 0.5} if spiculated
                       else {"4b": 0.25, "4c": 0.45, 5: 0.3})
        interpretation = _pick(rng, {
            "Suspicion of malignancy": 61, "Suspicion of malignancy&Dysplasia": 13,
            "Suspicion of malignancy&Fibroadenoma&Intraductal papilloma": 17,
            "Suspicion of malignancy&Intraductal papilloma": 7,
            "Suspicion of malignancy&Mastitis": 3,
        })
        verification = "confirmed by biopsy"
        diagnosis = _pick(rng, _MALIGNANT_DIAGNOSES)
    row.update(Interpretation=interpretation, BIRADS=birads, Verification=verification,
               Diagnosis=diagnosis)
    return {c: row[c] for c in COLUMNS}


def _write_workbook(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the clinical sheet and the data dictionary with pandas + openpyxl."""
    import pandas as pd  # lazy: keeps `import synth` (and CLI start-up) light

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # Mixed int/str columns stay object so ints are written as numbers, strings as text.
    for column in ("Age", "BIRADS"):
        frame[column] = frame[column].astype(object)
    dictionary = pd.DataFrame(
        [(name, desc if desc is not None else np.nan) for name, desc in DATA_DICTIONARY],
        columns=["type", "description"],
    )
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name=SHEET_NAME, index=False)
        dictionary.to_excel(writer, sheet_name=DICTIONARY_SHEET, index=False)
