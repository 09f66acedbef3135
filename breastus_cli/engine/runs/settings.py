"""Settings of the training commands: plain dataclasses, validated before any work, stored in
config.json. The CLI builds them; the engine never reads the command line.

The dataclasses are the one owner of every default, of each option's help text and of the
learning-rate/epochs policy: ``train-cls``, ``train-seg``, ``cv`` and ``sweep`` build their
options from the fields (``metadata``: flags, help), and Python callers get the same numbers:

>>> ClsSettings(data=Path("data/breast"), weights="none").lr
0.001
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from breastus_cli.errors import InputError, UsageError

#: The reference study's sweep grid: 7 learning rates x 5 epoch counts.
PAPER_LRS = (1e-6, 1e-5, 1e-4, 1e-3, 5e-3, 1e-2, 5e-2)
PAPER_EPOCHS = (10, 20, 30, 40, 50)


LR_SCHEDULES = ("constant", "cosine")

#: training settings added after runs, cross-validations and sweeps were already written, with
#: the value those earlier trainings used: an older config.json/cv.json/sweep.json resumes,
#: replays and matches the same command as it trained
TRAIN_ADDED: dict[str, Any] = {"lr_schedule": "constant", "warmup_epochs": 0}
#: the same for one task's own settings
TASK_ADDED: dict[str, dict[str, Any]] = {
    "cls": {"freeze_bn": False, "head_warmup": 0, "backbone_lr_scale": 1.0}}


def added_settings(kind: str | None) -> dict[str, Any]:
    """The settings added since older runs, CVs and sweeps were written, for a ``kind`` run."""
    return {**TRAIN_ADDED, **TASK_ADDED.get(kind or "", {})}


def learning_rate(epoch: int, lr: float, epochs: int, schedule: str = "constant",
                  warmup: int = 0) -> float:
    """The learning rate of 0-based ``epoch``: linear warm-up over ``warmup`` epochs (lr/w,
    2 lr/w, ... lr), then ``lr`` (constant) or a half cosine from ``lr`` towards 0 over the
    remaining epochs, taken at each epoch's middle (the last epoch still learns a little).

    >>> [round(learning_rate(e, 1.0, 6, "cosine", 2), 3) for e in range(6)]
    [0.5, 1.0, 0.962, 0.691, 0.309, 0.038]
    """
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    if schedule == "constant":
        return lr
    steps = max(epochs - warmup, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup + 0.5) / steps))


def check_img_size(img_size: int, option: str = "--img-size") -> None:
    if img_size < 32 or img_size > 1024 or img_size % 32:
        raise UsageError(f"{option} must be a multiple of 32 between 32 and 1024 (got {img_size})")


def _opt(default: Any, help: str, *flags: str, cli: bool = True, **extra: Any) -> Any:
    """A settings field with its command-line option: ``flags`` (default ``--name``), the help
    text, and Typer extras (``metavar``, ``show_default``); ``cli=False``: no option (set by
    the engine or a config file)."""
    return field(default=default,
                 metadata={"help": help, "flags": flags, "cli": cli, "extra": extra})


@dataclass
class TrainSettings:
    """What every training shares (classification and segmentation).

    ``lr`` and ``epochs`` left at None follow the policy by ``weights``: pretrained weights use
    :attr:`PRETRAINED` (the reference study's settings), ``weights="none"`` (from scratch) uses
    :attr:`SCRATCH` (a larger learning rate and more epochs: what 5-fold CV on BrEaST showed
    learns, RESULTS.md). Explicit values always win.
    """

    KIND: ClassVar[str] = ""
    PRETRAINED: ClassVar[dict[str, Any]] = {"lr": 1e-4, "epochs": 20}
    SCRATCH: ClassVar[dict[str, Any]] = {"lr": 1e-3, "epochs": 40}

    data: Path | None = _opt(None, "Prepared and split dataset.", argument=True)
    weights: str = _opt(
        "imagenet", "imagenet (Keras cache; downloaded only where allowed), none, a weights "
        "file, or a run directory / .keras model to start from.", "--weights", "-w")
    offline: bool = _opt(False, "Never download (also BREASTUS_OFFLINE=1).")
    lr: float = _opt(None, "Adam learning rate (default {pretrained} with pretrained weights, "
                           "{scratch} with --weights none).", show_default=False)
    epochs: int = _opt(None, "Epochs (default {pretrained} with pretrained weights, {scratch} "
                             "with --weights none).", "--epochs", "-e", show_default=False)
    batch_size: int = _opt(16, "Batch size (all devices together).", "--batch-size", "-b")
    img_size: int = _opt(224, "Input side in pixels (multiple of 32).")
    lr_schedule: str = _opt("constant", "constant, or cosine: decay from --lr to near 0 over the "
                                        "epochs after --warmup-epochs.")
    warmup_epochs: int = _opt(0, "Epochs of linear warm-up to --lr before the schedule.")
    seed: int = _opt(42, "Seed (weights, order, augmentation).")
    augment: bool = _opt(True, "Horizontal flips, small rotations, zoom, shifts, "
                               "brightness/contrast.", "--augment/--no-augment")
    augment_strength: float = _opt(1.0, "Scale all augmentations (0-3).")
    early_stopping: int = _opt(0, "Stop after PATIENCE epochs without improvement (0: off).",
                               metavar="PATIENCE")
    monitor: str = _opt("", "The metric of the best checkpoint and early stopping.")
    fold: int | None = _opt(None, "Test on fold K, train on the others (split --folds).")
    val_fraction: float = _opt(0.1, "With --fold: validation share carved from training folds.")
    run_dir: Path | None = _opt(None, "Default: runs/{kind}/<time>-<model>.")
    deterministic: bool = _opt(False, "Deterministic ops (slower; same seed, same numbers).")
    mixed_precision: bool = _opt(False, "float16 compute on a GPU (ignored on a CPU).")
    devices: str = _opt("1", "N or all: MirroredStrategy over N devices.")
    cache: str = _opt("memory", "Decoded-image cache: memory, disk or none.")
    bn_momentum: float | None = _opt(None, "Batch-norm momentum (default 0.9 from scratch, the "
                                           "backbone's own when pretrained).")
    tensorboard: bool = _opt(False, "Also log curves to RUN/tensorboard/ (tensorboard --logdir).")
    cache_dir: str | None = _opt(None, "With cache='disk': a folder shared by runs (a sweep's).",
                                 cli=False)
    checkpoint_epochs: list[int] | None = _opt(
        None, "Also save the model at these epochs (sweeps).", cli=False)

    def __post_init__(self) -> None:
        policy = self.policy()
        if self.lr is None:
            self.lr = policy["lr"]
        if self.epochs is None:
            self.epochs = policy["epochs"]

    def policy(self) -> dict[str, Any]:
        """The default lr and epochs for these weights (from scratch or pretrained)."""
        return dict(self.SCRATCH if str(self.weights) == "none" else self.PRETRAINED)

    @classmethod
    def option_help(cls, name: str) -> str:
        """The help text of field ``name``, with this task's policy numbers filled in."""
        text = next(f for f in fields(cls) if f.name == name).metadata.get("help", "")
        if name in cls.PRETRAINED:
            return text.format(pretrained=f"{cls.PRETRAINED[name]:g}",
                               scratch=f"{cls.SCRATCH[name]:g}")
        return text.replace("{kind}", cls.KIND or "<task>")

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
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"--lr-schedule must be {' or '.join(LR_SCHEDULES)} "
                             f"(got '{self.lr_schedule}')")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(f"--warmup-epochs must lie in 0..{self.epochs - 1} "
                             f"(got {self.warmup_epochs})")
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
        """Settings from a dict (a run's config.json "settings", a config file); unknown keys
        are an error (exit 2 naming them), never silently dropped."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"unknown {cls.KIND + ' ' if cls.KIND else ''}training setting(s): "
                             f"{', '.join(unknown)}")
        values = dict(data)
        for key in ("data", "run_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path | str) -> TrainSettings:
        """Settings from a TOML/JSON (YAML with PyYAML) file or a run's config.json (replayed
        without its run_dir and cache_dir): see :func:`read_config_file`."""
        return cls.from_dict(read_config_file(path, cls.KIND)[0])


@dataclass
class ClsSettings(TrainSettings):
    """``breastus train-cls``."""

    KIND: ClassVar[str] = "cls"
    PRETRAINED: ClassVar[dict[str, Any]] = {"lr": 1e-4, "epochs": 20}
    SCRATCH: ClassVar[dict[str, Any]] = {"lr": 1e-3, "epochs": 40}

    monitor: str = _opt("val_auc", "val_auc, val_accuracy or val_loss (best checkpoint, early "
                                   "stopping).")
    model: str = _opt(
        "mobilenetv2", "mobilenetv2, resnet50, efficientnet-lite0, efficientnet-lite2 (ImageNet "
        "weights offline from their pinned packages) or smallcnn.", "--model", "-m")
    freeze_backbone: bool = _opt(False, "Train the head only.")
    freeze_bn: bool = _opt(False, "Keep the backbone's batch norms as pretrained (inference-mode "
                                  "statistics, scale and shift fixed) while the rest trains.")
    fine_tune_from: str | None = _opt(None, "Freeze the backbone layers before LAYER.",
                                      metavar="LAYER")
    head_warmup: int = _opt(0, "Epochs that train the head alone before the backbone joins "
                               "(its batch-norm statistics still follow the data).",
                            metavar="EPOCHS")
    backbone_lr_scale: float = _opt(1.0, "The backbone's learning rate as a share of --lr (its "
                                         "own Adam; the head keeps --lr).", metavar="SCALE")
    class_weight: str = _opt("balanced", "balanced or none.")
    dropout: float = _opt(0.2, "Dropout before the head.")
    roi: str = _opt("none", "none (whole image) or mask: lesion-centred crops from the masks (at "
                            "evaluate/predict time from a --seg-run).")
    roi_margin: float = _opt(0.2, "Crop margin, a fraction of the lesion.")

    def validate(self) -> None:
        super().validate()
        # lazy: the CLI imports this module to build its options; models/ brings numpy
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
        if self.freeze_bn and str(self.weights) == "none":
            raise UsageError("--freeze-bn keeps pretrained batch-norm statistics: it needs "
                             "--weights imagenet or a run, not none")
        if not 0 <= self.head_warmup < self.epochs:
            raise UsageError(f"--head-warmup must lie in 0..{self.epochs - 1} epochs (got "
                             f"{self.head_warmup}; a backbone that never trains is "
                             "--freeze-backbone)")
        if not (math.isfinite(self.backbone_lr_scale) and 0 < self.backbone_lr_scale <= 10):
            raise UsageError(f"--backbone-lr-scale must lie in (0, 10] (got "
                             f"{self.backbone_lr_scale}; 0 is --freeze-backbone)")
        if self.layerwise():
            if self.head_warmup and str(self.weights) == "none":
                raise UsageError("--head-warmup keeps pretrained features while the head learns: "
                                 "it needs --weights imagenet or a run, not none")
            if self.freeze_backbone:
                raise UsageError("--head-warmup and --backbone-lr-scale train the backbone: "
                                 "they exclude --freeze-backbone")
            if self.mixed_precision:
                raise UsageError("--head-warmup and --backbone-lr-scale are not built for "
                                 "--mixed-precision: train in float32, or leave them at 0 and 1")

    def layerwise(self) -> bool:
        """Whether the head and the backbone train with their own optimizers."""
        return bool(self.head_warmup) or self.backbone_lr_scale != 1.0


@dataclass
class SegSettings(TrainSettings):
    """``breastus train-seg``: pretrained defaults are the reference study's best (lr 0.005, 20
    epochs)."""

    KIND: ClassVar[str] = "seg"
    PRETRAINED: ClassVar[dict[str, Any]] = {"lr": 0.005, "epochs": 20}
    SCRATCH: ClassVar[dict[str, Any]] = {"lr": 1e-3, "epochs": 30}

    batch_size: int = _opt(8, "Batch size (all devices together).", "--batch-size", "-b")
    img_size: int = _opt(256, "Input side in pixels (multiple of 32).")
    monitor: str = _opt("val_iou", "val_iou, val_dice or val_loss (best checkpoint, early "
                                   "stopping).")
    backbone: str = _opt("efficientnetb2", "U-Net encoder (segmentation-models; also "
                                            "efficientnet-lite0 or efficientnet-lite2).")
    loss: str = _opt("bce_jaccard", "bce_jaccard, bce_dice, dice or focal_dice.")
    include_other_masks: bool = _opt(False, "Unite 'other' masks with the lesion mask.")
    freeze_encoder: bool = _opt(False, "Train the decoder only.")

    def validate(self) -> None:
        super().validate()
        # lazy: the CLI imports this module to build its options; models/ brings numpy
        from breastus_cli.models.segmenters import check_encoder

        check_encoder(self.backbone)
        if self.loss not in ("bce_jaccard", "bce_dice", "dice", "focal_dice"):
            raise UsageError("--loss must be bce_jaccard, bce_dice, dice or focal_dice "
                             f"(got {self.loss})")
        if self.monitor not in ("val_iou", "val_dice", "val_loss"):
            raise UsageError(f"--monitor must be val_iou, val_dice or val_loss (got {self.monitor})")


#: One registry: the settings type of each task kind (the engine's Task carries the same type).
SETTINGS_TYPES: dict[str, type[TrainSettings]] = {"cls": ClsSettings, "seg": SegSettings}

#: A run's own paths: dropped when its config.json is replayed (a new run, a new cache).
REPLAY_DROP = ("run_dir", "cache_dir")


def read_config_file(path: Path | str, kind: str = "") -> tuple[dict[str, Any], bool]:
    """The settings in a config file and whether it is a run's config.json.

    TOML (``.toml``) or JSON (``.json``; YAML ``.yaml``/``.yml`` when PyYAML is installed): one
    flat table of settings (``img_size`` or ``img-size``). A run's config.json (a "task" and a
    "settings" object) gives its settings without :data:`REPLAY_DROP`; its task must be
    ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise UsageError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); "
                                 "TOML and JSON work without it") from None
            data = yaml.safe_load(text)
        else:
            raise UsageError(f"--config {path}: a .toml or .json file expected "
                             "(.yaml with PyYAML)")
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib/json decode errors are ValueErrors
        raise InputError(f"--config {path}: not valid {suffix.lstrip('.').upper()}: "
                         f"{str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise InputError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: a table of settings expected")
    if isinstance(data.get("settings"), dict) and "task" in data:  # a run's config.json
        if kind and data["task"] != kind:
            raise InputError(f"--config {path} records a '{data['task']}' run, not a "
                             f"'{kind}' one")
        values = {k: v for k, v in data["settings"].items() if k not in REPLAY_DROP}
        return {**TRAIN_ADDED, **values}, True
    return {str(k).replace("-", "_"): v for k, v in data.items()}, False
