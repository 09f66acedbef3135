"""The Python API: the CLI's workflow as functions, for notebooks and scripts.

Each function builds the settings dataclass the matching command builds, calls the same engine
function, writes the same files, and returns the results in memory as well::

    from breastus_cli import api
    api.prepare("BrEaST-Lesions_USG", "data/breast"); api.split("data/breast", seed=42)
    cls_run = api.train("cls", "data/breast", model="mobilenetv2", epochs=30).run_dir
    seg_run = api.train("seg", "data/breast").run_dir
    api.evaluate(cls_run, target_sensitivity=0.9).metrics["auc"]
    res = api.predict("new_scans/", cls_run=cls_run, seg_run=seg_run); res.predictions.head()

Options are the settings' field names (the command's long options with ``_`` for ``-``, e.g.
``img_size=64``; ``evaluate``'s ``--bootstrap`` is ``n_bootstrap``); an unknown one, or a value
the setting's type does not take (``img_size="big"``, checked by pydantic against the same
settings dataclass the CLI fills), raises :class:`OptionError` (a ``TypeError`` and a
:class:`~breastus_cli.errors.UsageError`) before any work; the settings' own checks (ranges,
names) then raise what the CLI raises. Errors are the toolkit's own (``UsageError``,
``InputError``, ``WorkError``). Importing this module is cheap: TensorFlow loads on the first
call that needs it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import tempfile
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from breastus_cli.errors import UsageError

if TYPE_CHECKING:  # heavy imports for type checkers only
    import numpy as np
    import pandas as pd

    from breastus_cli.data.prepare import PrepareResult
    from breastus_cli.data.split import SplitResult
    from breastus_cli.engine.evaluation.eval_settings import Calibration, EvalResult
    from breastus_cli.engine.apply.predict_settings import PredictResult
    from breastus_cli.engine.training.train import TrainResult

__all__ = ["Evaluation", "MaskFiles", "OptionError", "Predictions", "calibrate", "evaluate",
           "predict", "prepare", "split", "train", "train_cls", "train_seg"]

PathLike = str | Path


class OptionError(UsageError, TypeError):
    """An API function was given a keyword argument its settings do not have, or a value of a
    type the setting does not take."""


# ---- settings -------------------------------------------------------------------------------
@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _valid(function: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the setting's type ``annotation`` takes it (``"64"`` -> 64, ``"data"`` ->
    ``Path("data")``, as Typer converts the CLI's text), or :class:`OptionError` naming it."""
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{part!r}]" for part in first["loc"])
        raise OptionError(f"{function}(): {name}{where}={value!r} is not accepted: "
                          f"{first['msg']}") from None


def _build(function: str, settings_type: type, given: dict[str, Any],
           options: dict[str, Any]) -> Any:
    """``settings_type(**given, **options)``, refusing unknown names and values of another
    type than the field's (strings become paths where the field holds a path, as Typer does
    for the CLI)."""
    fields = {f.name: f for f in dataclasses.fields(settings_type)}
    unknown = [name for name in options if name not in fields or name in given]
    if unknown:
        hints = [f"'{n}'" + (f" (did you mean '{close[0]}'?)" if (close := difflib.get_close_matches(
            n, [f for f in fields if f not in given], n=1)) else "") for n in unknown]
        raise OptionError(f"{function}() got unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(hints)}; see help(breastus_cli.api.{function})")
    hints = typing.get_type_hints(settings_type)
    values = {name: _valid(function, name, value, hints[name])
              for name, value in {**given, **options}.items()}
    return settings_type(**values)


def _configure() -> None:
    """TensorFlow's environment, as the CLI sets it (quiet start-up logs)."""
    from breastus_cli import backend

    backend.configure(verbose=False)


# ---- data -----------------------------------------------------------------------------------
def prepare(source: PathLike, out: PathLike, *,
            on_progress: Callable[[int, int], None] | None = None,
            **options: Any) -> PrepareResult:
    """``breastus prepare``: read a source layout, write a normalized dataset at ``out``.

    Options: format, strict, include_other_masks, overwrite, max_pixels, workers.

    >>> api.prepare("BrEaST-Lesions_USG", "data/breast").counts  # doctest: +SKIP
    {'benign': 154, 'malignant': 98}
    """
    from breastus_cli.data.prepare import PrepareSettings
    from breastus_cli.data.prepare import prepare as run

    settings = _build("prepare", PrepareSettings, {"source": source, "out": out}, options)
    return run(settings, on_progress=on_progress)


def split(data: PathLike, **options: Any) -> SplitResult:
    """``breastus split``: write ``DATA/splits.csv`` (case/patient level, stratified, seeded).

    Options: ratio, seed, folds (0 or None: no folds), materialize, published_folds.

    >>> api.split("data/breast", seed=42, folds=5).table["test"]  # doctest: +SKIP
    {'benign': 16, 'malignant': 10}
    """
    from breastus_cli.data.split import SplitSettings, split_dataset

    if options.get("folds") == 0:
        options["folds"] = None
    return split_dataset(_build("split", SplitSettings, {"data": data}, options))


# ---- training -------------------------------------------------------------------------------
def train(task: str, data: PathLike | None = None, *, resume: PathLike | None = None,
          on_epoch: Callable[..., None] | None = None, **options: Any) -> TrainResult:
    """``breastus train-cls`` (``task="cls"``) or ``train-seg`` (``"seg"``) into a run directory.

    Options are :class:`~breastus_cli.engine.runs.settings.ClsSettings` /
    :class:`~breastus_cli.engine.runs.settings.SegSettings` fields (model, weights, epochs, lr,
    img_size, run_dir, ...). ``resume=RUN_DIR`` continues an interrupted run with its own
    settings. Returns the result (``run_dir``, ``best_epoch``, ``history``, ...).

    >>> api.train("cls", "data/breast", model="smallcnn", weights="none", epochs=2).run_dir  # doctest: +SKIP
    """
    from breastus_cli.engine.runs.settings import SETTINGS_TYPES as types

    if task not in types:
        raise UsageError(f"train() task must be 'cls' or 'seg' (got {task!r})")
    settings = _build("train", types[task], {"data": data}, options)
    if resume is None:
        settings.validate()  # bad options fail before TensorFlow loads
    _configure()
    from breastus_cli.engine.training import tasks
    from breastus_cli.engine.training.train import resume_settings
    from breastus_cli.engine.training.train import train as run

    from breastus_cli.engine.evaluation.calibrate import after_training

    if resume is not None:
        settings = resume_settings(_valid("train", "resume", resume, Path), types[task])
    result = run(settings, tasks.task_for(task), resume=resume is not None, on_epoch=on_epoch)
    # ood statistics, or a segmenter's post-processing
    after_training(result.run_dir, task, result.model)
    return result


def train_cls(data: PathLike | None = None, **options: Any) -> TrainResult:
    """``train("cls", data, **options)``.

    >>> api.train_cls("data/breast", model="resnet50", epochs=30).best_value  # doctest: +SKIP
    """
    return train("cls", data, **options)


def train_seg(data: PathLike | None = None, **options: Any) -> TrainResult:
    """``train("seg", data, **options)``.

    >>> api.train_seg("data/breast", img_size=96).run_dir  # doctest: +SKIP
    """
    return train("seg", data, **options)


# ---- evaluation -----------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One run evaluated on one split: ``metrics`` (as in metrics.json) and ``cases`` (one
    row per case: predictions.csv of a classifier, per_case.csv of a segmenter)."""

    metrics: dict[str, Any]
    cases: pd.DataFrame
    out_dir: Path
    task: str
    split: str
    files: list[Path] = field(default_factory=list)  # plots and reports written
    result: EvalResult | None = field(default=None, repr=False)


def evaluate(run: PathLike, **options: Any) -> Evaluation:
    """``breastus evaluate RUN``: metrics with bootstrap CIs, plots and a report written to
    ``RUN/eval-<split>/``; returned in memory as well.

    Options: data, split, target_sensitivity, threshold, n_bootstrap, batch_size, seed,
    seg_run, ensemble, tta, fusion, fuse_with, postprocess.

    >>> api.evaluate("runs/cls/mnv2", split="test").metrics["auc"]  # doctest: +SKIP
    0.83
    """
    from breastus_cli.atomic import _json_safe
    from breastus_cli.engine.evaluation.eval_cases import find_runs
    from breastus_cli.engine.evaluation.eval_settings import EvalSettings

    runs = find_runs([_valid("evaluate", "run", run, Path)],
                     ensemble=bool(options.get("ensemble")))  # a cv folder, whole
    if len(runs) > 1:
        raise UsageError(f"{run} is a folder of {len(runs)} runs: evaluate them one at a time")
    settings = _build("evaluate", EvalSettings, {"run_dir": runs[0]}, options)
    settings.validate()
    _configure()
    from breastus_cli.engine.evaluation.evaluate import evaluate as run_evaluation
    from breastus_cli.reports import evaluation

    result = run_evaluation(settings)
    files = evaluation.write_artifacts(result)
    return Evaluation(metrics=_json_safe(result.metrics), cases=result.frame,
                      out_dir=result.out_dir, task=result.task, split=result.split,
                      files=list(files), result=result)


def calibrate(run: PathLike, **options: Any) -> Calibration:
    """``breastus calibrate RUN``: what the run chooses on its validation cases, written into
    it (a classifier's threshold.json for ``target_sensitivity``, its fusion.json with
    ``fusion="descriptors"``; a segmenter's postprocess.json). Returns what was chosen and
    which files were written.

    Options: data, target_sensitivity, seg_run, fusion, fuse_with, batch_size.

    >>> api.calibrate("runs/cls/mnv2", target_sensitivity=0.9).threshold["threshold"]  # doctest: +SKIP
    0.31
    """
    from breastus_cli.engine.evaluation.eval_settings import CalibrateSettings

    settings = _build("calibrate", CalibrateSettings,
                      {"run_dir": _valid("calibrate", "run", run, Path)}, options)
    settings.validate()
    _configure()
    from breastus_cli.engine.evaluation.calibrate import calibrate as run_calibration

    return run_calibration(settings)


# ---- prediction -----------------------------------------------------------------------------
def _read_mask(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


class MaskFiles(Mapping):
    """Predicted masks read on access from the files predict wrote: ``masks[i]`` is the
    boolean (height, width) mask of ``predictions.iloc[i]``."""

    def __init__(self, out: Path, files: dict[int, str]) -> None:
        self.out, self.files = out, files

    def __getitem__(self, i: int) -> np.ndarray:
        return _read_mask(self.out / self.files[i])

    def __iter__(self) -> Iterator[int]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"MaskFiles({len(self)} masks in {self.out / 'masks'})"


@dataclass
class Predictions:
    """What ``predict`` returns: ``predictions`` (predictions.csv as a DataFrame; empty
    cells are NaN), ``errors`` (errors.csv), ``masks`` (row position in ``predictions`` ->
    boolean (height, width) array at the image's original size, for rows with a mask) and
    ``out`` (None when the files went to a temporary folder)."""

    predictions: pd.DataFrame
    errors: pd.DataFrame
    masks: Mapping[int, np.ndarray]
    out: Path | None
    result: PredictResult | None = field(default=None, repr=False)


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    # only empty cells are missing values: a file named "NA" stays a name
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def predict(inputs: PathLike | Sequence[PathLike], out: PathLike | None = None,
            cls_run: PathLike | None = None, seg_run: PathLike | None = None, *,
            on_progress: Callable[[int, int], None] | None = None,
            **options: Any) -> Predictions:
    """``breastus predict``: p(malignant) and label, lesion mask and area for each image.

    ``inputs`` are files, folders (recursive) or globs. The files are written to ``out``
    (predictions.csv, errors.csv, masks/, ...); with ``out=None`` they go to a temporary
    folder that is deleted on return, and everything (masks included) is returned in memory.
    With a ``seg_run`` the masks are saved (``save_masks`` defaults to True here) and
    ``masks`` reads them from ``out`` on access. Options: engine, threshold, seg_threshold,
    seg_postprocess, pixel_size, manifest, save_masks, save_overlays, explain, batch_size,
    resume, overwrite, num_parts, part_id, max_pixels, tta.

    >>> res = api.predict("scans/", cls_run="runs/cls/mnv2", seg_run="runs/seg/unet")  # doctest: +SKIP
    >>> res.predictions[["path", "p_malignant", "label"]], res.masks[0].shape  # doctest: +SKIP
    """
    from breastus_cli.engine.apply.predict_output import ERRORS, PREDICTIONS
    from breastus_cli.engine.apply.predict_settings import PredictSettings

    paths = [inputs] if isinstance(inputs, (str, Path)) else inputs
    if out is not None:
        out = _valid("predict", "out", out, Path)
    if options.get("save_masks") is None:
        options["save_masks"] = seg_run is not None
    temporary = tempfile.TemporaryDirectory(prefix="breastus-predict-") if out is None else None
    try:
        target = Path(temporary.name) / "out" if temporary is not None else Path(out)
        settings = _build("predict", PredictSettings, {
            "inputs": paths, "out": target, "cls_run": cls_run, "seg_run": seg_run}, options)
        settings.validate()
        _configure()
        from breastus_cli.engine.apply.predict import predict as run

        result = run(settings, on_progress=on_progress)
        table, errors = _read_csv(target / PREDICTIONS), _read_csv(target / ERRORS)
        files = ({i: str(m) for i, m in enumerate(table["mask"])
                  if isinstance(m, str) and m and (target / m).is_file()}
                 if "mask" in table else {})
        masks: Mapping[int, np.ndarray] = MaskFiles(target, files)
        if temporary is not None:
            masks = {i: masks[i] for i in files}  # read before the folder goes
        return Predictions(predictions=table, errors=errors, masks=masks,
                           out=None if temporary is not None else target, result=result)
    finally:
        if temporary is not None:
            temporary.cleanup()
