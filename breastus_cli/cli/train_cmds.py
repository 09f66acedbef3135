"""Training commands: ``train-cls`` (and ``train-seg``), thin shells over the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console



def run_training(settings: Any, task_name: str, resume: Path | None) -> None:
    """Build the task, train (or resume) with progress, render the result."""
    from breastus_cli import backend

    backend.configure(verbose=console.state.verbose)
    console.route_engine_logs()
    from breastus_cli.engine import tasks
    from breastus_cli.engine.train import resume_settings, train
    from breastus_cli.reports.progress import TrainProgress
    from breastus_cli.reports.training import train_table

    task = tasks.ClassificationTask() if task_name == "cls" else tasks.SegmentationTask()
    if resume is not None:
        settings = resume_settings(resume, type(settings))
    with TrainProgress() as progress:
        result = train(settings, task, resume=resume is not None, on_batch=progress.on_batch)
    if not console.state.quiet:
        console.out().print(train_table(result))


@app.command(
    "train-cls",
    epilog=(
        "Examples: breastus train-cls data/breast --model resnet50 --epochs 30 --lr 1e-4  |  "
        "breastus train-cls data/breast --weights none --img-size 64 --epochs 2  |  "
        "breastus train-cls --resume runs/cls/20261124-101500-mobilenetv2"
    ),
)
def train_cls_cmd(
    data: Path = typer.Argument(None, help="Prepared and split dataset (breastus prepare/split)."),
    model: str = typer.Option("mobilenetv2", "--model", "-m", help="mobilenetv2 or resnet50."),
    weights: str = typer.Option(
        "imagenet", "--weights", "-w",
        help="imagenet (Keras cache; downloaded only where allowed), none, a weights file, or a "
             "run directory / .keras model to start the backbone from."),
    offline: bool = typer.Option(False, "--offline", help="Never download (also BREASTUS_OFFLINE=1)."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train the head only."),
    fine_tune_from: str = typer.Option(None, "--fine-tune-from", metavar="LAYER",
                                       help="Freeze the backbone layers before LAYER."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate."),
    epochs: int = typer.Option(20, "--epochs", "-e", help="Epochs."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Batch size (all devices)."),
    img_size: int = typer.Option(224, "--img-size", help="Input side in pixels (multiple of 32)."),
    seed: int = typer.Option(42, "--seed", help="Random seed (weights, shuffling, augmentation)."),
    augment: bool = typer.Option(True, "--augment/--no-augment",
                                 help="Flips, small rotations, zoom, brightness/contrast."),
    augment_strength: float = typer.Option(1.0, "--augment-strength",
                                           help="Scale all augmentations (0-3)."),
    class_weight: str = typer.Option("balanced", "--class-weight", help="balanced or none."),
    dropout: float = typer.Option(0.2, "--dropout", help="Dropout before the head."),
    early_stopping: int = typer.Option(0, "--early-stopping", metavar="PATIENCE",
                                       help="Stop after PATIENCE epochs without improvement (0: off)."),
    monitor: str = typer.Option("val_auc", "--monitor", help="val_auc, val_accuracy or val_loss."),
    fold: int = typer.Option(None, "--fold", help="Test on fold K, train on the others (split --folds)."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Default: runs/cls/<time>-<model>."),
    resume: Path = typer.Option(None, "--resume", metavar="RUN_DIR",
                                help="Continue an interrupted run at its next epoch."),
    deterministic: bool = typer.Option(False, "--deterministic",
                                       help="Deterministic ops (slower; same seed, same numbers)."),
    mixed_precision: bool = typer.Option(False, "--mixed-precision",
                                         help="float16 compute on a GPU (ignored on CPU)."),
    devices: str = typer.Option("1", "--devices", help="N or all: MirroredStrategy over N devices."),
    cache: str = typer.Option("memory", "--cache", help="Decoded-image cache: memory, disk or none."),
    bn_momentum: float = typer.Option(None, "--bn-momentum",
                                      help="Batch-norm momentum (default 0.9 from scratch)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction",
                                       help="With --fold: validation share carved from training folds."),
) -> None:
    """Train a benign/malignant classifier (MobileNetV2 or ResNet50) into a run directory.

    The run directory holds config.json, history.csv, model.keras (best by --monitor),
    train.log and, while running, checkpoints/ for --resume.
    """
    from breastus_cli.engine.settings import ClsSettings

    settings = ClsSettings(
        data=data, run_dir=run_dir, epochs=epochs, batch_size=batch_size, lr=lr,
        img_size=img_size, seed=seed, augment=augment, augment_strength=augment_strength,
        early_stopping=early_stopping, monitor=monitor, fold=fold, deterministic=deterministic,
        mixed_precision=mixed_precision, devices=devices, weights=weights, offline=offline,
        cache=cache, bn_momentum=bn_momentum, val_fraction=val_fraction, model=model, dropout=dropout, class_weight=class_weight,
        freeze_backbone=freeze_backbone, fine_tune_from=fine_tune_from,
    )
    if resume is None:
        settings.validate()  # bad options fail before TensorFlow loads
    run_training(settings, "cls", resume)
