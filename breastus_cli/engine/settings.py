"""Settings of the training commands: plain dataclasses, validated before any work, stored in
config.json. The CLI builds them; the engine never reads the command line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from breastus_cli.errors import UsageError


def check_img_size(img_size: int, option: str = "--img-size") -> None:
    if img_size < 32 or img_size > 1024 or img_size % 32:
        raise UsageError(f"{option} must be a multiple of 32 between 32 and 1024 (got {img_size})")


@dataclass
class TrainSettings:
    """What every training shares (classification and segmentation)."""

    data: Path | None = None
    run_dir: Path | None = None
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    img_size: int = 224
    seed: int = 42
    augment: bool = True
    augment_strength: float = 1.0
    early_stopping: int = 0
    monitor: str = ""
    fold: int | None = None
    val_fraction: float = 0.1
    deterministic: bool = False
    mixed_precision: bool = False
    devices: str = "1"
    weights: str = "imagenet"
    offline: bool = False
    cache: str = "memory"
    bn_momentum: float | None = None  # None: 0.9 from scratch, the backbone's own when pretrained
    cache_dir: str | None = None  # with cache="disk": a folder shared by runs (a sweep's)
    checkpoint_epochs: list[int] | None = None  # also save the model at these epochs (sweeps)
    tensorboard: bool = False  # also log epoch metrics to RUN/tensorboard/ (Keras callback)

    def validate(self) -> None:
        if self.data is None:
            raise UsageError("DATA is required (a folder written by 'breastus prepare')")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise UsageError(f"--lr must be a positive learning rate (got {self.lr})")
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {self.batch_size})")
        check_img_size(self.img_size)
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0 (got {self.seed})")
        if self.early_stopping < 0:
            raise UsageError(f"--early-stopping must be >= 0 epochs (got {self.early_stopping})")
        if self.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise UsageError("--tensorboard needs the tensorboard package: "
                                 "pip install 'breastus[tensorboard]'")
        if not 0 <= self.augment_strength <= 3:
            raise UsageError(f"--augment-strength must lie in [0, 3] (got {self.augment_strength})")
        if not 0 < self.val_fraction < 0.5:
            raise UsageError(f"--val-fraction must lie in (0, 0.5) (got {self.val_fraction})")
        if self.fold is not None and self.fold < 0:
            raise UsageError(f"--fold must be >= 0 (got {self.fold})")
        if self.devices != "all":
            try:
                if int(self.devices) < 1:
                    raise ValueError
            except ValueError:
                raise UsageError(f"--devices must be a positive number or 'all' (got {self.devices})") from None
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            raise UsageError(f"--bn-momentum must lie in [0, 1) (got {self.bn_momentum})")
        if self.checkpoint_epochs and any(e < 1 or e > self.epochs for e in self.checkpoint_epochs):
            raise UsageError(f"--checkpoint-epochs must lie in 1..{self.epochs}")
        if self.cache not in ("memory", "disk", "none"):
            raise UsageError(f"--cache must be memory, disk or none (got {self.cache})")

    def effective_bn_momentum(self) -> float | None:
        """0.9 when training from scratch (see models.classifiers), else the given value."""
        if self.bn_momentum is not None:
            return self.bn_momentum
        return 0.9 if str(self.weights) == "none" else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("data", "run_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass
class ClsSettings(TrainSettings):
    """``breastus train-cls``."""

    model: str = "mobilenetv2"
    dropout: float = 0.2
    class_weight: str = "balanced"
    freeze_backbone: bool = False
    fine_tune_from: str | None = None
    monitor: str = "val_auc"
    roi: str = "none"
    roi_margin: float = 0.2

    def validate(self) -> None:
        super().validate()
        from breastus_cli.models.classifiers import backbone_spec

        if self.roi not in ("none", "mask"):
            raise UsageError(f"--roi must be none or mask (got {self.roi})")
        if not 0 <= self.roi_margin <= 2:
            raise UsageError(f"--roi-margin must lie in [0, 2] (got {self.roi_margin})")

        backbone_spec(self.model)
        if self.monitor not in ("val_auc", "val_accuracy", "val_loss"):
            raise UsageError(f"--monitor must be val_auc, val_accuracy or val_loss (got {self.monitor})")
        if self.class_weight not in ("balanced", "none"):
            raise UsageError(f"--class-weight must be balanced or none (got {self.class_weight})")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must lie in [0, 1) (got {self.dropout})")
        if self.freeze_backbone and self.fine_tune_from:
            raise UsageError("--freeze-backbone and --fine-tune-from exclude each other")


@dataclass
class SegSettings(TrainSettings):
    """``breastus train-seg``: defaults are the reference study's best (lr 0.005, 20 epochs)."""

    backbone: str = "efficientnetb2"
    loss: str = "bce_jaccard"
    include_other_masks: bool = False
    freeze_encoder: bool = False
    lr: float = 0.005
    img_size: int = 256
    batch_size: int = 8
    monitor: str = "val_iou"

    def validate(self) -> None:
        super().validate()
        from breastus_cli.models.segmenters import check_encoder

        check_encoder(self.backbone)
        if self.loss not in ("bce_jaccard", "bce_dice", "dice", "focal_dice"):
            raise UsageError("--loss must be bce_jaccard, bce_dice, dice or focal_dice "
                             f"(got {self.loss})")
        if self.monitor not in ("val_iou", "val_dice", "val_loss"):
            raise UsageError(f"--monitor must be val_iou, val_dice or val_loss (got {self.monitor})")
