"""Two models scored on the same cases: each one's ROC AUC (or mean per-case score, e.g. Dice)
and the difference, with a paired bootstrap CI (each resample draws cases once and scores both
models on them, so what the two share cancels out of the difference; AUC class-stratified, as
the rest of breastus's CIs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from breastus_cli.engine.stats.bootstrap import percentile_ci, resample_counts
from breastus_cli.engine.stats.metrics import weighted_auc
from breastus_cli.errors import InputError


@dataclass
class PairedAUC:
    """Model A's and model B's AUC on the same cases and B minus A, each with its CI."""

    n: int
    n_malignant: int
    auc_a: float
    auc_b: float
    ci_a: list[float] | None
    ci_b: list[float] | None
    difference: float  # auc_b - auc_a
    ci_difference: list[float] | None
    n_bootstrap: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_auc(y_true: Any, p_a: Any, p_b: Any, n_bootstrap: int = 2000,
               confidence: float = 0.95, seed: int = 0) -> PairedAUC:
    """AUC of scores ``p_a`` and ``p_b`` of the same cases (``y_true`` 1 = malignant) and the
    paired, class-stratified bootstrap CI of ``auc_b - auc_a`` (percentile, ``n_bootstrap``
    resamples drawn from ``numpy.random.default_rng(seed)``)."""
    y = np.asarray(y_true)
    a = np.asarray(p_a, dtype=np.float64)
    b = np.asarray(p_b, dtype=np.float64)
    if not (y.ndim == a.ndim == b.ndim == 1 and len(y) == len(a) == len(b)):
        raise InputError(f"paired AUC needs one label and two scores per case (got {len(y)} "
                         f"labels, {len(a)} and {len(b)} scores)")
    if not set(np.unique(y)) <= {0, 1}:
        raise InputError("paired AUC needs labels 0 (benign) and 1 (malignant)")
    n_malignant = int((y == 1).sum())
    if n_malignant in (0, len(y)):
        raise InputError(f"AUC is undefined on {len(y)} cases of one class only")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("paired AUC needs a finite score for every case")
    y = y.astype(np.int64)
    aucs_a, aucs_b = [], []
    for block in resample_counts(len(y), n_bootstrap, np.random.default_rng(seed), strata=y):
        aucs_a.append(weighted_auc(y, a, block))
        aucs_b.append(weighted_auc(y, b, block))
    boot_a = np.concatenate(aucs_a) if aucs_a else np.empty(0)
    boot_b = np.concatenate(aucs_b) if aucs_b else np.empty(0)
    auc_a = float(weighted_auc(y, a, np.ones(len(y)))[0])
    auc_b = float(weighted_auc(y, b, np.ones(len(y)))[0])
    return PairedAUC(n=len(y), n_malignant=n_malignant, auc_a=auc_a, auc_b=auc_b,
                     ci_a=percentile_ci(boot_a, confidence),
                     ci_b=percentile_ci(boot_b, confidence), difference=auc_b - auc_a,
                     ci_difference=percentile_ci(boot_b - boot_a, confidence),
                     n_bootstrap=n_bootstrap, confidence=confidence)


@dataclass
class PairedMean:
    """The mean per-case score (e.g. Dice) of model A and of model B on the same cases and B
    minus A, each with its CI."""

    n: int
    mean_a: float
    mean_b: float
    ci_a: list[float] | None
    ci_b: list[float] | None
    difference: float  # mean_b - mean_a
    ci_difference: list[float] | None
    n_bootstrap: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_mean(scores_a: Any, scores_b: Any, n_bootstrap: int = 2000,
                confidence: float = 0.95, seed: int = 0) -> PairedMean:
    """Mean of per-case scores ``scores_a`` and ``scores_b`` of the same cases and the paired
    bootstrap CI of ``mean_b - mean_a`` (percentile; each of ``n_bootstrap`` resamples, drawn
    from ``numpy.random.default_rng(seed)``, weighs the same cases for both)."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if not (a.ndim == b.ndim == 1 and len(a) == len(b)) or len(a) == 0:
        raise InputError(f"a paired mean needs two scores per case (got {a.size} and {b.size})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("a paired mean needs a finite score for every case")
    means_a, means_b = [], []
    for block in resample_counts(len(a), n_bootstrap, np.random.default_rng(seed)):
        means_a.append(block @ a / len(a))
        means_b.append(block @ b / len(b))
    boot_a = np.concatenate(means_a) if means_a else np.empty(0)
    boot_b = np.concatenate(means_b) if means_b else np.empty(0)
    return PairedMean(n=len(a), mean_a=float(a.mean()), mean_b=float(b.mean()),
                      ci_a=percentile_ci(boot_a, confidence),
                      ci_b=percentile_ci(boot_b, confidence),
                      difference=float(b.mean() - a.mean()),
                      ci_difference=percentile_ci(boot_b - boot_a, confidence),
                      n_bootstrap=n_bootstrap, confidence=confidence)
