"""The one training loop, shared by classification and segmentation.

``train(settings, task)`` creates (or resumes) a run directory, builds the data pipelines,
the model (inside a distribution strategy), the callbacks, and calls ``model.fit`` once.
Everything task-specific comes from the :class:`~breastus_cli.engine.training.tasks.Task`.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breastus_cli import backend
from breastus_cli.data.combine import only_view
from breastus_cli.data.sources.base import LABELS
from breastus_cli.data.split import label_counts, select_cases
from breastus_cli.engine.runs.rundir import (
    BEST, CHECKPOINTS, CONFIG, GRID, MODEL, attach_log, check_same_split, data_record,
    default_run_dir, detach_log, environment, log, read_config, write_config,
)
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.runs.settings import (
    TRAIN_ADDED, ClsSettings, TrainSettings, learning_rate,
)
from breastus_cli.engine.training import callbacks as cb
from breastus_cli.engine.training import layerwise
from breastus_cli.engine.training.tasks import Task, copy_backbone
from breastus_cli.errors import BreastusError, InputError, Interrupted, UsageError, WorkError
from breastus_cli.ownership import claim

EpochCallback = Callable[[int, int, dict[str, float], float], None]
BatchCallback = Callable[[int, int, int], None]


@dataclass
class TrainResult:
    """What a training produced; the CLI renders it."""

    run_dir: Path
    monitor: str
    best_epoch: int
    best_value: float
    epochs_run: int
    epochs_planned: int
    seconds: float
    resumed_from: int = 0
    stopped_early_at: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    n_train: int = 0
    n_val: int = 0
    #: the model RUN/model.keras was written from, still in memory (its weights are the file's),
    #: so the calibration and evaluation that follow need not load the file again; None when
    #: this process did not write the file last (a resumed run whose best epoch came earlier)
    model: Any = field(default=None, repr=False, compare=False)


def _strategy(settings: TrainSettings, tf: Any) -> Any:
    """One device: the default strategy. Several: MirroredStrategy over GPUs, or over logical
    CPU devices where there is no GPU (which is how it is tested)."""
    gpus = tf.config.list_physical_devices("GPU")
    wanted = max(1, len(gpus)) if settings.devices == "all" else int(settings.devices)
    if wanted == 1:
        return tf.distribute.get_strategy()
    if gpus:
        if wanted > len(gpus):
            raise UsageError(f"--devices {wanted}: only {len(gpus)} GPU(s) visible")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(wanted)])
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(wanted)])
    except RuntimeError:
        pass  # already initialised in this process (tests); use what exists
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:wanted]
    if len(devices) < wanted:
        raise UsageError(f"--devices {wanted}: only {len(devices)} device(s) available")
    return tf.distribute.MirroredStrategy(devices)


def _has_gpu(tf: Any) -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _precision(settings: TrainSettings, tf: Any, keras: Any) -> str:
    """Set the process's Keras dtype policy for this training ("float32" or "mixed_float16");
    :func:`train` sets it back to float32 when the training ends. On a CPU, float32: mixed
    bfloat16 made ResNet50's training step faster but the U-Net's slower on this project's
    CPUs (BENCHMARKS.md, training precision)."""
    if not settings.mixed_precision:
        return "float32"
    if not _has_gpu(tf):
        log.warning("--mixed-precision needs a GPU; training in float32 on the CPU")
        return "float32"
    keras.mixed_precision.set_global_policy("mixed_float16")
    return "mixed_float16"


def _inference_copy(model: Any, task: Task, settings: TrainSettings, keras: Any) -> Any:
    """A model of the same layers and weights shapes as ``model``, without its optimizer, in
    float32: model.keras is written from it. A mixed-precision model is rebuilt under the
    float32 policy (its config would name the mixed policy, which inference on a CPU should not
    run and the safe loader refuses)."""
    policy = keras.mixed_precision.global_policy().name
    if policy == "float32":
        return keras.models.clone_model(model)
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = task.build(settings, None)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    shapes = [tuple(w.shape) for w in model.weights]
    if [tuple(w.shape) for w in copy.weights] != shapes:
        raise WorkError("internal error: the float32 copy of the mixed-precision model has "
                        "other weights")
    return copy


def _prepare_run_dir(settings: TrainSettings, task: Task, resume: bool) -> tuple[Path, bool]:
    """The run directory, and whether this call made it (False: resumed or found empty)."""
    if resume:
        assert settings.run_dir is not None
        return Path(settings.run_dir), False
    run_dir = Path(settings.run_dir) if settings.run_dir else default_run_dir(
        task.kind, task.run_name(settings))

    if run_dir.exists() and any(run_dir.iterdir()) and not only_view(run_dir):
        raise InputError(f"run directory {run_dir} exists and is not empty",
                         hint=f"continue it with --resume {run_dir}, or choose another --run-dir")
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, made


def _check_files(frames: list[Any], task: Task, settings: TrainSettings, data: Path) -> None:
    """Every file the pipelines will read exists; else one line naming the first missing."""
    columns = ["image_path"]
    if task.kind == "seg" or getattr(settings, "roi", "none") == "mask":
        columns.append("mask_path")
    if getattr(settings, "include_other_masks", False):
        columns.append("other_mask_path")
    paths = [p for frame in frames for c in columns if c in frame.columns for p in frame[c] if p]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of the {len(paths)} files the training reads are "
                         f"missing, first: {missing[0]}",
                         hint=f"deleted or moved since 'breastus prepare'? prepare {data} again")


def _check_classes(frame: Any, role: str, data: Path) -> None:
    """A classifier needs both classes in training and validation."""
    if not all((frame["label"] == label).any() for label in LABELS):
        raise InputError(f"the {role} cases of {data} hold one class only "
                         f"({label_counts(frame['label'])}): a "
                         "classifier needs benign and malignant cases in both train and val",
                         hint=f"split again: breastus split {data}")


def _tf_reason(exc: BaseException) -> str:
    """The one informative line of a TensorFlow op error (not its graph dump)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(
        ("[[", "Detected at node", "<stack traces", "Graph execution error"))]
    text = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^Error in user-defined function passed to .*? transformation with "
                  r"iterator: \S+: ", "", text)


def _failure(exc: BaseException, tf: Any) -> BaseException:
    """The error to report for ``exc``: TensorFlow's file and op errors become one line."""
    if isinstance(exc, tf.errors.OpError):
        reason = _tf_reason(exc)
        # TensorFlow's own reader ("PATH; No such file or directory") or the image decoder run
        # inside the pipeline (FileNotFoundError: [Errno 2] No such file or directory: 'PATH')
        found = (re.search(r"(\S+); No such file or directory", reason)
                 or re.search(r"No such file or directory: '([^']+)'", reason))
        if isinstance(exc, tf.errors.NotFoundError) or found:
            return InputError(f"a file the training reads is not found: "
                              f"{found.group(1) if found else reason}",
                              hint="deleted or moved while training? restore it and resume")
        return WorkError(f"training failed: {reason}")
    return exc


def train(
    settings: TrainSettings,
    task: Task,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> TrainResult:
    """Train one model; returns when the run directory holds the best ``model.keras``.

    >>> train(ClsSettings(data=Path("data/breast"), epochs=2, weights="none"),
    ...       ClassificationTask())  # doctest: +SKIP
    """
    if not isinstance(settings, task.settings_type):
        raise UsageError(f"a {task.kind} task trains with {task.settings_type.__name__}, "
                         f"not {type(settings).__name__}")
    settings.validate()
    start = time.perf_counter()
    assert settings.data is not None
    data = Path(settings.data)
    if settings.run_dir is not None:  # before anything loads: a file, someone else's folder or
        # a link out of it is refused (one line, exit 2)

        claim(settings.run_dir, "run", option="--resume" if resume else "--run-dir",
              legacy=None if resume else only_view)
    if resume and settings.run_dir is not None and (Path(settings.run_dir) / CONFIG).is_file():
        # its training cases must still be the training cases (not re-split since)
        check_same_split(settings.run_dir, read_config(settings.run_dir), data)
    train_frame = task.usable(select_cases(data, "train", fold=settings.fold, seed=settings.seed,
                                           val_fraction=settings.val_fraction))
    val_frame = task.usable(select_cases(data, "val", fold=settings.fold, seed=settings.seed,
                                         val_fraction=settings.val_fraction))
    if len(train_frame) == 0:
        raise InputError(f"no training case in {data} for this task")
    if len(val_frame) == 0:
        raise InputError(f"no validation case in {data}: split with a validation share "
                         "(breastus split DATA --ratio 0.8 0.1 0.1)")
    if task.kind == "cls":
        _check_classes(train_frame, "training", data)
        _check_classes(val_frame, "validation", data)
    _check_files([train_frame, val_frame], task, settings, data)
    backbone_file, copy_from = task.resolve_weights(settings)  # fails fast when offline
    tf, keras = backend.tf(), backend.keras()
    strategy = _strategy(settings, tf)  # before any op: logical devices must come first

    run_dir, made = _prepare_run_dir(settings, task, resume)
    settings.run_dir = run_dir
    handler = attach_log(run_dir)
    recorded: dict[str, Any] | None = None  # the run's record, once config.json is written
    try:
        keras.utils.set_random_seed(settings.seed)
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        precision = _precision(settings, tf, keras)
        monitor, mode = task.monitor(settings)
        class_weight = task.class_weight(train_frame, settings)

        train_ds = task.dataset(train_frame, settings, training=True,
                                cache=task.cache(settings, run_dir, "train"))
        val_ds = task.dataset(val_frame, settings, training=False,
                              cache=task.cache(settings, run_dir, "val"))
        with strategy.scope():
            model = task.build_model(settings, backbone_file)
            copied = copy_backbone(model, copy_from, task.transfer_layer) if copy_from else 0
            parted = isinstance(settings, ClsSettings) and settings.layerwise()
            # the same layers, trained by two optimizers (head, backbone); model.keras is
            # written from `network`'s plain copy either way
            network = model
            if parted:
                model = layerwise.wrap(network, settings, task.transfer_layer)
            task.compile(model, settings)

        config_path = run_dir / CONFIG
        if resume and config_path.is_file():
            config = read_config(run_dir)
            config.setdefault("resumes", []).append(environment())
        else:
            config = {
                "task": task.kind,
                "settings": settings.to_dict(),
                "environment": environment(),
                "versions": backend.versions(),
                # manifest and splits.csv hashes: evaluate/resume/export refuse a re-split
                "data": {**data_record(data, settings.fold),
                         "n_train": len(train_frame), "n_val": len(val_frame)},
                "weights": {"choice": str(settings.weights),
                            "backbone_file": str(backbone_file) if backbone_file else None,
                            "copied_from": str(copy_from) if copy_from else None,
                            "tensors_copied": copied},
                "class_weight": class_weight,
                "monitor": {"name": monitor, "mode": mode},
                "precision": precision,
                "devices": strategy.num_replicas_in_sync,
                **task.describe(settings),
                "status": "running",
            }
        write_config(run_dir, config)
        recorded = config

        # model.keras holds an optimizer-free copy: the .keras format would otherwise store
        # Adam's two slots per weight (3x the size; a U-Net EfficientNetB2 took 94 s to load
        # instead of 5.5 s). Resuming uses the BackupAndRestore checkpoints, not model.keras.
        inference_copy = _inference_copy(network, task, settings, keras)

        holds_best = [False]  # inference_copy's weights are model.keras's (saved last there)

        def save_best(trained: Any, path: Path, best: bool = True) -> None:
            inference_copy.set_weights(trained.get_weights())
            inference_copy.save(path)
            holds_best[0] = best

        best = cb.BestCheckpoint(run_dir, monitor, mode, settings.early_stopping, save=save_best)
        nan_guard = cb.NanGuard()
        history = cb.HistoryCSV(run_dir)
        steps = math.ceil(len(train_frame) / settings.batch_size)
        backup = keras.callbacks.BackupAndRestore(backup_dir=str(run_dir / CHECKPOINTS))
        # BackupAndRestore last: an epoch is backed up only after its history row and best
        # checkpoint are on disk, so a kill never leaves history behind the restored state.
        callbacks = [nan_guard, history, best,
                     cb.EpochReporter(settings.epochs, steps, on_epoch, on_batch)]
        if settings.lr_schedule != "constant" or settings.warmup_epochs:
            callbacks.append(keras.callbacks.LearningRateScheduler(
                lambda epoch, _lr: learning_rate(epoch, settings.lr, settings.epochs,
                                                 settings.lr_schedule, settings.warmup_epochs)))
        if parted:  # after the scheduler: the backbone's rate follows the head's
            assert isinstance(settings, ClsSettings)
            callbacks.append(layerwise.callback(settings))
        if settings.checkpoint_epochs:
            callbacks.append(cb.EpochCheckpoints(run_dir / GRID, settings.checkpoint_epochs,
                                                 lambda m, p: save_best(m, p, best=False)))
        if settings.tensorboard:  # the standard Keras callback: epoch curves, no graph dump
            callbacks.append(keras.callbacks.TensorBoard(
                log_dir=str(run_dir / "tensorboard"), write_graph=False, update_freq="epoch"))
        callbacks.append(backup)
        # fit continues after the last epoch BackupAndRestore saved; history.csv may hold one
        # more (killed between its row and the backup): that epoch runs again
        resumed_from = cb.backed_up_epochs(run_dir / CHECKPOINTS) if resume else 0
        if resume:
            log.info("resuming %s after epoch %d of %d", run_dir, resumed_from, settings.epochs)
            redone = len(cb.read_history(run_dir)) - resumed_from
            if redone > 0:
                log.info("epoch(s) %d-%d in history.csv had no checkpoint yet: they run again",
                         resumed_from + 1, resumed_from + redone)
        else:
            log.info("training %s: %d train / %d val cases, %s, run %s", task.kind,
                     len(train_frame), len(val_frame), task.run_name(settings), run_dir)
        model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs,
                  class_weight=class_weight, callbacks=callbacks, verbose=0)

        rows = cb.read_history(run_dir)
        if nan_guard.nan_at is not None:
            config["status"] = "failed: loss became NaN"
            write_config(run_dir, config)
            raise WorkError(f"training stopped: the loss became NaN in epoch {nan_guard.nan_at} "
                            f"(try a lower --lr than {settings.lr:g}); the run so far is in {run_dir}")
        seconds = round(time.perf_counter() - start, 2)
        config["status"] = "finished"
        config["result"] = {"best_epoch": best.best_epoch, "best_value": best.best,
                            "epochs_run": len(rows), "stopped_early_at": best.stopped_early_at,
                            "seconds_this_process": seconds}
        write_config(run_dir, config)
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        if not (run_dir / MODEL).is_file() or not (run_dir / BEST).is_file():
            raise WorkError(f"no checkpoint was saved in {run_dir}: the monitored metric "
                            f"{monitor} was never available")
        return TrainResult(run_dir=run_dir, monitor=monitor, best_epoch=best.best_epoch,
                           best_value=best.best, epochs_run=len(rows),
                           epochs_planned=settings.epochs, seconds=seconds,
                           resumed_from=resumed_from, stopped_early_at=best.stopped_early_at,
                           history=rows, n_train=len(train_frame), n_val=len(val_frame),
                           model=inference_copy if holds_best[0] else None)
    except BaseException as exc:
        detach_log(handler)
        failure = _failure(exc, tf) if isinstance(exc, Exception) else exc
        if recorded is not None:  # the run started: say how it ended, keep it resumable
            if isinstance(exc, (Interrupted, KeyboardInterrupt)):
                recorded["status"] = "interrupted"
            elif not str(recorded.get("status", "")).startswith("failed"):
                reason = failure.message if isinstance(failure, BreastusError) else (
                    f"internal error: {type(exc).__name__}: {exc}")
                recorded["status"] = f"failed: {reason}"
            write_config(run_dir, recorded)
        elif not resume:  # nothing started: remove what this call made
            _remove_unstarted(run_dir, made)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        detach_log(handler)
        keras.mixed_precision.set_global_policy("float32")  # the next model in this process


def _remove_unstarted(run_dir: Path, made: bool) -> None:
    """Undo a run directory whose training never started: the folder when this call made it,
    else (it was empty) what this call put in it."""
    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def resume_settings(run_dir: Path, settings_type: type[TrainSettings]) -> TrainSettings:
    """Settings of an interrupted run, read back from its config.json."""
    path = Path(run_dir) / CONFIG
    config = RunConfig.read(run_dir)
    if not isinstance(config.raw.get("settings"), dict):
        raise InputError(f"{path} is not a breastus run configuration (no settings object)",
                         hint="only a run directory that train-cls/train-seg wrote can resume")
    kind = getattr(settings_type, "KIND", "") or None
    if kind is not None and config.task != kind:
        other = config.task
        raise InputError(f"{path} records a '{other}' run, not a '{kind}' one",
                         hint=f"resume it with breastus train-{other} --resume {run_dir}"
                         if other in ("cls", "seg") else None)
    try:
        settings = settings_type.from_dict({**TRAIN_ADDED, **config.settings})
        settings.run_dir = Path(run_dir)
        settings.validate()
    except BreastusError as exc:
        raise InputError(f"{path}: its settings cannot be used: {exc.message}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: its settings cannot be used: {exc}") from None
    claim(run_dir, "run", option="--resume")  # nothing written through a link out of it
    if config.finished:
        epochs = "?" if config.epochs_run is None else config.epochs_run
        raise InputError(f"{run_dir} finished already ({epochs} epochs); nothing to resume")
    return settings
