"""A fused classifier: the CNN's malignancy score and the lesion descriptors in one small,
inspectable model (``--fusion descriptors``).

Two logistic regressions, fitted so that no scored case's number depends on its own label:

1. the *descriptor model*: standardised lesion descriptors (:data:`FEATURES`) -> p(malignant),
   fitted on the run's **training** cases, descriptors from their ground-truth masks;
2. the *combiner*: ``logit p_fused = a * logit p_cnn + b * logit p_descriptors + c``, fitted on
   the run's **validation** cases, descriptors from the segmenter's masks (as at inference).
   The fused decision threshold is chosen on the same validation cases, on *cross-fitted*
   scores: each one scored by a combiner fitted without it (10-fold), as a new case would be.
   The combiner's own fitted scores of its fitting cases are optimistic, and a threshold
   chosen on them sat too high (test sensitivity short of the target).
   With ``--fuse-with RUN2`` the combiner takes a second classifier's score as a third input
   (``+ d * logit p_partner``): a model of another view of the same scan, e.g. a whole-image
   CNN beside a lesion-centred one. RUN2 must not have trained on any case the combiner is
   fitted or scored on (the same split and fold as the run); ``fusion.json`` names it by its
   path relative to the run and its model's SHA-256, checked whenever it is used.

Test cases are then scored with descriptors from the segmenter's masks (no ground truth at
inference); scoring them with their ground-truth masks instead gives an upper bound, labelled so.
Both models are plain numbers in ``RUN/fusion.json`` (no pickle: nothing executable is stored),
so every descriptor's weight can be read there and in the report.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.imaging import read_luminance, read_mask
from breastus_cli.data.manifest import file_sha256
from breastus_cli.engine.apply import postprocess
from breastus_cli.engine.apply.masks import predicted_masks
from breastus_cli.engine.runs.provenance import (
    FUSION_CROSS_FITTED, FUSION_DEFAULT, fusion_threshold_rule, masks_source,
)
from breastus_cli.engine.runs.rundir import run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.descriptors import DESCRIPTORS, describe
from breastus_cli.engine.stats.metrics import (
    as_score, classification_metrics, threshold_for_sensitivity,
)
from breastus_cli.errors import InputError
from breastus_cli.runfiles import read_fusion

FUSION = "fusion.json"
#: L2 strength of both logistic regressions (sklearn's C): small data, strong shrinkage.
C_DESCRIPTORS = 0.5
C_COMBINER = 1.0
#: folds of the cross-fitting that scores the validation cases the fused threshold is chosen on
CROSS_FIT_FOLDS = 10
_EPS = 1e-6


def features() -> tuple[str, ...]:
    """The descriptor model's inputs: the unit-free descriptors and the log of the area in mm^2
    (missing, so imputed, where the pixel size is unknown: px and mm never mix in one input)."""
    return (*DESCRIPTORS, "log_area_mm2")


def with_log_area(values: dict[str, float]) -> dict[str, float]:
    """``values`` (:func:`descriptors.describe`) with ``log_area_mm2`` added."""
    area = values.get("area_mm2", math.nan)
    log_area = math.log(area) if area == area and area > 0 else math.nan
    return {**values, "log_area_mm2": log_area}


def feature_row(values: dict[str, float]) -> np.ndarray:
    """One case's descriptor-model inputs from :func:`descriptors.describe`'s values."""
    values = with_log_area(values)
    return np.array([[float(values.get(n, math.nan)) for n in features()]])


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Logistic:
    """A fitted logistic regression on standardised inputs, as plain numbers.

    Missing inputs (no lesion found, no band below it) take the training median."""

    names: list[str]
    median: list[float]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def _standard(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64, copy=True).reshape(-1, len(self.names))
        missing = ~np.isfinite(x)
        x[missing] = np.take(np.asarray(self.median), np.nonzero(missing)[1])
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """p(malignant) of each row of ``x`` (columns in ``names`` order)."""
        return _sigmoid(self._standard(x) @ np.asarray(self.coef) + self.intercept)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each input's share of each row's log-odds (weight x standardised value): they sum,
        with the intercept, to the logit of :meth:`predict`."""
        return self._standard(x) * np.asarray(self.coef)

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "median": self.median, "mean": self.mean,
                "scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Logistic:
        return cls(**{k: data[k] for k in ("names", "median", "mean", "scale", "coef",
                                           "intercept")})

    def weights(self) -> dict[str, float]:
        """Each input's weight: the change in log-odds of malignancy per standard deviation."""
        return {n: round(float(c), 4) for n, c in zip(self.names, self.coef)}


def fit_logistic(x: np.ndarray, y: np.ndarray, names: Sequence[str], c: float) -> Logistic:
    """An L2-regularised logistic regression (scikit-learn) on standardised, median-imputed x."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64).reshape(len(y), len(names))
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        raise InputError("the fused classifier needs benign and malignant cases to fit on")
    finite = np.isfinite(x)
    median = [float(np.median(col[ok])) if ok.any() else 0.0 for col, ok in zip(x.T, finite.T)]
    filled = np.where(finite, x, np.asarray(median))
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale[~(scale > 0)] = 1.0
    model = LogisticRegression(C=c, max_iter=1000).fit((filled - mean) / scale, y)
    return Logistic(list(names), median, [float(v) for v in mean], [float(v) for v in scale],
                    [float(v) for v in model.coef_[0]], float(model.intercept_[0]))


def cross_fitted(x: np.ndarray, y: np.ndarray, names: Sequence[str], c: float,
                 folds: int = CROSS_FIT_FOLDS) -> np.ndarray:
    """Cross-fitted scores of :func:`fit_logistic`: each case scored by the model fitted on the
    other folds of a stratified ``folds``-fold split (fewer when a class has fewer cases; the
    fitted scores themselves when a class has one case only)."""
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, dtype=np.float64).reshape(len(y), len(names))
    y = np.asarray(y, dtype=int)
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return fit_logistic(x, y, names, c).predict(x)
    out = np.empty(len(y))
    for fit_on, held in StratifiedKFold(k, shuffle=True, random_state=0).split(x, y):
        out[held] = fit_logistic(x[fit_on], y[fit_on], names, c).predict(x[held])
    return out


# ---- descriptors of cases ------------------------------------------------------------------
def case_table(frame: Any, masks: Sequence[np.ndarray] | None = None) -> Any:
    """Descriptors of each case of a prepared-dataset frame (DataFrame, one row per case):
    from ``masks`` when given (a segmenter's, at each image's size), else from the case's
    ground-truth lesion mask; intensities from the luminance the models see."""
    import pandas as pd

    rows = []
    for i, (_, case) in enumerate(frame.iterrows()):
        image = read_luminance(case["image_path"])
        if masks is not None:
            mask = np.asarray(masks[i], dtype=bool)
        elif case.get("mask_path"):
            mask = read_mask([case["mask_path"]], shape=image.shape)
        else:
            mask = np.zeros(image.shape, dtype=bool)
        rows.append({"case_id": case["case_id"],
                     **with_log_area(describe(mask, image, case.get("pixel_size_mm")))})
    return pd.DataFrame(rows)


def feature_matrix(table: Any) -> np.ndarray:
    """The descriptor model's input columns of a :func:`case_table` (NaN where missing)."""
    names = features()
    return np.column_stack([table[n].to_numpy(dtype=np.float64) if n in table.columns
                            else np.full(len(table), np.nan) for n in names])


# ---- the fused model -----------------------------------------------------------------------
@dataclass
class Fusion:
    """A run's fused classifier (``RUN/fusion.json``)."""

    descriptors: Logistic
    combiner: Logistic  # inputs: logit p_cnn, logit p_descriptors
    threshold: float  # the fused score's, chosen on validation
    threshold_source: str
    fitted_on: dict[str, str]
    descriptor_threshold: float = 0.5  # the descriptor model alone, chosen the same way
    #: the second classifier whose score the combiner also takes (--fuse-with): its path
    #: relative to the run directory and the SHA-256 of its model.keras; None: none
    partner: dict[str, str] | None = None

    def scores(self, p_cnn: np.ndarray, x: np.ndarray,
               p_partner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(p_descriptors, p_fused) for CNN scores and descriptor rows (and the second
        classifier's scores, which a fusion with a partner needs)."""
        p_desc = self.descriptors.predict(x)
        inputs = [logit(p_cnn), logit(p_desc)]
        if self.partner is not None:
            if p_partner is None:
                raise InputError(f"this fused classifier also takes the score of "
                                 f"{self.partner['path']} (--fuse-with): none was given")
            inputs.append(logit(p_partner))

        # reported as predictions.csv writes them: metrics and labels then follow the file
        return as_score(p_desc), as_score(self.combiner.predict(np.column_stack(inputs)))

    def explain(self, x: np.ndarray, top: int = 3) -> list[str]:
        """Per lesion, the descriptors that moved its descriptor score most, signed (log-odds
        of malignancy; + towards malignant), e.g. ``"solidity -1.20; log_area_mm2 +0.85"``."""
        names = self.descriptors.names
        out = []
        for row in self.descriptors.contributions(x):
            order = np.argsort(-np.abs(row))[:top]
            out.append("; ".join(f"{names[j]} {row[j]:+.2f}" for j in order))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "descriptors", "descriptor_model": self.descriptors.to_dict(),
                "descriptor_weights": self.descriptors.weights(),
                "combiner": self.combiner.to_dict(), "combiner_weights": self.combiner.weights(),
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "descriptor_threshold": self.descriptor_threshold, "fitted_on": self.fitted_on,
                "partner": self.partner}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        return cls(Logistic.from_dict(data["descriptor_model"]),
                   Logistic.from_dict(data["combiner"]), float(data["threshold"]),
                   str(data["threshold_source"]), _with_rule(dict(data["fitted_on"])),
                   float(data.get("descriptor_threshold", 0.5)),
                   None if data.get("partner") is None else {
                       "path": str(data["partner"]["path"]),
                       "sha256": str(data["partner"]["sha256"])})


@dataclass
class FusedScores:
    """Some cases scored by a fused classifier (:func:`score_cases`)."""

    p_descriptors: np.ndarray  # the descriptor model alone
    p_fused: np.ndarray
    why: list[str]  # per case, the descriptors that moved its descriptor score most
    malignant: np.ndarray  # p_fused at or above the fused threshold
    descriptors_malignant: np.ndarray  # p_descriptors at or above the descriptor threshold


def score_cases(fused: Fusion, p_cnn: np.ndarray, x: np.ndarray,
                p_partner: np.ndarray | None = None) -> FusedScores:
    """The one place a fused classifier scores cases, for evaluate (:func:`score_run`) and
    predict's rows alike: the CNN's (and the second classifier's) p(malignant) as reported
    (:func:`~breastus_cli.engine.stats.metrics.as_score`), descriptor rows ``x``
    (:func:`feature_row`, :func:`feature_matrix`), the fused and descriptor labels and the
    reasons."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(features()))
    p_desc, p_fused = fused.scores(as_score(p_cnn), x,
                                   None if p_partner is None else as_score(p_partner))
    return FusedScores(p_desc, p_fused, fused.explain(x), p_fused >= fused.threshold,
                       p_desc >= fused.descriptor_threshold)


def _with_rule(fitted_on: dict[str, str]) -> dict[str, str]:
    """``fitted_on`` with its ``threshold_rule`` field: a fusion.json written before the field
    gets it from its sentence here, and writes it with the next evaluation's fusion block."""
    rule = fusion_threshold_rule(fitted_on)
    return fitted_on if rule is None else {**fitted_on, "threshold_rule": rule}


def fit(y_train: np.ndarray, x_train_gt: np.ndarray, y_val: np.ndarray, p_cnn_val: np.ndarray,
        x_val: np.ndarray, target_sensitivity: float | None,
        val_masks_from: str, p_partner_val: np.ndarray | None = None,
        partner: dict[str, str] | None = None) -> Fusion:
    """The descriptor model on the training cases' ground-truth descriptors, the combiner and
    the threshold on the validation cases (descriptors from ``val_masks_from``; with
    ``partner``, its scores ``p_partner_val`` as the combiner's third input)."""
    descriptors = fit_logistic(x_train_gt, y_train, features(), C_DESCRIPTORS)
    p_desc_val = descriptors.predict(x_val)
    inputs, names = [logit(p_cnn_val), logit(p_desc_val)], ["cnn", "descriptors"]
    if partner is not None:
        inputs.append(logit(np.asarray(p_partner_val)))
        names.append("partner")
    combiner = fit_logistic(np.column_stack(inputs), y_val, names, C_COMBINER)
    if target_sensitivity is not None and (np.asarray(y_val) == 1).any():
        # the combiner's fitted scores of its own fitting cases are optimistic: the threshold
        # is chosen on cross-fitted scores instead (the descriptor model never saw these cases)
        p_val = cross_fitted(np.column_stack(inputs), y_val, names, C_COMBINER)
        threshold = threshold_for_sensitivity(y_val, p_val, target_sensitivity)
        descriptor_threshold = threshold_for_sensitivity(y_val, p_desc_val, target_sensitivity)
        source = (f"chosen on validation cases for target sensitivity {target_sensitivity:g} "
                  "(their fused scores cross-fitted)")
        how = (f"; each validation case scored by a combiner fitted on the others "
               f"({CROSS_FIT_FOLDS}-fold), as a new case would be")
    else:
        threshold, descriptor_threshold, source, how = 0.5, 0.5, "default 0.5", ""
    rule = FUSION_CROSS_FITTED if how else FUSION_DEFAULT
    fitted_on = {
        "descriptor_model": f"fitted on {len(y_train)} training cases, descriptors from their "
                            "ground-truth masks",
        "combiner": f"fitted on {len(y_val)} validation cases: the CNN's score"
                    + (f", the score of {partner['path']} (second classifier)" if partner else "")
                    + f" and descriptors from {val_masks_from}",
        "threshold": source + how,
        "threshold_rule": rule,  # what code compares (runs/provenance.py)
    }
    return Fusion(descriptors, combiner, float(threshold), source, fitted_on,
                  float(descriptor_threshold), partner)


# ---- the second classifier (--fuse-with) ---------------------------------------------------
PARTNER_MODEL = "model.keras"


def partner_record(run_dir: Path, partner: Path) -> dict[str, str]:
    """How fusion.json names a second classifier: its path relative to the run directory (the
    two move together) and its model's SHA-256."""
    model = Path(partner) / PARTNER_MODEL
    if not model.is_file():
        raise InputError(f"--fuse-with {partner} is not a finished classification run "
                         f"(no {PARTNER_MODEL})")
    return {"path": os.path.relpath(Path(partner).resolve(), Path(run_dir).resolve()),
            "sha256": file_sha256(model)}


def partner_dir(run_dir: Path, fused: Fusion) -> Path:
    """The second classifier a fused model was fitted with, checked to be the same model."""
    assert fused.partner is not None
    path = Path(os.path.normpath(Path(run_dir) / fused.partner["path"]))
    model = path / PARTNER_MODEL
    if not model.is_file():
        raise InputError(f"{Path(run_dir) / FUSION} fuses with the classifier {path}, which is "
                         f"missing (no {PARTNER_MODEL})",
                         hint="keep the two runs side by side as they were, or fit the fusion "
                              "again with 'calibrate --fusion descriptors --fuse-with'")
    if file_sha256(model) != fused.partner["sha256"]:
        raise InputError(f"{model} has changed since {Path(run_dir) / FUSION} was fitted with "
                         "it", hint="fit the fusion again with 'calibrate --fusion descriptors "
                                    "--fuse-with'")
    return path


def write(run_dir: Path, fusion: Fusion) -> None:
    write_json(Path(run_dir) / FUSION, fusion.to_dict())


def read(run_dir: Path) -> Fusion | None:
    """The run's fused classifier, or None when it has none."""
    path = Path(run_dir) / FUSION
    if not path.is_file():
        return None
    return Fusion.from_dict(read_fusion(path, features()))


# ---- a run's fusion, fitted (the calibration step) and scored (evaluate) --------------------
def _labels(frame: Any) -> np.ndarray:
    return (frame["label"] == "malignant").to_numpy().astype(int)


def fit_for_run(run_dir: Path, config: dict[str, Any] | RunConfig, data: Path, seg_run: Path,
                val: Any, p_cnn_val: np.ndarray, target_sensitivity: float | None,
                batch_size: int = 16, partner: Path | None = None,
                p_partner_val: np.ndarray | None = None) -> Fusion:
    """Fit a run's fused classifier (written to ``RUN/fusion.json``): the descriptor model on
    its training cases' ground-truth masks, the combiner and thresholds on its validation cases
    ``val`` (CNN scores ``p_cnn_val``, and ``partner``'s ``p_partner_val``) with descriptors
    from ``seg_run``'s masks."""
    train = run_cases(config, "train", data)
    train = train[train["label"].isin(["benign", "malignant"])
                  & (train["mask_path"] != "")].reset_index(drop=True)
    if len(train) == 0:
        raise InputError("--fusion descriptors needs training cases with lesion masks")
    x_train = feature_matrix(case_table(train))
    masks = predicted_masks(seg_run, list(val["image_path"]), batch_size)
    x_val = feature_matrix(case_table(val, masks))
    fused = fit(_labels(train), x_train, _labels(val), p_cnn_val, x_val, target_sensitivity,
                f"the masks of segmentation run {seg_run}", p_partner_val,
                None if partner is None else partner_record(run_dir, partner))
    write(run_dir, fused)
    return fused


#: the oracle's name wherever its numbers appear
ORACLE = "ground-truth masks (oracle: upper bound)"


def score_run(fused: Fusion, frame: Any, p_cnn: np.ndarray, cnn_threshold: float,
              seg_run: Path, out_dir: Path, batch_size: int = 16, n_bootstrap: int = 2000,
              seed: int = 0, p_partner: np.ndarray | None = None,
              partner_threshold: float = 0.5) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``frame``'s cases with the CNN alone, the descriptors alone, the second classifier
    alone (``p_partner``, at its own threshold) and fused (descriptors from ``seg_run``'s
    masks), and again from the ground-truth masks where the cases have them (the upper bound).
    Returns metrics.json's ``fusion`` block and predictions columns; writes
    ``out_dir/descriptors.csv`` (each case's descriptors from the segmenter's mask)."""
    y = _labels(frame)
    masks = predicted_masks(seg_run, list(frame["image_path"]), batch_size)
    table = case_table(frame, masks)
    with atomic_path(Path(out_dir) / "descriptors.csv") as tmp:
        table.assign(label=list(frame["label"])).to_csv(tmp, index=False)
    scored = score_cases(fused, p_cnn, feature_matrix(table), p_partner)
    p_desc, p_fused = scored.p_descriptors, scored.p_fused
    keep = ("auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "ci")

    def block(p: np.ndarray, threshold: float) -> dict[str, Any]:
        result = classification_metrics(y, p, threshold, n_bootstrap=n_bootstrap, seed=seed)
        return {k: v for k, v in result.items() if k in keep} | {"threshold": threshold}

    report: dict[str, Any] = {
        "cnn": block(p_cnn, cnn_threshold),
        "descriptors": block(p_desc, fused.descriptor_threshold),
        "fused": block(p_fused, fused.threshold),
        "masks_from": f"segmentation run {seg_run}",
        **masks_source(seg_run, out_dir),  # the same as fields (runs/provenance.py)
        "mask_postprocess": postprocess.of(seg_run).method,
        "lesion_found": int(sum(bool(np.asarray(m).any()) for m in masks)),
        "n": int(len(y)),
        "descriptor_weights": fused.descriptors.weights(),
        "combiner_weights": fused.combiner.weights(),
        "fitted_on": fused.fitted_on,
    }
    columns = {"fused_why": np.asarray(scored.why, dtype=object), "p_descriptors": p_desc,
               "y_pred_descriptors": scored.descriptors_malignant,
               "p_fused": p_fused, "y_pred_fused": scored.malignant}
    if fused.partner is not None and p_partner is not None:
        report["partner"] = block(p_partner, partner_threshold) | {
            "run": fused.partner["path"]}
        columns |= {"p_partner": p_partner, "y_pred_partner": p_partner >= partner_threshold}
    has_mask = (frame["mask_path"] != "").to_numpy()
    if has_mask.all():
        oracle = score_cases(fused, p_cnn, feature_matrix(case_table(frame)), p_partner)
        report["ground_truth_masks"] = {
            "source": ORACLE,
            "descriptors": block(oracle.p_descriptors, fused.descriptor_threshold),
            "fused": block(oracle.p_fused, fused.threshold)}
        columns |= {"p_descriptors_gt_mask": oracle.p_descriptors,
                    "y_pred_descriptors_gt_mask": oracle.descriptors_malignant,
                    "p_fused_gt_mask": oracle.p_fused,
                    "y_pred_fused_gt_mask": oracle.malignant}
    # the scores are rounded already (Fusion.scores, metrics.as_score); labels as 0/1
    return report, {k: (v if v.dtype.kind in "fO" else v.astype(int)) for k, v in columns.items()}
