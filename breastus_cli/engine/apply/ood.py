"""How unlike its training scans a scan is, in a classifier run's own feature space.

The features are the backbone's global-average-pooled output (the ``pool`` layer of
:func:`breastus_cli.models.classifiers.build_classifier`). A run's training cases give their
mean and a shrunk covariance (PCA to at most :data:`MAX_DIMS` dimensions, then Ledoit-Wolf);
a scan's Mahalanobis distance to them, divided by the 95th percentile of the run's own
validation cases' distances, is its ``ood_score``: 95% of those validation cases score below 1,
and a scan with ``ood_score <= 1`` is ``in_domain``.

Stored in the run (plain arrays and JSON, no pickle): ``RUN/feature_stats.npz`` (mean,
components, precision, the calibration scale) and ``RUN/feature_stats.json`` (which cases,
their count, the model's SHA-256; :class:`breastus_cli.runfiles.FeatureStatsFile`). A run
without them (older runs) computes them on demand from its dataset and writes them atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend, runfiles
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.pipeline import make_dataset
from breastus_cli.engine.apply.loaded_run import MAX_BATCH, keras_runner, load_model
from breastus_cli.engine.runs.rundir import MODEL, run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError, UsageError

STATS_NPZ = "feature_stats.npz"
STATS_JSON = "feature_stats.json"
POOL_LAYER = "pool"
MAX_DIMS = 64
QUANTILE = 0.95
METHOD = "mahalanobis (PCA <= 64 dims, Ledoit-Wolf), / q95 of validation distances"
BATCH = 32


@dataclass
class FeatureStats:
    """What scores a scan: PCA ``center``/``components``, the training ``mean`` and
    ``precision`` in PCA space, and ``scale`` (q95 of the validation cases' distances)."""

    center: np.ndarray
    components: np.ndarray  # (k, D)
    mean: np.ndarray  # (k,)
    precision: np.ndarray  # (k, k)
    scale: float
    val_distances: np.ndarray  # the validation cases' distances (the yardstick, for reports)

    def distance(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.center) @ self.components.T - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """``ood_score``: distance / q95 of the validation cases' distances."""
        return self.distance(features) / self.scale

    @property
    def val_scores(self) -> np.ndarray:
        return self.val_distances / self.scale


def pooled_model(keras_model: Any) -> Any:
    """The classifier up to its pooled features (its ``pool`` layer)."""

    keras = backend.keras()
    try:
        layer = keras_model.get_layer(POOL_LAYER)
    except ValueError:
        raise UsageError(f"the model {keras_model.name} has no '{POOL_LAYER}' layer: feature "
                         "distances need a breastus classifier run") from None
    return keras.Model(keras_model.inputs, layer.output)


def feature_runner(keras_model: Any, size: int):
    """(N, S, S, 1) float32 -> (N, D) pooled features, compiled."""

    return keras_runner(pooled_model(keras_model), size)


def features_of_files(keras_model: Any, size: int, paths: list[str]) -> np.ndarray:
    """Pooled features of prepared image files, decoded and resized as in training."""

    run = feature_runner(keras_model, size)
    parts = [run(images.numpy()) for images, _ in make_dataset(paths, size, BATCH, cache=False)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)


def fit(train: np.ndarray, val: np.ndarray) -> FeatureStats:
    """The statistics of training features ``train``, calibrated on validation features ``val``."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, np.float64)
    val = np.asarray(val, np.float64)
    if len(train) < 3 or len(val) < 1:
        raise InputError(f"feature statistics need at least 3 training and 1 validation case "
                         f"(got {len(train)} and {len(val)})")
    center = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - center, full_matrices=False)
    k = max(1, min(MAX_DIMS, len(train) - 1, train.shape[1]))
    components = vt[:k]
    z = (train - center) @ components.T
    lw = LedoitWolf().fit(z)
    stats = FeatureStats(center, components, lw.location_, lw.precision_, 1.0, np.zeros(0))
    val_d = stats.distance(val)
    # the ceil(0.95 n)-th smallest distance: at least 95% of the validation cases score <= 1
    scale = float(np.quantile(val_d, QUANTILE, method="inverted_cdf"))
    stats.scale = scale if scale > 0 else 1.0
    stats.val_distances = val_d
    return stats


def model_sha256(run_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(Path(run_dir) / MODEL, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(run_dir: Path, stats: FeatureStats, record: dict[str, Any]) -> None:
    """Write ``RUN/feature_stats.npz`` and ``.json`` atomically (the npz first: the JSON, read
    first, names the model the arrays belong to)."""
    with atomic_path(run_dir / STATS_NPZ) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, center=stats.center, components=stats.components, mean=stats.mean,
                     precision=stats.precision, scale=np.float64(stats.scale),
                     val_distances=stats.val_distances)
    write_json(run_dir / STATS_JSON, record)


def load(run_dir: Path) -> tuple[FeatureStats, dict[str, Any]] | None:
    """The stored statistics, or None when absent; a malformed file is an InputError."""
    json_path, npz_path = run_dir / STATS_JSON, run_dir / STATS_NPZ
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    record = runfiles.read_feature_stats(json_path)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in ("center", "components", "mean",
                                                       "precision", "scale", "val_distances")}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"bad run file: {npz_path}: {type(exc).__name__}: {str(exc)[:100]}",
                         hint="delete feature_stats.npz and .json: they are computed again"
                         ) from None
    k = arrays["components"].shape[0] if arrays["components"].ndim == 2 else -1
    if (k < 1 or arrays["mean"].shape != (k,) or arrays["precision"].shape != (k, k)
            or arrays["center"].shape != (arrays["components"].shape[1],)
            or not np.all(np.isfinite(arrays["precision"])) or float(arrays["scale"]) <= 0):
        raise InputError(f"bad run file: {npz_path}: arrays of inconsistent shapes or values",
                         hint="delete feature_stats.npz and .json: they are computed again")
    return FeatureStats(arrays["center"], arrays["components"], arrays["mean"],
                        arrays["precision"], float(arrays["scale"]),
                        arrays["val_distances"]), record


def ensure(run_dir: str | Path, keras_model: Any = None, data: str | Path | None = None,
           write: bool = True) -> tuple[FeatureStats, dict[str, Any]]:
    """The run's feature statistics: stored ones for this very model, else computed from its
    training and validation cases (``data``: the dataset, when the recorded path moved) and
    written into the run (unless ``write`` is False)."""
    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    if config.task != "cls":
        raise UsageError(f"{run_dir} is a '{config.task}' run: feature distances need a "
                         "classifier run")
    sha = model_sha256(run_dir)
    stored = load(run_dir)
    if stored is not None and stored[1].get("model_sha256") == sha:
        return stored
    if keras_model is None:

        keras_model = load_model(run_dir)
    size = config.img_size
    train = run_cases(config, "train", data)
    val = run_cases(config, "val", data)
    if len(val) == 0:  # a run trained without validation cases: calibrate on the test ones
        raise InputError(f"{run_dir}: the run has no validation cases to calibrate ood_score on")
    stats = fit(features_of_files(keras_model, size, list(train["image_path"])),
                features_of_files(keras_model, size, list(val["image_path"])))
    record = {"format": "breastus-feature-stats", "model_sha256": sha, "layer": POOL_LAYER,
              "method": METHOD, "dims": int(stats.components.shape[0]),
              "features": int(stats.components.shape[1]), "quantile": QUANTILE,
              "scale": stats.scale,
              "train_cases": [str(c) for c in train["case_id"]], "n_train": len(train),
              "val_cases": [str(c) for c in val["case_id"]], "n_val": len(val),
              "data": str(config.data_path or data or "")}
    if write:
        try:
            save(run_dir, stats, record)
        except OSError as exc:  # a read-only run: the statistics serve this process only
            import logging

            logging.getLogger("breastus").warning(
                "feature statistics not stored in %s (%s): computed again next time",
                run_dir, exc.strerror or exc)
    return stats, record


def in_domain(scores: Iterable[float]) -> np.ndarray:
    return np.asarray(list(scores), np.float64) <= 1.0


# ---- predict's columns ---------------------------------------------------------------------
def with_ood(loaded: Any) -> Any:
    """``loaded`` (an :class:`~breastus_cli.engine.apply.inference.LoadedRun`) whose ``run``
    returns a third column, the ``ood_score``, when it is one Keras classifier run with a pooling
    layer; else ``loaded`` itself. The run's statistics are computed (and stored) when missing;
    when they cannot be (its dataset is not there), a warning says so and no column is added."""
    import logging

    source = Path(loaded.source)
    if (loaded.task != "cls" or loaded.keras_model is None or loaded.members
            or loaded.roi_margin is not None  # lesion crops: not what the statistics saw
            or not (source / MODEL).is_file()
            or POOL_LAYER not in {layer.name for layer in loaded.keras_model.layers}):
        return loaded
    try:
        stats, _ = ensure(source, loaded.keras_model)
    except InputError as exc:
        logging.getLogger("breastus").warning("no ood_score column: %s", exc.message)
        return loaded
    if loaded.tta == "none":  # one forward pass gives both (p and the pooled features)
        both = _both_runner(loaded.keras_model, loaded.size)
    else:  # the (augmented) probabilities, and the features of the image as given
        features = feature_runner(loaded.keras_model, loaded.size)

        def both(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return loaded.run(x), features(x)

    def run(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        probs, feats = both(x)
        scores = stats.score(feats) if len(x) else np.zeros(0)
        return np.concatenate([np.asarray(probs, np.float32),
                               scores[:, None].astype(np.float32)], axis=1)

    return replace(loaded, run=run)


def _both_runner(keras_model: Any, size: int):
    """(N, S, S, 1) -> (outputs, pooled features), one compiled forward pass."""

    keras, tf = backend.keras(), backend.tf()
    model = keras.Model(keras_model.inputs,
                        [keras_model.output, keras_model.get_layer(POOL_LAYER).output])
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                       input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [step(x[i:i + MAX_BATCH]) for i in range(0, max(len(x), 1), MAX_BATCH)]
        return (np.concatenate([p[0].numpy() for p in parts]),
                np.concatenate([p[1].numpy() for p in parts]))

    return run


def cells(score: float) -> dict[str, Any]:
    """predictions.csv's ``ood_score`` and ``in_domain`` cells of one scan."""
    return {"ood_score": round(float(score), 4), "in_domain": bool(score <= 1.0)}
