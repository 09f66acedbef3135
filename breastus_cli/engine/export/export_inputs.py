"""What an export is checked and calibrated on: the run's test images (agreement) and a seeded
draw of its training images (int8 calibration), lesion crops for a ``--roi mask`` classifier;
synthetic scans when the dataset is not reachable."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.data.pipeline import load_arrays
from breastus_cli.data.roi import write_roi_crops
from breastus_cli.engine.runs.rundir import run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError

#: Images of the run's test split used to measure agreement with the Keras model.
SAMPLE_IMAGES = 32

def balanced_draw(labels: list[str], n: int, seed: int) -> np.ndarray:
    """Sorted row numbers of a seeded draw of ``n`` of ``labels``' rows, as even across the
    labels as they allow (a class with too few rows gives all of them; the others fill up)."""
    rng = np.random.default_rng(seed)
    groups = {c: rng.permutation([i for i, lab in enumerate(labels) if lab == c])
              for c in sorted(set(labels))}
    take = dict.fromkeys(groups, 0)
    left = min(n, len(labels))
    while left:  # one more row from each class that has rows left, smallest first
        open_ = [c for c in groups if take[c] < len(groups[c])]
        for c in sorted(open_, key=lambda c: take[c])[:left]:
            take[c] += 1
            left -= 1
    return np.sort(np.concatenate([groups[c][:take[c]] for c in groups]).astype(int))


def _input_cases(config: dict[str, Any], role: str, n: int | None, seed: int | None,
                 balanced: bool = False):  # -> DataFrame
    """The cases of ``role`` the run's model takes: the task's usable ones (cls: benign/malignant;
    seg, or a ``--roi mask`` classifier: with a mask); the first ``n`` (seed None) or a seeded
    draw of ``n`` (``balanced``: as many of each label as the split has, :func:`balanced_draw`)."""
    run = RunConfig.of(config)
    frame = run_cases(run, role)
    if run.task == "seg" or run.roi_margin is not None:
        frame = frame[frame["mask_path"] != ""]
    if run.task == "cls":
        frame = frame[frame["label"].isin(["benign", "malignant"])]
    frame = frame.reset_index(drop=True)
    if n is not None and len(frame) > n:
        rows = (np.arange(n) if seed is None else
                balanced_draw(list(frame["label"]), n, seed) if balanced else
                np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False)))
        frame = frame.iloc[rows].reset_index(drop=True)
    return frame


def _model_inputs(config: dict[str, Any], frame: Any, img_size: int) -> np.ndarray:
    """(n, S, S, 1) float32 model inputs of ``frame``'s cases (:func:`_input_cases`), lesion
    crops for a ``--roi mask`` classifier."""
    margin = RunConfig.of(config).roi_margin
    if len(frame) == 0:
        return np.zeros((0, img_size, img_size, 1), np.float32)
    if margin is None:
        return load_arrays(list(frame["image_path"]), img_size).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="breastus-roi-") as folder:
        paths = write_roi_crops(frame, Path(folder), margin)
        return load_arrays(paths, img_size).astype(np.float32)


def sample_images(config: dict[str, Any], img_size: int,
                  n: int = SAMPLE_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` images of the run's test split (float32 0..255; lesion crops for a
    ``--roi mask`` classifier), or synthetic scans when the dataset is not reachable; returns
    (images, where they came from)."""
    try:
        images = _model_inputs(config, _input_cases(config, "test", n, None), img_size)
        if len(images):
            crops = " lesion crops" if RunConfig.of(config).roi_margin is not None \
                else " images"
            return images, f"test split ({len(images)}{crops})"
    except Exception:  # no dataset here (a run copied elsewhere): fall back to synthetic
        pass
    return synthetic_images(n, img_size), f"synthetic ({n} images)"


def synthetic_images(n: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Speckled grey scans with one dark oval each: inputs in the models' range and look."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:img_size, 0:img_size].astype(np.float32) / img_size
    images = np.empty((n, img_size, img_size, 1), np.float32)
    for i in range(n):
        base = 60 + 80 * yy[::-1] * rng.uniform(0.5, 1.0)
        cx, cy, rx, ry = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.08, 0.25, 2)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        image = base * np.where(inside, rng.uniform(0.2, 0.5), 1.0)
        image = image * rng.gamma(4.0, 0.25, size=image.shape)  # speckle
        images[i, ..., 0] = np.clip(image, 0, 255)
    return images


def representative_images(config: dict[str, Any], img_size: int,
                          n: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The int8 calibration set: up to ``n`` images of the run's TRAINING split (seeded draw,
    balanced by class for a classifier: the rarer class's activations set the ranges too;
    lesion crops for a ``--roi mask`` classifier), as the converter wants it (a callable
    yielding ``[batch of 1]``)."""
    run = RunConfig.of(config)
    seed, balanced = run.seed, run.task == "cls"
    try:
        # decoded once, kept in memory (n * S * S * 4 bytes), replayed on each converter attempt
        frame = _input_cases(config, "train", n, seed, balanced=balanced)
        images = _model_inputs(config, frame, img_size)
    except InputError as exc:
        raise InputError(f"--quantize int8 calibrates on the run's training images: {exc.message}",
                         hint="export on a machine where the dataset is at the recorded path, "
                              "or use --quantize float16") from None
    if not len(images):
        raise InputError("--quantize int8: the run's training split has no image to calibrate on")

    def dataset() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[np.newaxis]]

    dataset.count = len(images)  # type: ignore[attr-defined]
    if balanced:  # the counts per class, for the export's metadata
        classes = frame["label"].value_counts().sort_index().to_dict()
        dataset.classes = classes  # type: ignore[attr-defined]
    return dataset
