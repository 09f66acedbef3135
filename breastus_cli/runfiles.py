"""Every JSON file breastus reads back, validated before any of its values is used.

A run file decides labels and numbers: a threshold of NaN labels every case benign, a fused
model's weight of 1e308 scores every case NaN. So each file breastus wrote and later reads
back goes through one loader (:func:`load`) and the schema of its kind (pydantic models below):

    RUN/config.json         :func:`read_config`        a run's settings and record (its typed
                                                       view: engine/runs/runconfig.RunConfig)
    RUN/threshold.json      :func:`read_threshold`     the decision threshold chosen on validation
    RUN/postprocess.json    :func:`read_postprocess`   the segmenter's mask post-processing
    RUN/fusion.json         :func:`read_fusion`        the fused classifier's numbers
    RUN/best.json           :func:`read_best`          the best epoch so far (--resume)
    RUN/export/metadata.json  :func:`read_export_metadata`  an export's threshold and settings
    OUT/predict.json        :func:`check_predict`      what wrote a predict output
    CV_DIR/cv.json          :func:`read_cv`            a cross-validation's plan
    SWEEP/sweep.json        :func:`read_sweep`         a sweep's plan
    DATA/prepare.json       :func:`read_prepare`       a dataset's record (near-duplicate
                                                       threshold; a combination's datasets)
    RUN/eval-*/metrics.json :func:`read_metrics`       an evaluation's numbers (cv pools them)

Types are strict (a number is a JSON number, not a string; ``true`` is no number), every float
breastus computes with must be finite (Python's json reads ``NaN`` and ``Infinity``: they are
refused here; best.json's value alone may be +-inf, the worst value), thresholds lie in [0, 1], methods are known ones, part ids lie in 1..num_parts. Keys
a schema does not name are kept and ignored, so files of older and newer versions still read.
A file that breaks its schema is an :class:`~breastus_cli.errors.InputError` (exit 2) naming
the file and the field::

    bad run file: runs/cls/config.json: threshold: must be a finite number in [0, 1] (got NaN)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, \
    ValidationInfo, model_validator

from breastus_cli.errors import InputError

#: a segmenter's mask post-processing (engine/postprocess.py applies them)
POSTPROCESS_METHODS = ("none", "largest")
#: the most items breastus reads back from a list or object of a run file (a combination's
#: datasets, a fused model's weights): far more is no file breastus wrote
MAX_ITEMS = 1000
#: a fitted logistic regression's numbers (weights on standardised inputs, the inputs' centres
#: and scales) are a few units; far beyond this bound is no fitted model, and could overflow
#: a score to NaN. Within it every score of finite inputs is finite.
MAX_WEIGHT = 1e6

M = TypeVar("M", bound=BaseModel)


# ---- value types ---------------------------------------------------------------------------
def _finite_in(low: float, high: float, open_low: bool = False):
    """An after-validator: a finite float in [low, high] (``(low, high]`` with ``open_low``)."""
    text = f" in {'(' if open_low else '['}{low:g}, {high:g}]"

    def check(value: float) -> float:
        if not (math.isfinite(value) and (low < value if open_low else low <= value)
                and value <= high):
            raise ValueError(f"must be a finite number{text}")
        return value

    return AfterValidator(check)


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a finite number above 0")
    return value


def _folder_name(value: str) -> str:
    if value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError("must be a plain folder name")
    return value


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must be a path without a NUL character")
    return value


def _not_nan(value: float) -> float:
    if math.isnan(value):
        raise ValueError("must be a number, not NaN")
    return value


Unit = Annotated[float, _finite_in(0, 1)]  # a probability, a threshold, a Dice
Share = Annotated[float, _finite_in(0, 1, open_low=True)]  # a sensitivity, a fraction
Bounded = Annotated[float, _finite_in(-MAX_WEIGHT, MAX_WEIGHT)]
Scale = Annotated[float, _finite_in(1 / MAX_WEIGHT, MAX_WEIGHT)]
Positive = Annotated[float, AfterValidator(_positive)]
Count = Annotated[int, Field(ge=0)]
PathText = Annotated[str, AfterValidator(_no_nul)]  # a path breastus opens or resolves
PartNumber = Annotated[int, Field(ge=1)]
Task = Literal["cls", "seg"]
Method = Literal[POSTPROCESS_METHODS]  # type: ignore[valid-type]


class _File(BaseModel):
    """A run file's schema: strict types; unknown keys kept (older and newer files read)."""

    model_config = ConfigDict(strict=True, extra="allow")


# ---- the schemas ---------------------------------------------------------------------------
class RunSettings(_File):
    """config.json's ``settings``: those its readers compute with. The defaults are those of a
    file written before the key existed (engine/runs/runconfig.py's RunConfig reads them)."""

    img_size: Annotated[int, Field(ge=1, le=4096)] = 224
    seed: int = 42
    fold: Count | None = None
    val_fraction: Share = 0.1
    batch_size: PartNumber = 16
    roi_margin: Annotated[float, _finite_in(0, 2)] = 0.2
    model: str | None = None  # a classifier's architecture
    backbone: str | None = None  # a segmenter's encoder
    weights: str | None = None
    include_other_masks: bool = False
    data: PathText | None = None  # the dataset, in configs before ``data.path``


class DataRecord(_File):
    """config.json's ``data``: the dataset a run trained on."""

    path: PathText | None = None
    manifest_sha256: str | None = None
    splits_sha256: str | None = None
    split_sha256: str | None = None
    fold: Count | None = None


class Roi(_File):
    """A lesion-centred classifier's crop (config.json and export metadata)."""

    source: str | None = None
    margin: Annotated[float, _finite_in(0, 2)] = 0.2


class RunResult(_File):
    """config.json's ``result``."""

    seconds_this_process: Annotated[float, _finite_in(0, 1e9)] | None = None
    epochs_run: Count | None = None


class ConfigFile(_File):
    """RUN/config.json."""

    task: Task | None = None
    status: str | None = None
    threshold: Unit = 0.5
    settings: RunSettings = RunSettings()
    data: DataRecord | None = None
    roi: Roi | None = None
    result: RunResult | None = None
    labels: Annotated[list[str], Field(min_length=1, max_length=MAX_ITEMS)] = [
        "benign", "malignant"]
    positive_label: str = "malignant"
    input: dict[str, Any] | None = None  # how the model takes its images (export copies it)

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> ConfigFile:
        if self.task == "cls" and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is none of the labels "
                             f"{self.labels}")
        return self


class ThresholdFile(_File):
    """RUN/threshold.json."""

    threshold: Unit
    target_sensitivity: Share | None = None
    source: str | None = None
    #: what the threshold was chosen on (what code compares; ``source`` is for people);
    #: absent in files written before the field: validation (only evaluate wrote the file);
    #: "local": a new hospital's labelled cases (adapt --labels)
    chosen_on: Literal["validation", "local"] | None = None


class PostprocessFile(_File):
    """RUN/postprocess.json."""

    method: Method
    validation_dice: dict[str, Unit] | None = None
    n_validation: Count | None = None


class LogisticFile(_File):
    """A logistic regression of fusion.json: one number per input in every list."""

    names: list[str] = Field(min_length=1)
    median: list[Bounded]
    mean: list[Bounded]
    scale: list[Scale]
    coef: list[Bounded]
    intercept: Bounded

    @model_validator(mode="after")
    def _one_per_input(self) -> LogisticFile:
        for key in ("median", "mean", "scale", "coef"):
            if len(getattr(self, key)) != len(self.names):
                raise ValueError(f"{key} holds {len(getattr(self, key))} numbers for "
                                 f"{len(self.names)} inputs")
        return self


class Partner(_File):
    path: str
    sha256: str


#: fusion.json's ``fitted_on.threshold_rule`` (engine/runs/provenance.py): the fused threshold
#: chosen on cross-fitted validation scores, none asked (0.5), or on the fitted scores (before)
FUSION_THRESHOLD_RULES = ("cross_fitted", "default", "fitted")


class FusionFile(_File):
    """RUN/fusion.json. Validate with ``context={"features": ...}``: the descriptor model's
    inputs must be those the scoring code computes."""

    descriptor_model: LogisticFile
    combiner: LogisticFile
    threshold: Unit
    threshold_source: str
    descriptor_threshold: Unit = 0.5
    fitted_on: dict[str, str]
    partner: Partner | None = None

    @model_validator(mode="after")
    def _inputs(self, info: ValidationInfo) -> FusionFile:
        features = list((info.context or {}).get("features") or self.descriptor_model.names)
        if self.descriptor_model.names != features:
            raise ValueError(f"descriptor_model takes {self.descriptor_model.names}, "
                             f"not this version's descriptors {features}")
        rule = self.fitted_on.get("threshold_rule")
        if rule is not None and rule not in FUSION_THRESHOLD_RULES:
            raise ValueError(f"fitted_on.threshold_rule must be one of "
                             f"{', '.join(FUSION_THRESHOLD_RULES)} (got {rule!r})")
        wanted = ["cnn", "descriptors"] + (["partner"] if self.partner is not None else [])
        if self.combiner.names != wanted:
            raise ValueError(f"combiner takes {self.combiner.names}, expected {wanted}")
        return self


class ModelRecord(_File):
    """predict.json's record of a model it used."""

    path: str | None = None
    sha256: str | None = None


class FusionRecord(_File):
    """predict.json's record of the fused classifier it used."""

    path: str | None = None
    sha256: str | None = None
    threshold: Unit | None = None
    partner: ModelRecord | None = None


class PredictFile(_File):
    """OUT/predict.json."""

    format: str
    threshold: Unit | None = None
    seg_threshold: Unit | None = None
    seg_postprocess: str | None = None
    engine: str | None = None
    num_parts: PartNumber = 1
    part_id: PartNumber = 1
    models: dict[str, ModelRecord | None] = {}
    fusion: FusionRecord | None = None

    @model_validator(mode="after")
    def _part_in_range(self) -> PredictFile:
        if self.part_id > self.num_parts:
            raise ValueError(f"part_id {self.part_id} lies outside 1..num_parts "
                             f"({self.num_parts})")
        return self


class CVFile(_File):
    """CV_DIR/cv.json."""

    task: Task
    folds: Annotated[int, Field(ge=2)]
    train: dict[str, Any]
    n_bootstrap: Count = 0
    target_sensitivity: Share | None = None
    fusion: str | None = None
    seg_cv: str | None = None
    fuse_with_cv: str | None = None


class Trial(_File):
    name: Annotated[str, AfterValidator(_folder_name)]  # its folder under SWEEP/trials/
    lr: Positive
    epochs: PartNumber
    grid_epochs: list[PartNumber]


class SweepFile(_File):
    """SWEEP/sweep.json."""

    task: Task
    train: dict[str, Any]
    trials: list[Trial]


class BestFile(_File):
    """RUN/best.json."""

    value: Annotated[float, AfterValidator(_not_nan)]  # +-inf: the worst value, comparable
    epoch: Count


class FeatureStatsFile(_File):
    """RUN/feature_stats.json: what RUN/feature_stats.npz was computed from."""

    format: Literal["breastus-feature-stats"]
    model_sha256: str
    dims: Annotated[int, Field(ge=1)]
    scale: Positive
    train_cases: list[str]
    n_train: Annotated[int, Field(ge=3)]
    val_cases: list[str]
    n_val: Annotated[int, Field(ge=1)]
    #: the multi-level kind: the levels' layer names and feature counts (absent: the older
    #: single-level kind, the ``pool`` layer)
    levels: Annotated[list[str], Field(min_length=1)] | None = None
    widths: list[Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def _counts(self) -> "FeatureStatsFile":
        if len(self.train_cases) != self.n_train or len(self.val_cases) != self.n_val:
            raise ValueError("n_train/n_val differ from the number of cases listed")
        if (self.levels is None) != (self.widths is None) or (
                self.levels is not None and len(self.levels) != len(self.widths or [])):
            raise ValueError("levels and widths must name the same number of levels")
        return self


class ExportMetadata(_File):
    """RUN/export/metadata.json."""

    task: Task | None = None
    threshold: Unit = 0.5
    threshold_source: str | None = None
    postprocess: Method | None = None
    roi: Roi | None = None


class NearDuplicates(_File):
    """prepare.json's ``near_duplicates``: what ``split`` keeps together."""

    threshold: Share | None = None  # absent: data/duplicates.DEFAULT_THRESHOLD


class CombinedDataset(_File):
    """One dataset of a combination (prepare.json's ``combined``), as it was combined."""

    name: Annotated[str, Field(min_length=1)]
    path: PathText | None = None
    manifest_sha256: str | None = None
    splits_sha256: str | None = None


class PrepareFile(_File):
    """DATA/prepare.json (prepare's and combine's record; ownership's dataset marker)."""

    breastus_version: str | None = None
    manifest_sha256: str | None = None
    format: str | None = None
    folds: Count | None = None
    near_duplicates: NearDuplicates | None = None
    combined: Annotated[list[CombinedDataset], Field(max_length=MAX_ITEMS)] | None = None


class ClsNumbers(_File):
    """A classifier's numbers in metrics.json (None where undefined: one class only)."""

    auc: Unit | None = None
    sensitivity: Unit | None = None
    specificity: Unit | None = None
    accuracy: Unit | None = None
    balanced_accuracy: Unit | None = None


class MasksBlock(_File):
    """metrics.json's ``roi`` block: whose masks the lesion crops came from."""

    seg_run: PathText | None = None  # relative to the eval folder (engine/runs/provenance.py)
    crops_from: str | None = None  # the sentence of files written before seg_run


Weights = Annotated[dict[str, Bounded], Field(max_length=MAX_ITEMS)]


class FusionBlock(_File):
    """metrics.json's ``fusion`` block: the fused classifier's numbers cv pools."""

    seg_run: PathText | None = None
    masks_from: str | None = None
    fitted_on: dict[str, str] | None = None
    descriptor_weights: Weights = {}
    combiner_weights: Weights = {}
    lesion_found: Count = 0


class MetricsFile(ClsNumbers):
    """RUN/eval-<split>/metrics.json: what cv reads back (pooled anew from predictions.csv,
    the spread over folds from these)."""

    dice: Unit | None = None
    iou: Unit | None = None
    threshold: Unit | None = None
    threshold_source: str | None = None
    roi: MasksBlock | None = None
    fusion: FusionBlock | None = None
    ground_truth_roi: ClsNumbers | None = None


# ---- the loader ----------------------------------------------------------------------------
def _shown(value: Any) -> str:
    """A value as the file holds it (JSON), cut short."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refusal(path: str | os.PathLike[str], exc: ValidationError) -> str:
    """The first schema error of ``path`` as one line: file, field, what is wrong, value."""
    error = exc.errors(include_url=False)[0]
    # a key of the file is shown as written, escaped when it holds a line break or another
    # unprintable character (the message stays one line)
    field = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should", "should")
    if error["type"] == "model_type":
        message = "should be a JSON object"
    value = error.get("input")
    got = "" if isinstance(value, dict) and error["type"] != "model_type" \
        else f" (got {_shown(value)})"  # a check across fields: its message names them
    more = exc.error_count() - 1
    return (f"bad run file: {path}: {field + ': ' if field else ''}{message}{got}"
            + (f" (and {more} more)" if more else ""))


def load_json(path: str | os.PathLike[str]) -> Any:
    """``path`` parsed as JSON; an unreadable or malformed file is an InputError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSON and Unicode errors: ValueError
        raise InputError(f"bad run file: {path}: not valid JSON ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None


def validate(path: str | os.PathLike[str], data: Any, model: type[M],
             context: dict[str, Any] | None = None, hint: str | None = None) -> M:
    """``data`` (read from ``path``) checked against ``model``; else an InputError naming
    ``path`` and the field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise InputError(_refusal(path, exc), hint=hint) from None
    except RecursionError:
        raise InputError(f"bad run file: {path}: nested too deeply", hint=hint) from None


def load(path: str | os.PathLike[str], model: type[M], context: dict[str, Any] | None = None,
         hint: str | None = None) -> tuple[M, Any]:
    """Read ``path`` and check it against ``model``: (the model, the parsed JSON)."""
    data = load_json(path)
    return validate(path, data, model, context, hint), data


# ---- one reader per kind -------------------------------------------------------------------
def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """RUN/config.json, checked (returned as the dict its callers use)."""
    return load(path, ConfigFile)[1]


def read_threshold(path: str | os.PathLike[str]) -> ThresholdFile:
    return load(path, ThresholdFile, hint="delete it or choose it again with 'breastus "
                                          "calibrate RUN --target-sensitivity S'")[0]


def read_postprocess(path: str | os.PathLike[str]) -> PostprocessFile:
    return load(path, PostprocessFile, hint="choose it again with 'breastus calibrate "
                                            "RUN'")[0]


def read_fusion(path: str | os.PathLike[str], features: tuple[str, ...]) -> dict[str, Any]:
    """RUN/fusion.json checked, its descriptor model on ``features``."""
    return load(path, FusionFile, {"features": features},
                hint="fit it again with 'breastus calibrate RUN --fusion descriptors "
                     "--seg-run R'")[1]


def read_best(path: str | os.PathLike[str]) -> BestFile:
    return load(path, BestFile)[0]


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    return load(path, ExportMetadata, hint="export the run again")[1]


def check_predict(path: str | os.PathLike[str], record: dict[str, Any]) -> dict[str, Any]:
    """A predict.json already parsed (ownership's marker), checked."""
    validate(path, record, PredictFile)
    return record


def read_feature_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    return load(path, FeatureStatsFile, hint="delete feature_stats.npz and .json: they are "
                                             "computed again")[1]


def read_cv(path: str | os.PathLike[str]) -> dict[str, Any]:
    return load(path, CVFile)[1]


def read_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    return load(path, SweepFile)[1]


def read_prepare(path: str | os.PathLike[str]) -> dict[str, Any]:
    """DATA/prepare.json, checked (the dict its callers use)."""
    return load(path, PrepareFile, hint="prepare (or combine) the dataset again")[1]


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """RUN/eval-<split>/metrics.json, checked (the dict its callers use)."""
    return load(path, MetricsFile, hint="delete that eval folder and evaluate the run again")[1]
