"""``breastus adapt``: a classifier or segmenter run made ready for a new hospital without
retraining.

AdaBN: every BatchNormalization layer's moving mean and variance are re-estimated on the new
hospital's unlabeled scans, layer by layer in the order of the graph (each layer's statistics
are those of its input once the layers before it are adapted); every other weight is kept.
Both tasks' models take the same input, (S, S, 1) grey levels 0..255 resized by the training
pipeline's resize, so the scans are read the same way for either. Optionally, for a classifier
(``labels``: a prepared dataset with labels), the decision threshold is chosen again for the
target sensitivity on those local cases, with a bootstrap CI of the sensitivity it reaches. The
result is a new run folder (the run's files copied, a segmenter's postprocess.json as it is,
the new model.keras, config.json recording ``adapted_from``, the scans' fingerprint and the
method).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend, runfiles
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.manifest import file_sha256, manifest_path, read_manifest
from breastus_cli.data.pipeline import make_dataset
from breastus_cli.data.scans import Frame, Unreadable, expand_inputs, stream
from breastus_cli.engine.apply import ood
from breastus_cli.engine.apply.images import resize_input
from breastus_cli.engine.apply.loaded_run import keras_runner, load_model
from breastus_cli.engine.runs.provenance import CHOSEN_ON_LOCAL
from breastus_cli.engine.runs.rundir import CONFIG, MODEL, THRESHOLD, write_config
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.metrics import (as_score, classification_metrics,
                                               threshold_for_sensitivity)
from breastus_cli.errors import InputError, UsageError
from breastus_cli.models.safe_load import load_keras_model
from breastus_cli.ownership import claim

METHOD = "adabn"
#: the tasks whose runs ``adapt`` takes
TASKS = ("cls", "seg")
#: files of the source run that describe its own training or evaluation, not the adapted model:
#: they are not copied (feature statistics and threshold are the source model's)
NOT_COPIED = {MODEL, CONFIG, ood.STATS_NPZ, ood.STATS_JSON, "checkpoints", "grid", "export"}


@dataclass
class AdaptResult:
    out: Path
    n_scans: int
    n_layers: int
    n_errors: int
    threshold: dict[str, Any] | None
    seconds: float


def fingerprint(files: list[Path], root: Path) -> str:
    """SHA-256 over the sorted relative file names and sizes of ``files``."""
    lines = sorted(f"{f.relative_to(root) if f.is_relative_to(root) else f.name}\t"
                   f"{f.stat().st_size}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _scan_inputs(folder: Path, size: int, workers: int) -> tuple[np.ndarray, int, list[Path]]:
    """The model inputs (N, S, S, 1) of every readable scan of ``folder`` (a prepared
    dataset: its manifest's images), the number unreadable, and the files."""
    if manifest_path(folder).is_file():
        files = [folder / p for p in read_manifest(folder)["image"]]
    else:
        files = expand_inputs([folder])
    inputs: list[np.ndarray] = []
    errors = 0

    def prepare(frame: Frame) -> None:
        frame.inputs[size] = resize_input(frame.image, size)

    for item in stream(files, workers, prepare=prepare):
        if isinstance(item, Unreadable):
            errors += 1
            continue
        inputs.extend(f.inputs[size] for f in item)
    if not inputs:
        raise InputError(f"--data {folder}: no readable scan ({errors} unreadable)")
    return np.stack(inputs), errors, files


def _bn_layers(model: Any, keras: Any) -> list[tuple[Any, Any]]:
    """(BatchNormalization layer, the Functional model whose graph holds it), in graph order,
    nested models entered."""
    found: list[tuple[Any, Any]] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append((layer, model))
        elif isinstance(layer, keras.Model):
            found.extend(_bn_layers(layer, keras))
    return found


def _sub_input(model: Any, inner: Any, keras: Any) -> Any:
    """A model from ``model``'s input to ``inner``'s (a nested model's) input."""
    if inner is model:
        return None
    node = inner._inbound_nodes[-1]  # its call in the outer graph
    tensor = node.input_tensors
    tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
    return keras.Model(model.inputs, tensor)


def adabn(model: Any, images: np.ndarray, batch: int = 32) -> int:
    """Re-estimate every BatchNormalization layer's moving statistics on ``images`` (in place),
    one layer after the other; returns the number of layers adapted."""
    keras = backend.keras()
    layers = _bn_layers(model, keras)
    feeders: dict[int, Any] = {}
    for layer, graph in layers:
        if id(graph) not in feeders:
            to_graph = _sub_input(model, graph, keras)
            feeders[id(graph)] = to_graph
        to_graph = feeders[id(graph)]
        probe = keras.Model(graph.inputs, layer.input)
        total = total_sq = None
        count = 0
        for start in range(0, len(images), batch):
            x = images[start:start + batch].astype(np.float32)
            if to_graph is not None:
                x = to_graph(x, training=False)
            values = np.asarray(probe(x, training=False), np.float64)
            axes = tuple(i for i in range(values.ndim) if i != values.ndim - 1)
            s, s2 = values.sum(axis=axes), (values ** 2).sum(axis=axes)
            total = s if total is None else total + s
            total_sq = s2 if total_sq is None else total_sq + s2
            count += int(np.prod([values.shape[i] for i in axes]))
        mean = total / count
        var = np.maximum(total_sq / count - mean ** 2, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return len(layers)


def _relative(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), start.resolve())


def rechoose_threshold(model: Any, size: int, labels: Path, target: float,
                       n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The threshold for ``target`` sensitivity on the labelled cases of the prepared dataset
    ``labels`` (all of them), with the sensitivity's bootstrap CI there."""
    frame = read_manifest(labels)
    frame = frame[frame["label"].isin(["benign", "malignant"])]
    y = (frame["label"] == "malignant").to_numpy().astype(int)
    if y.sum() == 0:
        raise InputError(f"--labels {labels}: no malignant case: the sensitivity is undefined")
    run = keras_runner(model, size)
    paths = [str(labels / p) for p in frame["image"]]
    p = np.concatenate([run(images.numpy())[:, 1]
                        for images, _ in make_dataset(paths, size, 32, cache=False)])
    p = as_score(p)
    threshold = threshold_for_sensitivity(y, p, target)
    metrics = classification_metrics(y, p, threshold, n_bootstrap=n_bootstrap, seed=seed)
    return {"threshold": threshold, "target_sensitivity": target,
            "source": f"chosen on {len(y)} local labelled cases ({int(y.sum())} malignant) "
                      f"for target sensitivity {target:g}",
            "chosen_on": CHOSEN_ON_LOCAL, "data": str(labels), "local_n": int(len(y)),
            "local_malignant": int(y.sum()), "local_sensitivity": metrics["sensitivity"],
            "local_sensitivity_ci": (metrics.get("ci") or {}).get("sensitivity"),
            "local_specificity": metrics["specificity"],
            "local_specificity_ci": (metrics.get("ci") or {}).get("specificity"),
            "local_auc": metrics.get("auc")}


def adapt(run_dir: Path, data: Path, out: Path, labels: Path | None = None,
          target_sensitivity: float = 0.9, workers: int = 2) -> AdaptResult:
    """Write ``out``: ``run_dir`` with its batch-norm statistics re-estimated on ``data``."""
    start = time.perf_counter()
    run_dir, data, out = Path(run_dir), Path(data), Path(out)
    run = RunConfig.read(run_dir)
    if run.task not in TASKS:
        raise UsageError(f"{run_dir} is a '{run.task}' run: 'breastus adapt' adapts "
                         "a classifier or segmenter run")
    if labels is not None and run.task != "cls":
        raise UsageError(f"--labels re-chooses a classifier's decision threshold: {run_dir} is "
                         f"a '{run.task}' run (adapt it without --labels)")
    if not data.is_dir():
        raise InputError(f"--data {data} is not a folder")
    if labels is not None and not labels.is_dir():
        raise InputError(f"--labels {labels} is not a folder")
    if not 0 < target_sensitivity <= 1:
        raise UsageError(f"--target-sensitivity must lie in (0, 1] (got {target_sensitivity})")
    claim(out, "run", inputs=[run_dir, data, *([labels] if labels else [])])
    size = run.img_size
    load_model(run_dir)  # the checks of the one loader (and its registered objects) ...
    adapted = load_keras_model(run_dir / MODEL)  # ... then a private copy, changed in place
    images, errors, files = _scan_inputs(data, size, workers)
    n_layers = adabn(adapted, images)
    if n_layers == 0:
        raise UsageError(f"{run_dir}: the model has no batch-normalization layer to adapt")
    chosen = (rechoose_threshold(adapted, size, labels, target_sensitivity)
              if labels is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    for item in run_dir.iterdir():
        if item.name in NOT_COPIED or item.name == THRESHOLD or item.name.startswith("eval-"):
            continue
        target = out / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(item, target, symlinks=False)
        else:
            shutil.copy2(item, target)
    with atomic_path(out / MODEL) as tmp:
        adapted.save(tmp)
    new_config = dict(run.raw)
    new_config["status"] = "adapted"
    new_config["adapted_from"] = {"path": _relative(run_dir, out),
                                  "sha256": file_sha256(run_dir / MODEL)}
    new_config["adaptation"] = {"method": METHOD, "data": str(data.resolve()),
                                "data_fingerprint": fingerprint(files, data),
                                "n_scans": int(len(images)), "n_unreadable": errors,
                                "bn_layers": n_layers}
    if chosen is not None:
        new_config["threshold"] = chosen["threshold"]
        write_json(out / THRESHOLD, chosen)
    elif (run_dir / THRESHOLD).is_file():  # the source run's choice, said to be the source's
        previous = dict(runfiles.load(run_dir / THRESHOLD, runfiles.ThresholdFile)[1])
        previous["source"] = f"{previous.get('source', 'chosen')} (of the run adapted from)"
        write_json(out / THRESHOLD, previous)
    write_config(out, new_config)  # config.json last: the run marker of a complete folder
    return AdaptResult(out, int(len(images)), n_layers, errors, chosen,
                       round(time.perf_counter() - start, 2))
