"""The distance of a scan's features from a run's training features, in numbers only: per level
a PCA (standardisation folded in) and a shrunk (Ledoit-Wolf) precision, each level scaled by the
training cases' own mean squared distance, calibrated on the validation cases so that 95% of them
score below 1. engine/apply/ood.py takes the features from a model and stores these in a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from breastus_cli.errors import InputError, UsageError

MAX_DIMS = 64
QUANTILE = 0.95


@dataclass
class LevelStats:
    """One level: PCA ``center``/``components`` (standardisation folded in), the training
    ``mean`` and ``precision`` in PCA space, and ``spread``, the training cases' mean squared
    distance (1 for the older single-level kind)."""

    center: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    mean: np.ndarray  # (k,)
    precision: np.ndarray  # (k, k)
    spread: float = 1.0

    def distance(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.center) @ self.components.T - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))


@dataclass
class FeatureStats:
    """What scores a scan: one :class:`LevelStats` per entry of ``layers`` (the features are
    the levels' pooled outputs side by side, in that order), and ``scale`` (q95 of the
    validation cases' combined distances)."""

    levels: list[LevelStats]
    layers: list[str]
    scale: float
    val_distances: np.ndarray  # the validation cases' distances (the yardstick, for reports)

    @property
    def widths(self) -> list[int]:
        return [int(level.components.shape[1]) for level in self.levels]

    def level_distances(self, features: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != sum(self.widths):
            raise UsageError(f"features of width {x.shape[-1]} do not fit statistics of levels "
                             f"{self.widths}")
        edges = np.cumsum([0] + self.widths)
        return [level.distance(x[:, a:b]) for level, a, b in zip(self.levels, edges[:-1],
                                                                  edges[1:])]

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Root of the mean over levels of the squared distance / the training spread."""
        parts = [d ** 2 / level.spread
                 for d, level in zip(self.level_distances(features), self.levels)]
        return np.sqrt(np.mean(parts, axis=0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """``ood_score``: distance / q95 of the validation cases' distances."""
        return self.distance(features) / self.scale

    @property
    def val_scores(self) -> np.ndarray:
        return self.val_distances / self.scale


def fit_level(train: np.ndarray, standardise: bool = True) -> LevelStats:
    """One level's statistics of its training features."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, np.float64)
    center = train.mean(axis=0)
    sd = train.std(axis=0) + 1e-6 if standardise else np.ones(train.shape[1])
    _, _, vt = np.linalg.svd((train - center) / sd, full_matrices=False)
    k = max(1, min(MAX_DIMS, len(train) - 1, train.shape[1]))
    components = vt[:k] / sd  # standardisation folded in: ((x - c) / sd) @ V.T
    lw = LedoitWolf().fit((train - center) @ components.T)
    level = LevelStats(center, components, lw.location_, lw.precision_)
    if standardise:
        level.spread = max(float(np.mean(level.distance(train) ** 2)), 1e-12)
    return level


def fit(train: np.ndarray, val: np.ndarray, widths: list[int] | None = None,
        layers: list[str] | None = None) -> FeatureStats:
    """The statistics of training features ``train``, calibrated on validation features ``val``
    (``widths``: the levels' feature counts, side by side; default one level)."""
    train = np.asarray(train, np.float64)
    val = np.asarray(val, np.float64)
    if len(train) < 3 or len(val) < 1:
        raise InputError(f"feature statistics need at least 3 training and 1 validation case "
                         f"(got {len(train)} and {len(val)})")
    widths = widths or [train.shape[1]]
    edges = np.cumsum([0] + list(widths))
    levels = [fit_level(train[:, a:b]) for a, b in zip(edges[:-1], edges[1:])]
    names = layers or [f"level{i}" for i in range(len(levels))]
    stats = FeatureStats(levels, names, 1.0, np.zeros(0))
    val_d = stats.distance(val)
    # the ceil(0.95 n)-th smallest distance: at least 95% of the validation cases score <= 1
    scale = float(np.quantile(val_d, QUANTILE, method="inverted_cdf"))
    stats.scale = scale if scale > 0 else 1.0
    stats.val_distances = val_d
    return stats
