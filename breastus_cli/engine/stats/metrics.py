"""Classification metrics with honest statistics (numpy + scikit-learn only).

Conventions used everywhere in breastus:

- class 1 is ``malignant`` (the "positive" class), class 0 is ``benign``;
- a case is *predicted malignant iff* ``p_malignant >= threshold`` (a score equal to the
  threshold counts as malignant);
- a metric that is undefined on the given cases (for example sensitivity when there is no
  malignant case, or AUC when only one class is present) is ``None``, never NaN, so the result
  can be written with ``json.dumps(..., allow_nan=False)``;
- confidence intervals are percentile bootstraps over *cases*, resampled with replacement within
  each class (stratified: every resample keeps the data's numbers of malignant and benign
  cases; see :mod:`breastus_cli.engine.stats.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from breastus_cli.engine.stats.bootstrap import percentile_ci, resample_counts

LABELS = ("benign", "malignant")  # index = class id; 1 = malignant = positive

CI_KEYS = ("accuracy", "auc", "sensitivity", "specificity", "balanced_accuracy")
#: every p(malignant) breastus reports is rounded to this many decimals once, before any
#: metric or label is computed from it, so that predictions.csv reproduces metrics.json exactly
#: (two saturated scores 1e-7 apart would otherwise be a tie in the file and not in the metric)
SCORE_DECIMALS = 6


def as_score(p: Any) -> np.ndarray:
    """Probabilities as breastus reports them (float64, :data:`SCORE_DECIMALS` decimals)."""
    return np.round(np.asarray(p, dtype=np.float64), SCORE_DECIMALS)

# --------------------------------------------------------------------------------------------
# input validation


def _validate(y_true: Any, p_malignant: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (y as int8 0/1, p as float64) or raise ValueError saying what is wrong."""
    y = np.asarray(y_true)
    p = np.asarray(p_malignant)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one label per case), got shape {y.shape}")
    if p.ndim != 1:
        raise ValueError(
            f"p_malignant must be 1-D (one probability per case), got shape {p.shape}; "
            "for a 2-column softmax output pass probs[:, 1]"
        )
    if len(y) != len(p):
        raise ValueError(f"y_true and p_malignant differ in length: {len(y)} vs {len(p)}")
    if len(y) == 0:
        raise ValueError("no cases: y_true and p_malignant are empty")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y_true must be numeric 0 (benign) / 1 (malignant), got dtype {y.dtype}")
    if p.dtype.kind not in "biuf":
        raise ValueError(f"p_malignant must be numeric, got dtype {p.dtype}")
    y_float = y.astype(np.float64)
    bad_y = ~np.isin(y_float, (0.0, 1.0))
    if bad_y.any():
        values = sorted({float(v) for v in y_float[bad_y][:5]})
        raise ValueError(f"y_true must contain only 0 (benign) and 1 (malignant); found {values}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).sum())
        raise ValueError(f"p_malignant has {bad} non-finite value(s) (NaN/inf)")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(
            f"p_malignant must lie in [0, 1]; found values in [{p.min():.4g}, {p.max():.4g}]"
        )
    return y_float.astype(np.int8), p


def _check_bootstrap_args(n_bootstrap: int, confidence: float) -> None:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


# --------------------------------------------------------------------------------------------
# small numeric helpers


def _ratio(num: float, den: float) -> float | None:
    """num / den as a float, or None when the denominator is zero (metric undefined)."""
    return float(num) / float(den) if den else None


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python scalars; NaN/inf -> None (JSON-ready)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for many case-weightings at once (Mann-Whitney U with ties counted as 1/2).

    ``weights`` is (B, n): how many times each case appears in each resample (a bootstrap
    resample is exactly a vector of multiplicities), or a single (n,) vector. Returns (B,) AUCs,
    NaN where a resample lacks a class. Cost is O(B * n) after one sort, instead of B calls to
    ``sklearn.metrics.roc_auc_score`` (each a sort), which is what makes 2000 resamples cheap.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(p, kind="mergesort")
    p_sorted = p[order]
    pos = (y[order] == 1).astype(np.float64)
    w_sorted = w[:, order]
    # Group tied scores: the pairs inside a tie group count 1/2 each.
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    w_pos = np.add.reduceat(w_sorted * pos, starts, axis=1)  # (B, K) positive weight per score
    w_neg = np.add.reduceat(w_sorted * (1.0 - pos), starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg  # negative weight strictly below each score
    numerator = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = denominator > 0
        return np.where(defined, numerator / np.where(defined, denominator, 1.0), np.nan)


# --------------------------------------------------------------------------------------------
# public API


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_malignant: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    *,
    y_pred: Sequence[int] | np.ndarray | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Binary benign/malignant metrics at ``threshold`` with percentile-bootstrap CIs.

    A case is predicted malignant iff ``p_malignant >= threshold``, unless ``y_pred`` gives each
    case's decision (pooled cross-validation, where each fold has its own threshold; the
    reported ``threshold`` is then None).

    Returns a JSON-ready dict (Python floats/ints/lists, ``None`` where undefined, never NaN):

    - ``n``, ``n_malignant``, ``n_benign``, ``threshold``;
    - ``accuracy``, ``balanced_accuracy`` (mean of sensitivity and specificity; None unless both
      classes are present), ``auc`` (ROC AUC of ``p_malignant``; None with one class),
      ``sensitivity`` (malignant recall), ``specificity`` (benign recall), ``precision``
      (malignant PPV; None when nothing is predicted malignant), ``npv`` (None when nothing is
      predicted benign), ``f1`` (malignant F1 = 2TP / (2TP + FP + FN); None when that is 0/0),
      ``brier`` (mean squared error of ``p_malignant``);
    - ``confusion_matrix`` ``[[TN, FP], [FN, TP]]`` (rows true benign/malignant, columns
      predicted) and ``confusion_labels`` ``["benign", "malignant"]``;
    - ``per_class``, ``macro_avg``, ``weighted_avg``: exactly as
      ``sklearn.metrics.classification_report(output_dict=True, zero_division=0)`` gives them
      (so there an undefined precision reads 0.0, unlike the top-level ``precision``);
    - ``ci``: ``{"accuracy", "auc", "sensitivity", "specificity", "balanced_accuracy"}`` ->
      ``[lo, hi]`` or None; ``ci_resamples``: how many resamples each interval used (resamples
      are stratified by class, so with both classes present every resample counts); ``ci_method``.

    Raises ValueError on unequal lengths, labels other than 0/1, or probabilities that are not
    finite values in [0, 1].
    """
    from sklearn.metrics import classification_report, roc_auc_score

    y, p = _validate(y_true, p_malignant)
    _check_bootstrap_args(n_bootstrap, confidence)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")

    n = int(y.size)
    pos = y == 1
    if y_pred is None:
        pred = p >= threshold  # ">=": a score equal to the threshold is called malignant
    else:
        pred = np.asarray(y_pred).astype(np.int64).ravel()
        if pred.shape != y.shape or not np.isin(pred, (0, 1)).all():
            raise ValueError("y_pred must hold one 0/1 decision per case")
        pred = pred.astype(bool)
    tp = int(np.sum(pos & pred))
    fn = int(np.sum(pos & ~pred))
    fp = int(np.sum(~pos & pred))
    tn = int(np.sum(~pos & ~pred))
    n_mal, n_ben = tp + fn, tn + fp

    sensitivity = _ratio(tp, n_mal)
    specificity = _ratio(tn, n_ben)
    both_classes = n_mal > 0 and n_ben > 0
    result: dict[str, Any] = {
        "n": n,
        "n_malignant": n_mal,
        "n_benign": n_ben,
        "threshold": threshold if y_pred is None else None,
        "accuracy": (tp + tn) / n,
        "balanced_accuracy": (sensitivity + specificity) / 2.0 if both_classes else None,
        "auc": float(roc_auc_score(y, p)) if both_classes else None,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "brier": float(np.mean((p - y) ** 2)),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "confusion_labels": list(LABELS),
    }

    report = classification_report(
        y, pred.astype(np.int8), labels=[0, 1], target_names=list(LABELS),
        output_dict=True, zero_division=0,
    )

    def _row(d: dict) -> dict[str, Any]:
        return {k: (int(v) if k == "support" else _plain(v)) for k, v in d.items()}

    result["per_class"] = {label: _row(report[label]) for label in LABELS}
    result["macro_avg"] = _row(report["macro avg"])
    result["weighted_avg"] = _row(report["weighted avg"])

    ci, used = _bootstrap_classification(y, p, pred, n_bootstrap, seed, confidence)
    # An interval is reported only where the point estimate itself is defined.
    result["ci"] = {k: (ci[k] if result[k] is not None else None) for k in CI_KEYS}
    result["ci_resamples"] = {k: (used[k] if result[k] is not None else 0) for k in CI_KEYS}
    result["ci_method"] = (
        f"percentile bootstrap, {n_bootstrap} case resamples stratified by class, "
        f"{confidence * 100:g}%"
        if n_bootstrap else "none (n_bootstrap=0)"
    )
    return result


def _bootstrap_classification(
    y: np.ndarray, p: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int, confidence: float
) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile CIs of the CI_KEYS metrics over case resamples, vectorised over resamples."""
    if n_bootstrap == 0:
        return {k: None for k in CI_KEYS}, {k: 0 for k in CI_KEYS}
    rng = np.random.default_rng(seed)
    n = y.size
    pos = y == 1
    # Per-case indicator columns; a resample's confusion counts are weights @ indicators.
    indicators = np.stack(
        [pos & pred, pos & ~pred, ~pos & pred, ~pos & ~pred], axis=1
    ).astype(np.float64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in CI_KEYS}
    for w in resample_counts(n, n_bootstrap, rng, strata=y):
        counts = w @ indicators  # (b, 4): TP, FN, FP, TN
        tp, fn, fp, tn = counts.T
        n_mal, n_ben = tp + fn, tn + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = np.where(n_mal > 0, tp / n_mal, np.nan)
            spec = np.where(n_ben > 0, tn / n_ben, np.nan)
        parts["accuracy"].append((tp + tn) / n)
        parts["sensitivity"].append(sens)
        parts["specificity"].append(spec)
        parts["balanced_accuracy"].append((sens + spec) / 2.0)  # NaN if either class is missing
        parts["auc"].append(weighted_auc(y, p, w))
    ci: dict[str, list[float] | None] = {}
    used: dict[str, int] = {}
    for key in CI_KEYS:
        values = np.concatenate(parts[key])
        used[key] = int(np.isfinite(values).sum())
        ci[key] = percentile_ci(values, confidence)
    return ci, used


def threshold_for_sensitivity(
    y_true: Sequence[int] | np.ndarray, p_malignant: Sequence[float] | np.ndarray, target: float
) -> float:
    """The highest threshold t for which "malignant iff p >= t" reaches sensitivity >= target.

    Choose it on the validation split, then apply it unchanged to the test split. The answer is
    the k-th highest malignant score with k = ceil(target * n_malignant): any higher threshold
    catches at most k - 1 malignant cases. Raises ValueError if there is no malignant case or
    ``target`` is not in (0, 1].
    """
    y, p = _validate(y_true, p_malignant)
    target = float(target)
    if not (0.0 < target <= 1.0):
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target!r}")
    scores = np.sort(p[y == 1])[::-1]
    if scores.size == 0:
        raise ValueError("no malignant case: sensitivity is undefined, cannot choose a threshold")
    # The small tolerance keeps float noise (0.9 * 10 = 9.000000000000002) from asking for one
    # more case than the target needs.
    k = max(1, math.ceil(target * scores.size - 1e-9))
    return float(scores[k - 1])


def aggregate(
    runs: list[dict[str, Any]],
    keys: Sequence[str] = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity",
                           "precision", "f1"),
) -> dict[str, dict[str, Any]]:
    """Mean and sample SD (ddof=1; 0.0 for a single run) of each key across runs (e.g. folds).

    None / NaN / missing values are ignored (and counted out of ``n``). Returns
    ``{key: {"mean", "sd", "n", "values"}}``, with mean and sd None when no run has the key.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = []
        for run in runs:
            v = run.get(key)
            if v is None:
                continue
            v = float(v)
            if math.isfinite(v):
                values.append(v)
        if values:
            arr = np.asarray(values)
            mean = float(arr.mean())
            sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        else:
            mean = sd = None
        out[key] = {"mean": mean, "sd": sd, "n": len(values), "values": values}
    return out


FOLD_KEYS = {
    "cls": ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "precision",
            "f1"),
    "seg": ("iou", "dice", "precision", "recall"),
}


def fold_summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean ± sd across the folds of one model, from each fold's ``metrics.json`` dict; None
    unless every run is a fold (has ``fold``), all of one task and one model or backbone.

    Returns ``{"task", "model", "folds", "metrics": aggregate(...)}``.
    """
    tasks = {r.get("task") for r in runs}
    models = {r.get("model") or r.get("backbone") for r in runs}
    if (len(runs) < 2 or any(r.get("fold") is None for r in runs) or len(tasks) != 1
            or len(models) != 1 or next(iter(tasks)) not in FOLD_KEYS):
        return None
    task = tasks.pop()
    return {"task": task, "model": models.pop(), "folds": len(runs),
            "metrics": aggregate(runs, FOLD_KEYS[task])}
