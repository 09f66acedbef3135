"""A predict batch from images to rows: the models on the batch (:func:`forward`, a forward
thread) and its rows (:func:`predict_batch`, the rows thread): masks at the original size,
lesion descriptors, the fused score, masks/overlays/explain files."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastus_cli.data.imaging import save_png
from breastus_cli.data.scans import Frame
from breastus_cli.engine.apply import fusion, ood, overlays
from breastus_cli.engine.apply.gradcam import gradcam
from breastus_cli.engine.apply.images import lesion_crop, resize_input, to_original_size, upsample
from breastus_cli.engine.apply.loaded_run import LoadedRun
from breastus_cli.engine.apply.predict_output import file_stem
from breastus_cli.engine.apply.predict_settings import PredictSettings
from breastus_cli.engine.stats.descriptors import describe_both_units
from breastus_cli.engine.stats.metrics import as_score
from breastus_cli.errors import InputError

#: the training pipeline's resize; a module name so that the benchmarks can time it
#: (benchmarks/predict_throughput.py)
resized = resize_input


def model_input(frame: Frame, size: int, tf: Any) -> np.ndarray:
    """The frame's model input at ``size``, prepared in the decoding thread when possible."""
    ready = frame.inputs.get(size)
    return ready if ready is not None else resized(frame.image, size, tf)



def manifest_pixel_sizes(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise InputError(f"--manifest {path} not found")
    frame = pd.read_csv(path)
    if "pixel_size_mm" not in frame.columns:
        raise InputError(f"--manifest {path} has no pixel_size_mm column")
    sizes: dict[str, float] = {}
    for column in ("source", "image"):
        if column in frame.columns:
            for name, size in zip(frame[column].astype(str), frame["pixel_size_mm"]):
                if size == size:  # not NaN
                    sizes[Path(name).name] = float(size)
    return sizes


@dataclass
class Outputs:
    """A batch's model outputs (:func:`forward`): the segmenter's probability maps, the
    classifier's p(malignant) and Grad-CAM maps; ``big``: (probability map, mask) at each
    image's original size when the classifier needed them for its lesion crops."""

    probs: np.ndarray | None = None
    p_mal: np.ndarray | None = None
    heat: np.ndarray | None = None
    big: list[tuple[np.ndarray, np.ndarray]] | None = None
    p_partner: np.ndarray | None = None  # the fusion's second classifier's p(malignant)
    ood: np.ndarray | None = None  # the classifier's ood_score (ood.with_ood)


def full_size(frames: list[Frame], probs: np.ndarray, threshold: float,
               postprocess: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    return [to_original_size(prob, frame.image.shape, threshold, postprocess or "none")
            for frame, prob in zip(frames, probs)]


def cls_batch(frames: list[Frame], model: LoadedRun, big: list[tuple[np.ndarray, np.ndarray]],
               tf: Any) -> np.ndarray:
    """A classifier's input batch: whole images, or lesion-centred crops around the predicted
    lesions (``big``: each image's mask at its original size)."""
    if model.roi_margin is None:
        return np.stack([model_input(f, model.size, tf) for f in frames])
    return np.stack([resized(lesion_crop(f.image, mask, model.roi_margin)[0], model.size, tf)
                     for f, (_, mask) in zip(frames, big)])


def forward(frames: list[Frame], cls: LoadedRun | None, seg: LoadedRun | None,
             settings: PredictSettings, tf: Any, partner: LoadedRun | None = None) -> Outputs:
    """The models on one batch (a forward thread): everything else is :func:`predict_batch`."""
    outputs = Outputs()
    if seg is not None:
        outputs.probs = seg.run(np.stack([model_input(f, seg.size, tf) for f in frames]))
        if any(m is not None and m.roi_margin is not None for m in (cls, partner)):
            outputs.big = full_size(frames, outputs.probs, settings.seg_threshold,
                                     settings.seg_postprocess)  # crops
    if partner is not None:
        outputs.p_partner = partner.run(cls_batch(frames, partner, outputs.big or [], tf))[:, 1]
    if cls is not None:
        batch = cls_batch(frames, cls, outputs.big or [], tf)
        scores = cls.run(batch)
        outputs.p_mal = scores[:, 1]
        outputs.ood = scores[:, 2] if scores.shape[1] > 2 else None
        if settings.explain:
            outputs.heat = gradcam(cls.keras_model, batch)
    return outputs


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def rows_of(forward: Future, frames: list[Frame], *args: Any) -> tuple[list[dict[str, Any]],
                                                                        float]:
    """A batch's rows once its forward pass is done (the rows thread); with the seconds of
    both stages. A failed forward pass raises here, where the main thread collects it."""
    outputs, forward_seconds = forward.result()
    rows, row_seconds = timed(predict_batch, frames, outputs, *args)
    return rows, forward_seconds + row_seconds


def predict_batch(frames: list[Frame], outputs: Outputs, cls: LoadedRun | None,
                   threshold: float | None, settings: PredictSettings, out: Path,
                   pixel_sizes: dict[str, float], fused: Any = None) -> list[dict[str, Any]]:
    """One batch's rows from its model outputs: masks at the original size, descriptors,
    the fused score, masks/overlays/explain files (a thread beside the main one)."""
    rows: list[dict[str, Any]] = []
    probs, p_mal, heat = outputs.probs, outputs.p_mal, outputs.heat
    big = outputs.big if outputs.big is not None else (
        full_size(frames, probs, settings.seg_threshold, settings.seg_postprocess)
        if probs is not None else [])
    for i, frame in enumerate(frames):
        height, width = frame.image.shape
        pixel = (settings.pixel_size or frame.pixel_size_mm
                 or pixel_sizes.get(frame.path.name))
        row: dict[str, Any] = {"path": str(frame.path),
                               "frame": "" if frame.frame is None else frame.frame,
                               "width": width, "height": height,
                               "pixel_size_mm": "" if pixel is None else round(pixel, 6)}
        stem = file_stem(frame)
        if p_mal is not None:
            p = float(as_score(p_mal[i]))  # the label follows the score as written
            row.update({"p_malignant": p, "threshold": threshold,
                        "label": "malignant" if p >= (0.5 if threshold is None else threshold)
                        else "benign"})
        if outputs.ood is not None:
            row.update(ood.cells(outputs.ood[i]))
        if heat is not None and cls is not None and cls.roi_margin is None:
            path = overlays.heatmap_overlay(frame.image, upsample(heat[i], (height, width)),
                                            out / "explain" / f"{stem}.png")
            row["explain"] = str(path.relative_to(out))
        if probs is not None:
            prob, mask = big[i]
            area = int(mask.sum())
            row.update({"lesion_area_px": area,
                        "lesion_area_mm2": "" if pixel is None else round(area * pixel**2, 3)})
            values = describe_both_units(mask, frame.image, pixel)
            row.update(descriptor_cells(values))
            if fused is not None and p_mal is not None:
                p_two = None if outputs.p_partner is None else outputs.p_partner[i:i + 1]
                # the one fused scoring, evaluate's too (fusion.score_cases)
                scored = fusion.score_cases(fused, p_mal[i:i + 1], fusion.feature_row(values),
                                            p_two)
                if p_two is not None:  # scores are rounded where made (metrics.as_score)
                    row["p_partner"] = float(as_score(p_two)[0])
                row.update({"p_descriptors": float(scored.p_descriptors[0]),
                            "fused_why": scored.why[0],
                            "p_fused": float(scored.p_fused[0]),
                            "label_fused": "malignant" if scored.malignant[0] else "benign"})
            if settings.save_masks:
                save_png(mask, out / "masks" / f"{stem}.png")
                row["mask"] = f"masks/{stem}.png"
            if settings.save_overlays:
                overlays.lesion_overlay(frame.image, prob, mask, out / "overlays" / f"{stem}.png")
                row["overlay"] = f"overlays/{stem}.png"
        rows.append(row)
    return rows


_WHOLE = ("lobulation", "not_parallel", "components", "width_px", "height_px", "area_px")


def descriptor_cells(values: dict[str, float]) -> dict[str, Any]:
    """The predicted lesion's descriptors (:func:`describe_both_units`) as predictions.csv
    cells ('' where undefined)."""
    return {k: "" if v != v else int(v) if k in _WHOLE else round(float(v), 6)
            for k, v in values.items()}
