"""Percentile bootstrap over cases: the one resampling helper behind every confidence interval
in breastus (classification metrics, pooled cross-validation, segmentation means).

- Classification metrics resample *within each class* (stratified): every resample keeps the
  numbers of malignant and benign cases of the data, so sensitivity, specificity and AUC are
  defined in every resample and no resample has to be dropped. (With one class in the data the
  metrics that need both are undefined and get no interval.)
- Means of per-case scores (Dice, IoU) use ``scipy.stats.bootstrap`` (percentile method).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

# Upper bound on the cells of one (resamples x cases) block, so memory stays bounded (about
# 64 MB of int64) however many cases an evaluation has.
MAX_CELLS = 8_000_000


def resample_counts(
    n: int, n_bootstrap: int, rng: np.random.Generator, strata: Any = None
) -> Iterator[np.ndarray]:
    """Yield (b, n) matrices of multiplicities (how often each case appears in each resample),
    ``n_bootstrap`` rows in all, in memory-bounded blocks.

    ``strata``: one group label per case; each resample then draws, within each group, as many
    cases as the group has (stratified bootstrap). None: plain resampling of all n cases.
    """
    groups = [np.arange(n)] if strata is None else [
        np.flatnonzero(np.asarray(strata) == g) for g in np.unique(np.asarray(strata))]
    block = max(1, min(n_bootstrap, MAX_CELLS // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        b = min(block, n_bootstrap - done)
        idx = np.concatenate([g[rng.integers(0, g.size, size=(b, g.size))] for g in groups
                              if g.size], axis=1) if n else np.zeros((b, 0), dtype=np.int64)
        # Row r's indices are offset by r*n so one bincount counts every row at once.
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n)
        done += b


def percentile_ci(values: np.ndarray, confidence: float) -> list[float] | None:
    """[lo, hi] percentile interval of the finite ``values``; None when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    alpha = 1.0 - confidence
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return [float(lo), float(hi)]


def mean_ci(values: np.ndarray, n_bootstrap: int, seed: int,
            confidence: float) -> list[list[float] | None]:
    """Percentile bootstrap CI of the mean of each column of ``values`` (cases x metrics),
    by ``scipy.stats.bootstrap``; None for a column with fewer than two cases."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    if n < 2 or n_bootstrap == 0:
        return [None] * k
    out: list[list[float] | None] = []
    for j in range(k):
        column = values[:, j]
        if np.ptp(column) == 0:  # every resample has the same mean
            out.append([float(column[0]), float(column[0])])
            continue
        res = stats.bootstrap((column,), np.mean, n_resamples=n_bootstrap,
                              confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(seed), vectorized=True,
                              batch=max(1, MAX_CELLS // n))
        out.append([float(res.confidence_interval.low), float(res.confidence_interval.high)])
    return out
