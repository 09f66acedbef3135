"""Training commands: ``train-cls`` and ``train-seg``, thin shells over the one engine.

Both share most options; they are declared once (:func:`_shared_options`) with each task's
defaults, and each command adds its own. The command body builds the settings dataclass and
calls the engine, nothing else.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console

_KW = inspect.Parameter.KEYWORD_ONLY


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, _KW, default=default, annotation=annotation)


def _shared_options(kind: str, defaults: dict[str, Any]) -> list[inspect.Parameter]:
    """Options every training command has; ``defaults`` holds the task's own values."""
    return [
        inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                          default=typer.Argument(None, help="Prepared and split dataset.")),
        _param("weights", str, typer.Option(
            "imagenet", "--weights", "-w",
            help="imagenet (Keras cache; downloaded only where allowed), none, a weights file, "
                 "or a run directory / .keras model to start from.")),
        _param("offline", bool, typer.Option(False, "--offline",
                                             help="Never download (also BREASTUS_OFFLINE=1).")),
        _param("lr", float, typer.Option(
            None, "--lr", show_default=False,
            help=f"Adam learning rate (default {defaults['lr']:g} with pretrained weights, "
                 f"{defaults['lr_scratch']:g} with --weights none).")),
        _param("epochs", int, typer.Option(
            None, "--epochs", "-e", show_default=False,
            help=f"Epochs (default {defaults['epochs']} with pretrained weights, "
                 f"{defaults['epochs_scratch']} with --weights none).")),
        _param("batch_size", int, typer.Option(defaults["batch_size"], "--batch-size", "-b",
                                               help="Batch size (all devices together).")),
        _param("img_size", int, typer.Option(defaults["img_size"], "--img-size",
                                             help="Input side in pixels (multiple of 32).")),
        _param("seed", int, typer.Option(42, "--seed", help="Seed (weights, order, augmentation).")),
        _param("augment", bool, typer.Option(
            True, "--augment/--no-augment",
            help="Horizontal flips, small rotations, zoom, shifts, brightness/contrast.")),
        _param("augment_strength", float, typer.Option(1.0, "--augment-strength",
                                                       help="Scale all augmentations (0-3).")),
        _param("early_stopping", int, typer.Option(
            0, "--early-stopping", metavar="PATIENCE",
            help="Stop after PATIENCE epochs without improvement (0: off).")),
        _param("monitor", str, typer.Option(defaults["monitor"], "--monitor",
                                            help=defaults["monitor_help"])),
        _param("fold", int, typer.Option(None, "--fold",
                                         help="Test on fold K, train on the others (split --folds).")),
        _param("val_fraction", float, typer.Option(
            0.1, "--val-fraction", help="With --fold: validation share carved from training folds.")),
        _param("run_dir", Path, typer.Option(None, "--run-dir",
                                             help=f"Default: runs/{kind}/<time>-<model>.")),
        _param("resume", Path, typer.Option(None, "--resume", metavar="RUN_DIR",
                                            help="Continue an interrupted run at its next epoch.")),
        _param("deterministic", bool, typer.Option(
            False, "--deterministic", help="Deterministic ops (slower; same seed, same numbers).")),
        _param("mixed_precision", bool, typer.Option(
            False, "--mixed-precision", help="float16 compute on a GPU (ignored on a CPU).")),
        _param("devices", str, typer.Option("1", "--devices",
                                            help="N or all: MirroredStrategy over N devices.")),
        _param("cache", str, typer.Option("memory", "--cache",
                                          help="Decoded-image cache: memory, disk or none.")),
        _param("bn_momentum", float, typer.Option(
            None, "--bn-momentum", help="Batch-norm momentum (default 0.9 from scratch).")),
        _param("tensorboard", bool, typer.Option(
            False, "--tensorboard", help="Also log curves to RUN/tensorboard/ (tensorboard --logdir).")),
    ]


def _make_command(name: str, kind: str, settings_type: str, defaults: dict[str, Any],
                  own: list[inspect.Parameter], doc: str, epilog: str) -> None:
    def command(**options: Any) -> None:
        from breastus_cli.engine import settings as settings_module

        resume = options.pop("resume")
        settings = getattr(settings_module, settings_type)(**with_defaults(options, defaults))
        if resume is None:
            settings.validate()  # bad options fail before TensorFlow loads
        run_training(settings, kind, resume)

    command.__signature__ = inspect.Signature(_shared_options(kind, defaults) + own)  # type: ignore[attr-defined]
    # one paragraph per blank-line block, as Typer's rich help would show a docstring
    command.__doc__ = re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(doc))
    command.__name__ = name.replace("-", "_")
    app.command(name, epilog=epilog)(command)


def with_defaults(options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Fill --lr and --epochs when not given: from-scratch training (--weights none) needs a
    larger learning rate and more epochs than fine-tuning (chosen by 5-fold CV on BrEaST,
    RESULTS.md)."""
    scratch = str(options.get("weights")) == "none"
    for key in ("lr", "epochs"):
        if key in options and options[key] is None:
            options[key] = defaults[f"{key}_scratch" if scratch else key]
    return options


def run_training(settings: Any, kind: str, resume: Path | None) -> None:
    """Train (or resume) with progress, then render the result."""
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine import tasks
    from breastus_cli.engine.train import resume_settings, train
    from breastus_cli.reports.progress import TrainProgress
    from breastus_cli.reports.training import train_table

    task = tasks.ClassificationTask() if kind == "cls" else tasks.SegmentationTask()
    if resume is not None:
        settings = resume_settings(resume, type(settings))
    with TrainProgress() as progress:
        result = train(settings, task, resume=resume is not None, on_batch=progress.on_batch)
    if not console.state.quiet:
        console.out().print(train_table(result))


# pretrained: the reference study's settings; from scratch (--weights none): what 5-fold CV on
# BrEaST showed learns (RESULTS.md)
CLS_DEFAULTS = {"lr": 1e-4, "epochs": 20, "lr_scratch": 1e-3, "epochs_scratch": 40,
                "batch_size": 16, "img_size": 224,
                "monitor": "val_auc",
                "monitor_help": "val_auc, val_accuracy or val_loss (best checkpoint, early stopping)."}
SEG_DEFAULTS = {"lr": 0.005, "epochs": 20, "lr_scratch": 1e-3, "epochs_scratch": 30,
                "batch_size": 8, "img_size": 256, "monitor": "val_iou",
                "monitor_help": "val_iou, val_dice or val_loss (best checkpoint, early stopping)."}


def cls_options() -> list[inspect.Parameter]:
    return [
        _param("model", str, typer.Option("mobilenetv2", "--model", "-m",
                                          help="mobilenetv2, resnet50 or smallcnn.")),
        _param("freeze_backbone", bool, typer.Option(False, "--freeze-backbone",
                                                     help="Train the head only.")),
        _param("fine_tune_from", str, typer.Option(None, "--fine-tune-from", metavar="LAYER",
                                                   help="Freeze the backbone layers before LAYER.")),
        _param("class_weight", str, typer.Option("balanced", "--class-weight",
                                                 help="balanced or none.")),
        _param("dropout", float, typer.Option(0.2, "--dropout", help="Dropout before the head.")),
        _param("roi", str, typer.Option(
            "none", "--roi", help="none (whole image) or mask: lesion-centred crops from the "
                                  "masks (at evaluate/predict time from a --seg-run).")),
        _param("roi_margin", float, typer.Option(0.2, "--roi-margin",
                                                 help="Crop margin, a fraction of the lesion.")),
    ]


def seg_options() -> list[inspect.Parameter]:
    return [
        _param("backbone", str, typer.Option("efficientnetb2", "--backbone",
                                             help="U-Net encoder (segmentation-models).")),
        _param("loss", str, typer.Option("bce_jaccard", "--loss",
                                         help="bce_jaccard, bce_dice, dice or focal_dice.")),
        _param("include_other_masks", bool, typer.Option(
            False, "--include-other-masks", help="Unite 'other' masks with the lesion mask.")),
        _param("freeze_encoder", bool, typer.Option(False, "--freeze-encoder",
                                                    help="Train the decoder only.")),
    ]


_make_command(
    "train-cls", "cls", "ClsSettings", CLS_DEFAULTS, cls_options(),
    """Train a benign/malignant classifier (MobileNetV2 or ResNet50) into a run directory.

    The run directory holds config.json, history.csv, model.keras (best by --monitor),
    train.log and, while running, checkpoints/ for --resume.
    """,
    "Examples: breastus train-cls data/breast --model resnet50 --epochs 30 --lr 1e-4  |  "
    "breastus train-cls data/breast --weights none --img-size 64 --epochs 2  |  "
    "breastus train-cls --resume runs/cls/20261124-101500-mobilenetv2",
)

_make_command(
    "train-seg", "seg", "SegSettings", SEG_DEFAULTS, seg_options(),
    """Train a lesion segmenter: U-Net with an EfficientNetB2 (or other) encoder.

    Same run directory, callbacks, resume and progress as train-cls; best checkpoint by
    validation IoU at threshold 0.5. Defaults are the reference study's best setting.
    """,
    "Examples: breastus train-seg data/breast  (U-Net EfficientNetB2, 20 epochs, lr 0.005)  |  "
    "breastus train-seg data/breast --weights none --img-size 64 --epochs 2",
)
