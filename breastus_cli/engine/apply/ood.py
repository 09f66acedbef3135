"""How unlike its training scans a scan is, in a classifier run's own feature space.

The features are taken at several depths of the backbone ("levels"): for each spatial
resolution the backbone works at, the output of its last layer at that resolution, global-average
pooled (:func:`level_layers`; found by shape, so every backbone of the registry and any Keras
classifier with a ``pool`` layer has them; the deepest level is the pooled features the head
sees). Early levels see texture, grey levels and speckle, where another scanner differs most;
the pooled features alone hardly told two hospitals apart (AUC 0.48 BUS-BRA test vs BrEaST on the
Lite0 run, against 0.94 with the levels).

Per level, the run's training cases give a mean and a shrunk covariance (features standardised,
PCA to at most :data:`MAX_DIMS` dimensions, then Ledoit-Wolf); a scan's squared Mahalanobis
distance at each level is divided by the training cases' own mean squared distance there (so
each level counts alike), averaged over the levels, and its square root divided by the 95th
percentile of the run's own validation cases' values is its ``ood_score``: 95% of those
validation cases score below 1, and a scan with ``ood_score <= 1`` is ``in_domain``.

Stored in the run (plain arrays and JSON, no pickle): ``RUN/feature_stats.npz`` (per level the
centre, components, mean, precision and spread; the calibration scale) and
``RUN/feature_stats.json`` (which layers, which cases, their count, the model's SHA-256;
:class:`breastus_cli.runfiles.FeatureStatsFile`). ``train-cls`` writes them at the end of
training; a run without them (older runs) computes them on demand from its dataset and writes
them atomically. Statistics of the older single-level kind (the ``pool`` layer only, no
``levels`` in the JSON) are computed again in the multi-level kind when the run's dataset is
there; when it is not, they are still read and used as they are (one level, as before).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend, runfiles
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.pipeline import make_dataset
from breastus_cli.engine.apply.loaded_run import MAX_BATCH, keras_runner, load_model
from breastus_cli.engine.runs.rundir import MODEL, run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.feature_distance import (  # noqa: F401 (ood.fit etc.)
    MAX_DIMS,
    QUANTILE,
    FeatureStats,
    LevelStats,
    fit,
    fit_level,
)
from breastus_cli.errors import InputError, UsageError

STATS_NPZ = "feature_stats.npz"
STATS_JSON = "feature_stats.json"
POOL_LAYER = "pool"
BACKBONE_LAYER = "backbone"
METHOD = ("multi-level mahalanobis: per level (GAP of the last layer at each resolution) "
          "standardised features, PCA <= 64 dims, Ledoit-Wolf; squared distances / the training "
          "cases' mean, averaged over levels, square root, / q95 of validation")
OLD_METHOD = "mahalanobis (PCA <= 64 dims, Ledoit-Wolf), / q95 of validation distances"
BATCH = 32
#: layers whose output is no level: inputs, and paddings (one row more than the level they pad)
_NOT_LEVELS = ("InputLayer", "ZeroPadding2D")


# ---- which layers: found by shape ----------------------------------------------------------
def _graph(keras_model: Any) -> tuple[Any, str]:
    """The model holding the backbone's layers (the nested ``backbone`` model of a breastus
    classifier, else the classifier itself) and the prefix of their names in :func:`tap`."""
    try:
        inner = keras_model.get_layer(BACKBONE_LAYER)
    except ValueError:
        inner = None
    if inner is not None and hasattr(inner, "layers"):
        return inner, f"{BACKBONE_LAYER}/"
    return keras_model, ""


def level_layers(keras_model: Any) -> list[str]:
    """The levels of a classifier: for each spatial resolution of its backbone, its last layer
    with a 4-D output at that resolution (in graph order: coarser levels last), named
    ``backbone/<layer>`` inside a nested backbone. A classifier without a ``pool`` layer has
    none (UsageError); one without convolutional layers before it has one, ``pool``."""
    if POOL_LAYER not in {layer.name for layer in keras_model.layers}:
        raise UsageError(f"the model {keras_model.name} has no '{POOL_LAYER}' layer: feature "
                         "distances need a breastus classifier run")
    graph, prefix = _graph(keras_model)
    last: dict[int, str] = {}
    for layer in graph.layers:
        if layer.name == POOL_LAYER:
            break
        shape = _output_shape(layer)
        if type(layer).__name__ in _NOT_LEVELS or shape is None or len(shape) != 4:
            continue
        last.pop(shape[1], None)  # dict order: the resolution's place is where it ends
        last[shape[1]] = layer.name
    if not last:  # no convolutional layer before the pooling: the pooled features alone
        return [POOL_LAYER]
    return [prefix + name for name in last.values()]


def _output_shape(layer: Any) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer used twice has no single output
        return None


def _level_tensors(keras_model: Any, layers: list[str]) -> list[Any]:
    """The pooled outputs of ``layers`` as tensors of ``keras_model``'s graph."""
    keras = backend.keras()
    if layers == [POOL_LAYER]:
        return [keras_model.get_layer(POOL_LAYER).output]
    graph, prefix = _graph(keras_model)
    names = [name[len(prefix):] if prefix and name.startswith(prefix) else name
             for name in layers]
    try:
        outputs = [graph.get_layer(name).output for name in names]
    except ValueError as exc:
        raise InputError(f"the model has no layer named in its feature statistics ({exc})",
                         hint="delete feature_stats.npz and .json: they are computed again"
                         ) from None
    pool = keras.layers.GlobalAveragePooling2D
    pooled = [pool(name=f"ood_level_{i}")(out) for i, out in enumerate(outputs)]
    if graph is keras_model:
        return pooled
    # the backbone's own graph, called on its input in the classifier's graph
    node = graph._inbound_nodes[-1]
    tensor = node.input_tensors
    tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
    taps = keras.Model(graph.inputs, pooled)(tensor)
    return list(taps) if isinstance(taps, (list, tuple)) else [taps]


def pooled_model(keras_model: Any, layers: list[str] | None = None) -> Any:
    """The classifier up to its levels' pooled features, side by side (``layers``: the levels,
    default :func:`level_layers`)."""
    keras = backend.keras()
    tensors = _level_tensors(keras_model, layers or level_layers(keras_model))
    out = tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(
        name="ood_levels")(tensors)
    return keras.Model(keras_model.inputs, out)


def feature_runner(keras_model: Any, size: int, layers: list[str] | None = None):
    """(N, S, S, 1) float32 -> (N, D) the levels' pooled features, compiled."""

    return keras_runner(pooled_model(keras_model, layers), size)


def features_of_files(keras_model: Any, size: int, paths: list[str],
                      layers: list[str] | None = None) -> np.ndarray:
    """The levels' pooled features of prepared image files, decoded and resized as in
    training."""

    run = feature_runner(keras_model, size, layers)
    parts = [run(images.numpy()) for images, _ in make_dataset(paths, size, BATCH, cache=False)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)


def model_sha256(run_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(Path(run_dir) / MODEL, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(run_dir: Path, stats: FeatureStats, record: dict[str, Any]) -> None:
    """Write ``RUN/feature_stats.npz`` and ``.json`` atomically (the npz first: the JSON, read
    first, names the model the arrays belong to)."""
    arrays: dict[str, np.ndarray] = {"scale": np.float64(stats.scale),
                                     "val_distances": stats.val_distances,
                                     "spread": np.array([lv.spread for lv in stats.levels])}
    for i, level in enumerate(stats.levels):
        arrays.update({f"center_{i}": level.center, f"components_{i}": level.components,
                       f"mean_{i}": level.mean, f"precision_{i}": level.precision})
    with atomic_path(run_dir / STATS_NPZ) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json(run_dir / STATS_JSON, record)


def _bad(npz_path: Path, why: str) -> InputError:
    return InputError(f"bad run file: {npz_path}: {why}",
                      hint="delete feature_stats.npz and .json: they are computed again")


def _disagree(json_path: Path, why: str) -> InputError:
    """The JSON record and its .npz arrays disagree: one line naming both (either may be the
    changed one)."""
    return _bad(json_path, f"{why} than its {STATS_NPZ} holds")


def _level(arrays: dict[str, np.ndarray], suffix: str, spread: float, npz_path: Path
           ) -> LevelStats:
    center, components, mean, precision = (arrays[f"{k}{suffix}"] for k in
                                           ("center", "components", "mean", "precision"))
    k = components.shape[0] if components.ndim == 2 else -1
    if (k < 1 or mean.shape != (k,) or precision.shape != (k, k)
            or center.shape != (components.shape[1],) or not np.all(np.isfinite(precision))
            or not spread > 0):
        raise _bad(npz_path, "arrays of inconsistent shapes or values")
    return LevelStats(center, components, mean, precision, spread)


def load(run_dir: Path) -> tuple[FeatureStats, dict[str, Any]] | None:
    """The stored statistics, or None when absent; a malformed file is an InputError. Files of
    the older single-level kind (no ``levels`` in the JSON) read as one level, ``pool``."""
    json_path, npz_path = run_dir / STATS_JSON, run_dir / STATS_NPZ
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    record = runfiles.read_feature_stats(json_path)
    layers = record.get("levels") or [POOL_LAYER]
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
        multi = "spread" in arrays  # the arrays of several levels
        if bool(record.get("levels")) != multi:
            raise _disagree(json_path, "it names " + (f"{len(layers)} level(s)"
                                                      if record.get("levels") else "no levels")
                            + ", other arrays")
        if multi:
            spread = arrays["spread"]
            if spread.shape != (len(layers),):
                raise _disagree(json_path, f"it names {len(layers)} level(s), other levels")
            levels = [_level(arrays, f"_{i}", float(spread[i]), npz_path)
                      for i in range(len(layers))]
            if [int(lv.components.shape[1]) for lv in levels] != record.get("widths"):
                raise _disagree(json_path, f"its feature widths {record.get('widths')} are "
                                           "other widths")
        else:
            levels = [_level(arrays, "", 1.0, npz_path)]
        scale, val_distances = float(arrays["scale"]), arrays["val_distances"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _bad(npz_path, f"{type(exc).__name__}: {str(exc)[:100]}") from None
    if not scale > 0:
        raise _bad(npz_path, "arrays of inconsistent shapes or values")
    return FeatureStats(levels, layers, scale, val_distances), record


def compute(run_dir: Path, keras_model: Any, config: RunConfig,
            data: str | Path | None = None) -> tuple[FeatureStats, dict[str, Any]]:
    """The multi-level statistics of the run's training cases, calibrated on its validation
    cases, and their JSON record (nothing written)."""
    size = config.img_size
    train = run_cases(config, "train", data)
    val = run_cases(config, "val", data)
    if len(val) == 0:  # a run trained without validation cases: nothing to calibrate on
        raise InputError(f"{run_dir}: the run has no validation cases to calibrate ood_score on")
    layers = level_layers(keras_model)
    run = feature_runner(keras_model, size, layers)
    widths = [int(w) for w in _widths(keras_model, layers)]

    def features(paths: list[str]) -> np.ndarray:
        parts = [run(x.numpy()) for x, _ in make_dataset(paths, size, BATCH, cache=False)]
        return np.concatenate(parts, axis=0)

    stats = fit(features(list(train["image_path"])), features(list(val["image_path"])),
                widths, layers)
    record = {"format": "breastus-feature-stats", "model_sha256": model_sha256(run_dir),
              "layer": POOL_LAYER, "levels": layers, "widths": widths, "method": METHOD,
              "dims": max(int(lv.components.shape[0]) for lv in stats.levels),
              "features": sum(widths), "quantile": QUANTILE, "scale": stats.scale,
              "train_cases": [str(c) for c in train["case_id"]], "n_train": len(train),
              "val_cases": [str(c) for c in val["case_id"]], "n_val": len(val),
              "data": str(config.data_path or data or "")}
    return stats, record


def _widths(keras_model: Any, layers: list[str]) -> list[int]:
    return [int(t.shape[-1]) for t in _level_tensors(keras_model, layers)]


def store(run_dir: str | Path, keras_model: Any = None, data: str | Path | None = None
          ) -> tuple[FeatureStats, dict[str, Any]]:
    """Compute the run's statistics and write them into it (what ``train-cls`` does at the
    end of training)."""
    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    if keras_model is None:
        keras_model = load_model(run_dir)
    stats, record = compute(run_dir, keras_model, config, data)
    save(run_dir, stats, record)
    return stats, record


def store_after_training(run_dir: str | Path) -> Path | None:
    """What ``train-cls`` does once its model is saved: store the run's feature statistics, so
    that predict's ``ood_score`` needs no pass over the training cases later. Returns the
    statistics' JSON file, or None when the run has none to store (not a whole-image classifier
    with a ``pool`` layer; no validation cases); a failure is a warning: the trained run is
    kept as it is and predict computes them on demand."""
    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    log = logging.getLogger("breastus")
    if config.task != "cls" or config.roi_margin is not None:
        return None
    try:
        keras_model = load_model(run_dir)
        if POOL_LAYER not in {layer.name for layer in keras_model.layers}:
            return None
        store(run_dir, keras_model)
    except (InputError, UsageError, OSError) as exc:
        log.warning("feature statistics not stored in %s (%s): predict computes them on demand",
                    run_dir, getattr(exc, "message", None) or exc)
        return None
    return run_dir / STATS_JSON


def ensure(run_dir: str | Path, keras_model: Any = None, data: str | Path | None = None,
           write: bool = True) -> tuple[FeatureStats, dict[str, Any]]:
    """The run's feature statistics: stored multi-level ones for this very model, else
    computed from its training and validation cases (``data``: the dataset, when the recorded
    path moved) and written into the run (unless ``write`` is False). Stored statistics of the
    older single-level kind are replaced the same way, or used as they are when the run's
    cases cannot be read (its dataset moved away)."""
    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    if config.task != "cls":
        raise UsageError(f"{run_dir} is a '{config.task}' run: feature distances need a "
                         "classifier run")
    sha = model_sha256(run_dir)
    stored = load(run_dir)
    if stored is not None and stored[1].get("model_sha256") != sha:
        stored = None
    if stored is not None and stored[1].get("levels"):
        return stored
    if keras_model is None:
        keras_model = load_model(run_dir)
    try:
        stats, record = compute(run_dir, keras_model, config, data)
    except InputError as exc:
        if stored is None:
            raise
        logging.getLogger("breastus").warning(
            "ood_score from the run's older single-level feature statistics (%s)", exc.message)
        return stored
    if write:
        try:
            save(run_dir, stats, record)
        except OSError as exc:  # a read-only run: the statistics serve this process only
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
    if loaded.tta == "none":  # one forward pass gives both (p and the levels' features)
        both = _both_runner(loaded.keras_model, loaded.size, stats.layers)
    else:  # the (augmented) probabilities, and the features of the image as given
        features = feature_runner(loaded.keras_model, loaded.size, stats.layers)

        def both(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return loaded.run(x), features(x)

    def run(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        probs, feats = both(x)
        scores = stats.score(feats) if len(x) else np.zeros(0)
        return np.concatenate([np.asarray(probs, np.float32),
                               scores[:, None].astype(np.float32)], axis=1)

    return replace(loaded, run=run)


def both_model(keras_model: Any, layers: list[str]) -> Any:
    """The classifier with two outputs, its own and the levels' pooled features, sharing one
    forward pass: a nested backbone is called once, its levels and its output taken together,
    and the layers after it (pooling, head) applied to that output."""
    keras = backend.keras()
    graph, _ = _graph(keras_model)
    if graph is keras_model or layers == [POOL_LAYER]:  # one graph: computed once already
        tensors = _level_tensors(keras_model, layers)
        top = keras_model.output
    else:
        node = graph._inbound_nodes[-1]
        t_in, t_out = node.input_tensors, node.output_tensors
        t_in = t_in[0] if isinstance(t_in, (list, tuple)) else t_in
        t_out = t_out[0] if isinstance(t_out, (list, tuple)) else t_out
        taps = keras.Model(graph.inputs, _level_tensors(graph, [
            name.split("/", 1)[-1] for name in layers]) + [graph.output])
        *tensors, backbone_out = taps(t_in)
        top = keras.Model(t_out, keras_model.output)(backbone_out)
    features = tensors[0] if len(tensors) == 1 else keras.layers.Concatenate()(tensors)
    return keras.Model(keras_model.inputs, [top, features])


def _both_runner(keras_model: Any, size: int, layers: list[str]):
    """(N, S, S, 1) -> (outputs, the levels' pooled features), one compiled forward pass."""

    tf = backend.tf()
    model = both_model(keras_model, layers)
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
