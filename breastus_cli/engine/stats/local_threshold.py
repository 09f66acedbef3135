"""How many labeled local cases a threshold re-chosen at a new hospital needs.

From one model's scores on the new hospital's cases (labels known), draw ``n`` local cases
(stratified by class, without replacement, seeded), choose the threshold for the target
sensitivity on them (:func:`~breastus_cli.engine.stats.metrics.threshold_for_sensitivity`, as
``breastus adapt --labels`` does) and measure the sensitivity it reaches on the remaining cases.
Repeated, that says how often ``n`` local cases give a threshold within a tolerance of the target,
and how far it can land.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from breastus_cli.engine.stats.metrics import threshold_for_sensitivity


@dataclass(frozen=True)
class LocalThresholdRow:
    """What ``n`` local cases gave over ``repeats`` draws."""

    n: int
    n_malignant: int  # malignant cases among the n drawn
    repeats: int
    within: float  # fraction of draws whose sensitivity on the rest is within tolerance of target
    median: float  # median sensitivity on the remaining cases
    low: float  # 5th percentile (a 90% range)
    high: float  # 95th percentile
    median_specificity: float  # median specificity on the remaining cases

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stratified_draw(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` cases, classes in their proportions in ``y`` (at least one of each)."""
    malignant, benign = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_mal = int(round(n * len(malignant) / len(y)))
    n_mal = min(max(n_mal, 1), n - 1, len(malignant))
    n_ben = n - n_mal
    if n_ben > len(benign):
        raise ValueError(f"cannot draw {n} cases: only {len(y)} are given")
    return np.concatenate([rng.choice(malignant, n_mal, replace=False),
                           rng.choice(benign, n_ben, replace=False)])


def local_threshold_study(y_true: Sequence[int] | np.ndarray,
                          p_malignant: Sequence[float] | np.ndarray, sizes: Sequence[int],
                          target: float = 0.9, tolerance: float = 0.05, repeats: int = 200,
                          seed: int = 0) -> list[LocalThresholdRow]:
    """One row per ``n`` in ``sizes``: draw ``n`` stratified local cases ``repeats`` times,
    re-choose the threshold for sensitivity ``target`` on them, score the remaining cases.

    Example: ``local_threshold_study(y, p, [10, 20, 40])[0].within`` is the fraction of 10-case
    draws whose threshold reached a sensitivity within ``tolerance`` of ``target`` on the rest.
    """
    y, p = np.asarray(y_true), np.asarray(p_malignant, np.float64)
    if y.ndim != 1 or y.shape != p.shape or not set(np.unique(y)) <= {0, 1}:
        raise ValueError("the study needs one label 0/1 and one score per case")
    if int((y == 1).sum()) < 2 or int((y == 0).sum()) < 2:
        raise ValueError("the study needs at least 2 malignant and 2 benign cases")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        if not (2 <= n <= len(y) - 2):
            raise ValueError(f"n must lie in 2..{len(y) - 2} for {len(y)} cases (got {n})")
        sens, spec = np.empty(repeats), np.empty(repeats)
        n_mal = 0
        for r in range(repeats):
            drawn = stratified_draw(y, n, rng)
            rest = np.ones(len(y), bool)
            rest[drawn] = False
            threshold = threshold_for_sensitivity(y[drawn], p[drawn], target)
            called = p[rest] >= threshold
            truth = y[rest]
            sens[r] = called[truth == 1].mean() if (truth == 1).any() else np.nan
            spec[r] = (~called[truth == 0]).mean() if (truth == 0).any() else np.nan
            n_mal = int(y[drawn].sum())
        ok = np.abs(sens - target) <= tolerance + 1e-12
        rows.append(LocalThresholdRow(
            n=int(n), n_malignant=n_mal, repeats=repeats, within=float(ok.mean()),
            median=float(np.nanmedian(sens)), low=float(np.nanquantile(sens, 0.05)),
            high=float(np.nanquantile(sens, 0.95)), median_specificity=float(np.nanmedian(spec))))
    return rows


def markdown_table(rows: Sequence[LocalThresholdRow], target: float, tolerance: float) -> str:
    """The rows as a markdown table."""
    lines = [f"| local cases n (malignant) | within {tolerance:g} of {target:g} | median "
             "sensitivity | 90% range | median specificity |", "|---|---|---|---|---|"]
    lines += [f"| {r.n} ({r.n_malignant}) | {r.within:.0%} | {r.median:.3f} | "
              f"{r.low:.3f} - {r.high:.3f} | {r.median_specificity:.3f} |" for r in rows]
    return "\n".join(lines)
