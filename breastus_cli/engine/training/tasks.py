"""Tasks: what differs between classification and segmentation, and nothing else.

The engine (:mod:`breastus_cli.engine.training.train`) owns the fit loop, callbacks, run
directory and resume; a task supplies the cases it can use, the targets, the model, the loss and
the metrics.
Importing this module imports TensorFlow (through the backend).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from breastus_cli import backend
from breastus_cli.data.imaging import read_mask, save_png
from breastus_cli.data.pipeline import Augment, make_dataset
from breastus_cli.data.roi import write_roi_crops
from breastus_cli.data.sources.base import LABELS
from breastus_cli.engine.runs.rundir import MODEL, read_config
from breastus_cli.engine.runs.settings import ClsSettings, SegSettings, TrainSettings
from breastus_cli.errors import InputError, UsageError, one_line
from breastus_cli.models import weights as weight_files
from breastus_cli.models.classifiers import backbone_spec, build_classifier
from breastus_cli.models.cls_objectives import MalignantAUC
from breastus_cli.models.safe_load import check_model_file, load_keras_model
from breastus_cli.models.seg_objectives import MeanOverlap, SegLoss
from breastus_cli.models.segmenters import ENCODERS, build_unet

keras = backend.keras()
#: What ``--weights`` accepts, said with every refusal of a file.
WEIGHTS_ACCEPTED = ("--weights takes imagenet, none, a run directory, a .keras model or a Keras "
                    "weights file (.h5 / .weights.h5, as save_weights writes)")


#: The settings dataclass a task works with (ClsSettings, SegSettings).
S = TypeVar("S", bound=TrainSettings)


class Task(ABC, Generic[S]):
    """Base of the tasks; see :class:`ClassificationTask` for a complete one. A task is typed by
    its settings dataclass, so its methods see that type's fields without casts."""

    kind = ""
    #: The settings dataclass of this task (its defaults, options and policy).
    settings_type: type[TrainSettings] = TrainSettings
    #: The nested model whose weights ``--weights RUN_DIR`` copies.
    transfer_layer = "backbone"

    @abstractmethod
    def run_name(self, settings: S) -> str:
        ...

    def monitor(self, settings: S) -> tuple[str, str]:
        name = settings.monitor
        return name, "min" if name.endswith("loss") else "max"

    def usable(self, frame: Any) -> Any:
        return frame

    @abstractmethod
    def dataset(self, frame: Any, settings: S, *, training: bool,
                cache: bool | str = True) -> Any:
        """The tf.data pipeline of (image, target) batches for these cases."""

    @abstractmethod
    def build(self, settings: S, backbone_weights: Path | None) -> Any:
        ...

    def build_model(self, settings: S, backbone_weights: Path | None) -> Any:
        """:meth:`build`, with a weights file that does not fit this backbone (another
        architecture, another layer count) refused in one line."""
        try:
            return self.build(settings, backbone_weights)
        except ValueError as exc:
            if backbone_weights is None:
                raise
            raise UsageError(f"--weights {backbone_weights}: does not fit the "
                             f"{self.backbone_architecture(settings)} backbone "
                             f"({one_line(exc, 200)}); {WEIGHTS_ACCEPTED}") from exc

    @abstractmethod
    def compile(self, model: Any, settings: S) -> None:
        ...

    def class_weight(self, frame: Any, settings: S) -> dict[int, float] | None:
        return None

    @abstractmethod
    def backbone_architecture(self, settings: S) -> str:
        ...

    def describe(self, settings: S) -> dict[str, Any]:
        """Task facts stored in config.json (labels, preprocessing, threshold)."""
        return {}

    # ---- shared pieces -------------------------------------------------------------------
    def augment(self, settings: S) -> Augment | None:
        if not settings.augment or settings.augment_strength == 0:
            return None
        return Augment().scaled(settings.augment_strength)

    def cache(self, settings: S, run_dir: Path, name: str) -> bool | str:
        if settings.cache == "none":
            return False
        if settings.cache == "disk":
            folder = Path(settings.cache_dir) if settings.cache_dir else run_dir / "cache"
            folder.mkdir(parents=True, exist_ok=True)
            return str(folder / name)
        return True

    def resolve_weights(self, settings: S) -> tuple[Path | None, Path | None]:
        """(backbone weights file, run/model file to copy the backbone from)."""
        choice = str(settings.weights)
        if choice == "none":
            return None, None
        if choice == "imagenet":
            arch = self.backbone_architecture(settings)
            return weight_files.resolve_imagenet(arch, settings.img_size,
                                                 offline=settings.offline), None
        path = Path(choice).expanduser()
        if path.is_dir():
            read_config(path)  # a clear error when it is not a run directory
            if not (path / MODEL).is_file():
                raise InputError(f"--weights {path}: the run has no {MODEL} (did it finish an epoch?)")
            check_model_file(path / MODEL)  # refused before the new run directory is made
            return None, path / MODEL
        if path.is_file():
            if path.suffix == ".keras":
                check_model_file(path)
                return None, path
            check_weights_file(path)
            return path, None
        raise UsageError(f"--weights must be imagenet, none, a weights file or a run directory "
                         f"(got '{choice}': no such file or folder)")


def check_weights_file(path: Path) -> None:
    """A ``--weights`` file that is not a ``.keras`` model must be a Keras weights file, in the
    layout Keras will read it by its name: ``*.weights.h5`` its ``layers`` groups, any other
    name HDF5 with ``layer_names`` at its root (``save_weights('x.h5')``, the Keras-applications
    no-top files). Read as data (h5py), nothing deserialized; else one line, exit 2."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            full_model = "model_config" in handle.attrs
            legacy, v3 = "layer_names" in handle.attrs, "layers" in handle
    except OSError:
        raise UsageError(f"--weights {path}: not a Keras weights file (not HDF5); "
                         f"{WEIGHTS_ACCEPTED}") from None
    if full_model:
        raise UsageError(f"--weights {path}: a whole HDF5 model, not a weights file (save its "
                         f"weights with save_weights); {WEIGHTS_ACCEPTED}")
    if path.name.endswith(".weights.h5") and not v3:
        raise UsageError(f"--weights {path}: no Keras weights in it (no 'layers' group, which a "
                         f"*.weights.h5 file holds); {WEIGHTS_ACCEPTED}")
    if not path.name.endswith(".weights.h5") and not legacy:
        reason = ("the layout of a *.weights.h5 file: name it so" if v3
                  else "no 'layer_names', which an .h5 weights file holds")
        raise UsageError(f"--weights {path}: not Keras weights as its name says ({reason}); "
                         f"{WEIGHTS_ACCEPTED}")


def copy_backbone(model: Any, source_model_file: Path, layer: str = "backbone") -> int:
    """Copy the weights of the nested model ``layer`` from a saved model; returns the count."""
    source = load_keras_model(source_model_file)  # refuses files that could run code
    try:
        src, dst = source.get_layer(layer), model.get_layer(layer)
    except ValueError:
        raise UsageError(f"--weights {source_model_file}: no '{layer}' layer to copy from "
                         "(a run of another task?)") from None
    src_w, dst_w = src.get_weights(), dst.get_weights()
    if len(src_w) != len(dst_w) or any(a.shape != b.shape for a, b in zip(src_w, dst_w)):
        raise UsageError(f"--weights {source_model_file}: its backbone ({src.name}, "
                         f"{len(src_w)} tensors) does not match this model's")
    dst.set_weights(src_w)
    return len(src_w)


class ClassificationTask(Task[ClsSettings]):
    """Benign (0) vs malignant (1) from the whole image (or a lesion crop, later)."""

    kind = "cls"
    settings_type = ClsSettings

    def run_name(self, settings: ClsSettings) -> str:
        return settings.model

    def backbone_architecture(self, settings: ClsSettings) -> str:
        return settings.model

    def usable(self, frame: Any) -> Any:
        return frame[frame["label"].isin(LABELS)]

    @staticmethod
    def targets(frame: Any) -> np.ndarray:
        return (frame["label"] == "malignant").to_numpy().astype(np.int32)

    def dataset(self, frame: Any, settings: ClsSettings, *, training: bool,
                cache: bool | str = True) -> Any:
        images = list(frame["image_path"])
        if settings.roi == "mask":
            # lesion-centred training: crops around the ground-truth masks, made once

            if (frame["mask_path"] == "").any():
                raise InputError("--roi mask needs a lesion mask for every case; "
                                 f"{int((frame['mask_path'] == '').sum())} have none")
            folder = Path(settings.run_dir or ".") / "roi"
            images = write_roi_crops(frame, folder, settings.roi_margin)
        return make_dataset(
            images, settings.img_size, settings.batch_size,
            labels=self.targets(frame), shuffle=training,
            augment=self.augment(settings) if training else None,
            seed=settings.seed, cache=cache)

    def build(self, settings: ClsSettings, backbone_weights: Path | None) -> Any:
        return build_classifier(settings.model, settings.img_size,
                                backbone_weights=backbone_weights, dropout=settings.dropout,
                                freeze_backbone=settings.freeze_backbone,
                                fine_tune_from=settings.fine_tune_from,
                                freeze_bn=settings.freeze_bn,
                                bn_momentum=settings.effective_bn_momentum())

    def compile(self, model: Any, settings: ClsSettings) -> None:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                     MalignantAUC(name="auc")],
        )

    def class_weight(self, frame: Any, settings: ClsSettings) -> dict[int, float] | None:
        if settings.class_weight == "none":
            return None
        y = self.targets(frame)
        counts = np.bincount(y, minlength=2)
        if (counts == 0).any():
            raise InputError(f"the training split has no {LABELS[int(np.argmin(counts))]} case")
        # sklearn's "balanced": n_samples / (n_classes * count)
        return {i: float(len(y) / (2 * counts[i])) for i in range(2)}

    def describe(self, settings: ClsSettings) -> dict[str, Any]:
        return {"labels": list(LABELS), "positive_label": "malignant", "threshold": 0.5,
                "roi": {"source": settings.roi, "margin": settings.roi_margin},
                "input": {"size": settings.img_size, "channels": 1, "range": [0, 255],
                          "preprocessing": backbone_spec(settings.model).preprocessing,
                          "resize": "bilinear, antialiased, aspect not kept"}}


class SegmentationTask(Task[SegSettings]):
    """Lesion mask (1) vs background (0), per pixel, with a U-Net."""

    kind = "seg"
    settings_type = SegSettings
    transfer_layer = "unet"

    def run_name(self, settings: SegSettings) -> str:
        return f"unet-{settings.backbone}"

    def backbone_architecture(self, settings: SegSettings) -> str:
        return settings.backbone

    def usable(self, frame: Any) -> Any:
        return frame[frame["mask_path"] != ""]

    def dataset(self, frame: Any, settings: SegSettings, *, training: bool,
                cache: bool | str = True) -> Any:
        masks = list(frame["mask_path"])
        if settings.include_other_masks and settings.run_dir is not None:
            masks = united_masks(frame, Path(settings.run_dir) / "masks-with-other")
        return make_dataset(
            list(frame["image_path"]), settings.img_size, settings.batch_size, masks=masks,
            shuffle=training, augment=self.augment(settings) if training else None,
            seed=settings.seed, cache=cache)

    def build(self, settings: SegSettings, backbone_weights: Path | None) -> Any:
        return build_unet(settings.backbone, settings.img_size, encoder_weights=backbone_weights,
                          freeze_encoder=settings.freeze_encoder,
                          bn_momentum=settings.effective_bn_momentum())

    def compile(self, model: Any, settings: SegSettings) -> None:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
                      loss=SegLoss(settings.loss),
                      metrics=[MeanOverlap(0.5, dice=False, name="iou"),
                               MeanOverlap(0.5, dice=True, name="dice")])

    def describe(self, settings: SegSettings) -> dict[str, Any]:
        return {"threshold": 0.5, "include_other_masks": settings.include_other_masks,
                "input": {"size": settings.img_size, "channels": 1, "range": [0, 255],
                          "preprocessing": ENCODERS[settings.backbone] or "none",
                          "resize": "bilinear, antialiased, aspect not kept"}}


def united_masks(frame: Any, folder: Path) -> list[str]:
    """Lesion mask united with the case's 'other' mask, written once into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case_id, mask, other in zip(frame["case_id"], frame["mask_path"],
                                    frame["other_mask_path"]):
        if not other:
            paths.append(mask)
            continue
        target = folder / f"{case_id}.png"
        if not target.is_file():
            save_png(read_mask([mask, other]), target)
        paths.append(str(target))
    return paths


#: One registry of the tasks, by kind ("cls", "seg"): each carries its settings type.
TASKS: dict[str, type[Task]] = {"cls": ClassificationTask, "seg": SegmentationTask}


def task_for(kind: str) -> Task:
    """The task of ``kind`` ("cls" or "seg")."""
    if kind not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)} (got '{kind}')")
    return TASKS[kind]()
