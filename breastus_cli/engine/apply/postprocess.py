"""Post-processing of a segmenter's masks, chosen on the run's validation cases.

Every image of breastus's datasets shows one lesion, yet a segmenter may also mark a small
second blob or leave a hole. nnU-Net's answer, used here: on the validation cases, compare the
mean Dice of the masks as they are with that of their largest connected component (8-connected,
holes filled), and keep the post-processing only if it raises it. The choice is
``RUN/postprocess.json``, made by the calibration step (``breastus calibrate RUN``; train-seg
runs it at its end, ``cv seg`` for every fold); every mask breastus then draws from that run applies
it: evaluate's, the lesion crops and descriptors of ``--seg-run``/``--seg-cv``, and predict's.
A run without the file (trained before it existed, or its validation cases gone) keeps its masks
as they are. A fold ensemble applies it when most of its folds chose it.

    >>> m = np.zeros((8, 8), bool); m[1:4, 1:4] = True; m[6, 6] = True; m[2, 2] = False
    >>> int(largest_component(m).sum())  # the speck dropped, the hole filled
    9
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import runfiles
from breastus_cli.atomic import write_json
from breastus_cli.engine.runs.cvdir import fold_runs, is_cv_dir

POSTPROCESS = "postprocess.json"
#: ``none``: the thresholded mask; ``largest``: its largest connected component, holes filled
METHODS = runfiles.POSTPROCESS_METHODS
RULE = ("the largest connected component (holes filled) is kept when it raises the mean Dice "
        "of the run's validation cases; otherwise the mask is kept as it is")


@dataclass(frozen=True)
class Postprocess:
    """A run's post-processing and where it came from (for reports)."""

    method: str
    source: str


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` with its holes filled (an empty mask
    stays empty)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    return ndimage.binary_fill_holes(mask)


def apply(mask: np.ndarray, method: str) -> np.ndarray:
    """``mask`` post-processed by ``method`` (one of :data:`METHODS`)."""
    if method == "none":
        return mask
    if method == "largest":
        return largest_component(mask)
    raise ValueError(f"post-processing must be one of {', '.join(METHODS)} (got '{method}')")


def _dice(truth: np.ndarray, pred: np.ndarray) -> float:
    both = int(np.count_nonzero(truth)) + int(np.count_nonzero(pred))
    return 1.0 if both == 0 else 2.0 * int(np.count_nonzero(truth & pred)) / both


def choose(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, Any]:
    """The post-processing of :data:`RULE` for these validation masks (each pair at one
    size), with the mean Dice of every candidate and how many masks each one changed."""
    if not truths or len(truths) != len(preds):
        raise ValueError("choose() needs one predicted mask per truth mask, at least one")
    truths = [np.asarray(t, bool) for t in truths]
    candidates = {m: [apply(np.asarray(p, bool), m) for p in preds] for m in METHODS}
    dice = {m: float(np.mean([_dice(t, p) for t, p in zip(truths, masks)]))
            for m, masks in candidates.items()}
    changed = sum(bool((a != b).any()) for a, b in zip(candidates["none"], candidates["largest"]))
    return {"method": "largest" if dice["largest"] > dice["none"] else "none",
            "validation_dice": dice, "n_validation": len(truths),
            "masks_changed": changed, "rule": RULE}


def write(run_dir: Path, chosen: dict[str, Any]) -> None:
    write_json(Path(run_dir) / POSTPROCESS, chosen)


def read(run_dir: str | Path) -> Postprocess:
    """The run's post-processing: ``RUN/postprocess.json`` when present, else ``none``. A
    malformed file is a one-line InputError naming it."""
    path = Path(run_dir) / POSTPROCESS
    if not path.is_file():
        return Postprocess("none", "none (not chosen for this run)")
    chosen = runfiles.read_postprocess(path)
    method, dice, n = chosen.method, chosen.validation_dice or {}, chosen.n_validation or 0
    scores = ", ".join(f"{m} {float(dice[m]):.3f}" for m in METHODS if m in dice)
    return Postprocess(method, f"chosen on {n} validation cases (mean Dice {scores})")


def ensemble(members: list[Path]) -> Postprocess:
    """A fold ensemble's post-processing: ``largest`` when most folds chose it."""
    methods = [read(run).method for run in members]
    votes = sum(m == "largest" for m in methods)
    method = "largest" if votes * 2 > len(methods) else "none"
    return Postprocess(method, f"{votes} of {len(methods)} folds chose the largest component "
                               "on their validation cases")


def of(source: str | Path) -> Postprocess:
    """The post-processing masks drawn from ``source`` get: a run directory's, or a
    cross-validation folder's fold majority (what :class:`~loaded_run.LoadedRun` applies)."""
    return ensemble(fold_runs(source)[1]) if is_cv_dir(source) else read(source)
