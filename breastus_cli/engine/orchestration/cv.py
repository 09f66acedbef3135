"""``breastus cv``: case-level (patient-level where known) stratified k-fold cross-validation.

One model per fold (validation carved from the training folds), each evaluated on its held-out
fold; then the out-of-fold predictions of all folds are pooled:

    CV_DIR/cv.json                  the plan (task, data, folds, training settings)
    CV_DIR/fold-K/                  a run directory; fold-K/eval-test/ as evaluate writes it
    CV_DIR/summary.json, summary.md per metric: pooled value, mean and sd over folds, and a
                                    (summary.md written by reports.cv from summary.json)
                                    95% bootstrap CI on the pooled out-of-fold predictions

Every case is scored exactly once, by the one model that never saw it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.combine import dataset_column
from breastus_cli.data.split import read_splits
from breastus_cli.engine.evaluation.calibrate import calibrate, needed
from breastus_cli.engine.evaluation.eval_settings import Calibration, EvalSettings
from breastus_cli.engine.evaluation.evaluate import evaluate
from breastus_cli.engine.orchestration.plan import (
    PlanKind, open_plan, read_own_plan, submit_parts, train_part,
)
from breastus_cli.engine.orchestration.slurm import SlurmOptions
from breastus_cli.engine.runs.cvdir import PLAN, fold_dir, fold_done, read_plan
from breastus_cli.engine.runs.cvdir import fold_metrics as read_fold_metrics  # summarize's name
from breastus_cli.engine.runs.rundir import data_record, split_changed
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.runs.settings import (
    SETTINGS_TYPES, TRAIN_ADDED, TrainSettings, added_settings,
)
from breastus_cli.engine.stats.metrics import aggregate, classification_metrics
from breastus_cli.engine.stats.seg_metrics import dataset_metrics
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.runfiles import read_cv

SUMMARY = "summary.json"
CLS_KEYS = ("auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy")
SEG_KEYS = ("dice", "iou")
#: cv.json's record of the folds it ran on (SHA-256 of splits.csv and of its fold column)
SPLIT_KEYS = ("splits_sha256", "split_sha256")


@dataclass
class CVSettings:
    """Settings of ``breastus cv cls|seg``."""

    task: str
    train: TrainSettings
    out: Path
    folds: int = 5
    target_sensitivity: float | None = None
    n_bootstrap: int = 2000
    slurm: SlurmOptions | None = None
    seg_cv: Path | None = None  # fold K's segmenter: lesion crops and/or descriptors
    fusion: str = "none"  # "descriptors": CNN score + lesion descriptors (engine/apply/fusion.py)
    fuse_with_cv: Path | None = None  # fold K's fusion also takes this cv's fold K classifier

    def validate(self) -> None:
        if self.task not in SETTINGS_TYPES:
            raise UsageError(f"cv task must be cls or seg (got '{self.task}')")
        if self.folds < 2:
            raise UsageError(f"--folds must be at least 2 (got {self.folds})")
        if self.train.run_dir is not None or self.train.fold is not None:
            raise UsageError("cv makes one run per fold itself: drop --run-dir and --fold")
        if self.target_sensitivity is not None and not 0 < self.target_sensitivity <= 1:
            raise UsageError("--target-sensitivity must lie in (0, 1]")
        if self.target_sensitivity is not None and self.task != "cls":
            raise UsageError("--target-sensitivity applies to classification")
        if self.fusion not in ("none", "descriptors"):
            raise UsageError(f"--fusion must be none or descriptors (got '{self.fusion}')")
        if self.fusion != "none" and (self.task != "cls" or self.seg_cv is None):
            raise UsageError("--fusion descriptors needs a classifier and --seg-cv SEG_CV_DIR "
                             "(the fold's segmenter draws the lesions the descriptors describe)")
        if self.fuse_with_cv is not None and self.fusion == "none":
            raise UsageError("--fuse-with-cv adds a second classifier to the fused classifier: "
                             "give it with --fusion descriptors")
        self.train.validate()
        if self.seg_cv is not None:
            self._check_seg_cv()
        if self.fuse_with_cv is not None:
            self._check_same_folds(Path(self.fuse_with_cv), "cls", "--fuse-with-cv",
                                   "its fold K classifier")

        splits = read_splits(self.train.data)
        if "fold" not in splits.columns or splits["fold"].nunique() != self.folds:
            found = splits["fold"].nunique() if "fold" in splits.columns else 0
            raise InputError(
                f"{self.train.data}/splits.csv has {found or 'no'} folds, not {self.folds}",
                hint=f"run 'breastus split {self.train.data} --folds {self.folds}' first")

    def _check_seg_cv(self) -> None:
        if self.task != "cls" or (getattr(self.train, "roi", "none") == "none"
                                  and self.fusion == "none"):
            raise UsageError("--seg-cv is for lesion-centred classification (cv cls --roi mask) "
                             "or the fused classifier (--fusion descriptors)")
        self._check_same_folds(Path(self.seg_cv), "seg", "--seg-cv", "its fold K segmenter")

    def _check_same_folds(self, other: Path, task: str, option: str, model: str) -> None:
        """``other`` is a '``task``' cross-validation of this dataset's folds (its fold K model
        never saw fold K)."""
        plan = read_plan(other, option=f"{option} ", hint=f"run 'breastus cv {task}' first")
        if plan.get("task") != task:
            raise InputError(f"{option} {other} is a '{plan.get('task')}' cross-validation")
        if Path(other).resolve() == Path(self.out).resolve():
            raise UsageError(f"{option} needs another cross-validation than --out")
        if (plan.get("data") != str(Path(self.train.data).resolve())
                or plan.get("folds") != self.folds):
            raise InputError(f"{option} {other} was run on other data or folds "
                             f"({plan.get('data')}, {plan.get('folds')} folds): {model} "
                             "may have seen this fold's test cases")
        # the same folder re-split since: its fold K model trained on other cases
        check_plan_split(f"{option} {other}", plan, Path(self.train.data))


@dataclass
class CVResult:
    """Per-fold and pooled numbers of a cross-validation."""

    out: Path
    task: str
    summary: dict[str, Any]
    folds_done: int
    folds: int
    trained_this_run: int
    seconds: float
    submitted_job: str | None = None
    sbatch: Path | None = None


def _plan(settings: CVSettings) -> dict[str, Any]:
    train = settings.train.to_dict()
    record = data_record(Path(settings.train.data), 0)  # the folds' fingerprint
    return {"task": settings.task, "data": str(Path(settings.train.data).resolve()),
            "folds": settings.folds, "train": train,
            "target_sensitivity": settings.target_sensitivity,
            "n_bootstrap": settings.n_bootstrap,
            "seg_cv": None if settings.seg_cv is None else str(Path(settings.seg_cv).resolve()),
            "fusion": settings.fusion,
            "fuse_with_cv": None if settings.fuse_with_cv is None
            else str(Path(settings.fuse_with_cv).resolve()),
            **{key: record[key] for key in SPLIT_KEYS}}


def check_plan_split(name: str, plan: dict[str, Any], data: Path | None = None) -> None:
    """Refuse (exit 2) a cross-validation whose dataset has other folds than when it began
    (re-split since): its finished folds and the new ones would overlap."""
    data = Path(data or plan.get("data") or "")
    message = split_changed(name, plan, data, by_fold=True, what="run",
                            advice="restore the splits.csv it ran on, or cross-validate "
                                   "again into another --out") if data.is_dir() else None
    if message:
        raise InputError(message)


#: the plan's keys of the fused classifier: fitted after training, so a finished CV takes them on
FUSION_KEYS = ("fusion", "seg_cv", "fuse_with_cv")


def _adds_fusion(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether ``wanted`` is ``existing`` plus ``--fusion`` (and the ``--seg-cv`` it needs) or
    plus a second classifier (``--fuse-with-cv``)."""
    if wanted.get("fusion", "none") == "none":
        return False
    if existing.get("seg_cv") not in (None, wanted.get("seg_cv")):
        return False
    if existing.get("fusion", "none") != "none" and (
            existing.get("fuse_with_cv") is not None or wanted.get("fuse_with_cv") is None):
        return False
    return ({k: v for k, v in existing.items() if k not in FUSION_KEYS}
            == {k: v for k, v in wanted.items() if k not in FUSION_KEYS})


def _new_segmenter(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether ``wanted`` is ``existing`` (or it plus fusion) with another segmentation CV of
    the same folds (``--seg-cv``): a finished CV is scored again with its masks (lesion crops,
    descriptors), nothing retrained."""
    if existing.get("seg_cv") in (None, wanted.get("seg_cv")) or wanted.get("seg_cv") is None:
        return False
    moved = {**existing, "seg_cv": wanted["seg_cv"]}
    return moved == wanted or _adds_fusion(moved, wanted)


def _comparable(plan: dict[str, Any]) -> dict[str, Any]:
    """What of cv.json must match to resume: the plan without its folds' record (compared apart,
    cv.json has it since issue 11), an older plan filled with the settings added since."""
    plan = {k: v for k, v in plan.items() if k not in SPLIT_KEYS}
    plan.setdefault("seg_cv", None)  # written before --seg-cv existed
    plan.setdefault("fusion", "none")  # written before --fusion existed
    plan.setdefault("fuse_with_cv", None)  # written before --fuse-with-cv existed
    # settings added since: what the run trained with
    plan["train"] = {**added_settings(plan.get("task")), **plan.get("train", {})}
    return plan


def _amend(existing: dict[str, Any], wanted: dict[str, Any], on_disk: dict[str, Any],
           plan: dict[str, Any]) -> dict[str, Any] | None:
    """A finished cross-validation takes on fusion or another segmenter without retraining."""
    if _adds_fusion(existing, wanted) or _new_segmenter(existing, wanted):
        # fusion is fitted after training, and crops and descriptors come from the
        # segmenter at evaluation: a finished cross-validation takes either on without
        # retraining (each fold's CNN is scored again, the fused model refitted beside)
        return {**plan, **{key: on_disk.get(key) for key in SPLIT_KEYS}}
    if _adds_fusion(wanted, existing):
        return on_disk  # the same training without --fusion: the fused folds are kept as they are
    return None


#: the cross-validation folder (engine/orchestration/plan.py)
CV_FOLDER = PlanKind(name="cv", part="fold", file=PLAN, what="cross-validation",
                     hint="choose another --out, or repeat the first run's options",
                     read=read_cv, comparable=_comparable)


def run_fold(out: Path, k: int) -> str:
    """Train (or resume) fold ``k`` and evaluate it on its held-out fold."""
    plan = read_own_plan(CV_FOLDER, out)
    if not 0 <= k < plan["folds"]:
        raise UsageError(f"--index must lie in 0..{plan['folds'] - 1} (got {k})")
    check_plan_split(str(out), plan)  # the folds are still the ones it began on
    fusion = plan.get("fusion", "none")
    partner_cv = plan.get("fuse_with_cv")
    if fold_done(out, k, fusion, partner_cv is not None, plan.get("seg_cv")):
        return "skipped"
    run = fold_dir(out, k)
    settings = SETTINGS_TYPES[plan["task"]].from_dict({**TRAIN_ADDED, **plan["train"]})
    settings.fold, settings.run_dir = k, run
    seg_run = None
    if plan.get("seg_cv"):
        # the segmenter of the same fold never saw this fold's test cases
        if not fold_done(Path(plan["seg_cv"]), k):
            raise InputError(f"fold {k} of --seg-cv {plan['seg_cv']} has not finished",
                             hint=f"finish 'breastus cv seg' there first (fold-{k})")
        seg_run = fold_dir(Path(plan["seg_cv"]), k)
    partner = None
    if partner_cv:
        if not fold_done(Path(partner_cv), k):
            raise InputError(f"fold {k} of --fuse-with-cv {partner_cv} has not finished",
                             hint=f"finish 'breastus cv cls' there first (fold-{k})")
        partner = fold_dir(Path(partner_cv), k)
    trained = train_part(settings, plan["task"])
    scoring = EvalSettings(run_dir=run, split="test", seg_run=seg_run,
                           target_sensitivity=plan.get("target_sensitivity"), fusion=fusion,
                           fuse_with=partner, n_bootstrap=0)  # fold CIs unneeded: pooled ones are
    evaluate(scoring, calibrate_fold(scoring, plan["task"]))
    return "trained" if trained else "evaluated"


def calibrate_fold(scoring: EvalSettings, task: str) -> Calibration | None:
    """The calibration step on a fold's validation cases (evaluation/calibrate.py): the
    segmenter's mask post-processing; the classifier's threshold for the plan's target
    sensitivity and its fused classifier, when asked. Its validation crops go beside the
    fold's evaluation, as they always did. A segmenter fold whose validation cases hold no
    mask keeps its masks as they are (said in its evaluation), as before."""
    wanted = scoring.calibration()
    if not needed(wanted, task):
        return None
    try:
        return calibrate(wanted, work_dir=scoring.out_dir())
    except InputError:
        if task != "seg":
            raise
        return None


def cv(settings: CVSettings) -> CVResult:
    """Run every unfinished fold here (or submit them as a Slurm array), then summarise."""
    settings.validate()
    start = time.perf_counter()
    out = Path(settings.out)
    plan = open_plan(CV_FOLDER, out, _plan(settings), _amend)
    check_plan_split(str(out), plan, Path(settings.train.data))
    if settings.slurm is not None:
        path, job = submit_parts(CV_FOLDER, out, settings.folds, settings.slurm)
        result = summarize(out, allow_partial=True)
        result.submitted_job, result.sbatch = job, path
        return result
    trained = 0
    for k in range(settings.folds):
        if run_fold(out, k) == "trained":
            trained += 1
    result = summarize(out)
    result.trained_this_run = trained
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _pooled_cls(y: np.ndarray, p: np.ndarray, y_pred: np.ndarray, n_bootstrap: int,
                seed: int = 0) -> tuple[dict[str, float | None], dict[str, list[float] | None]]:
    """Pooled metrics from out-of-fold labels, scores and per-fold decisions, with the same
    class-stratified percentile bootstrap over cases as every other evaluation."""
    result = classification_metrics(y, p, y_pred=y_pred, n_bootstrap=n_bootstrap, seed=seed)
    return {k: result[k] for k in CLS_KEYS}, {k: result["ci"][k] for k in CLS_KEYS}


def classification_pooled(frame: Any, n_bootstrap: int) -> dict[str, Any]:
    """Pooled out-of-fold classification numbers of some cases, with their CIs."""
    pooled, ci = _pooled_cls(frame["y_true"].to_numpy(), frame["p_malignant"].to_numpy(),
                             frame["y_pred"].to_numpy(), n_bootstrap)
    return {**pooled, "ci": ci, "n": int(len(frame))}


def _by_dataset(frame: Any, score: Any) -> dict[str, Any]:
    """``{dataset: score(its rows)}`` when the pooled cases come from several datasets."""
    column = dataset_column(frame)
    if column is None:
        return {}
    return {str(name): score(part) for name, part in frame.groupby(column, sort=True)}


#: the fused classifier's scores in a fold's predictions.csv: (score, decision) columns
FUSION_COLUMNS = {
    "cnn": ("p_malignant", "y_pred"),
    "partner": ("p_partner", "y_pred_partner"),
    "descriptors": ("p_descriptors", "y_pred_descriptors"),
    "fused": ("p_fused", "y_pred_fused"),
    "descriptors_gt_mask": ("p_descriptors_gt_mask", "y_pred_descriptors_gt_mask"),
    "fused_gt_mask": ("p_fused_gt_mask", "y_pred_fused_gt_mask"),
}


def _pooled_fusion(frame: Any, folds: list[dict[str, Any]], n_bootstrap: int) -> dict[str, Any]:
    """CNN alone, descriptors alone and fused, pooled over the folds' test cases (and the
    ground-truth-mask upper bound), with each descriptor's weight averaged over the folds."""
    result: dict[str, Any] = {}
    y = frame["y_true"].to_numpy()
    for name, (score, decision) in FUSION_COLUMNS.items():
        if score in frame.columns and frame[score].notna().all():
            pooled, ci = _pooled_cls(y, frame[score].to_numpy(), frame[decision].to_numpy(),
                                     n_bootstrap)
            result[name] = {key: {"pooled": pooled[key], "ci": ci[key]} for key in CLS_KEYS}
    for key in ("descriptor_weights", "combiner_weights"):
        names = list(folds[0].get(key, {}))
        result[key] = {n: round(float(np.mean([f[key][n] for f in folds])), 4) for n in names}
    result["lesion_found"] = int(sum(f.get("lesion_found", 0) for f in folds))
    result["fitted_on"] = {part: f"(fold 0) {text}" for part, text in
                           (folds[0].get("fitted_on") or {}).items()}  # each fold alike
    result["masks_from"] = "each fold's segmenter (the --seg-cv fold of the same index)"
    if "partner" in result:
        result["partner_from"] = "each fold's classifier of the --fuse-with-cv folder"
    return result


def summarize(out: Path, allow_partial: bool = False) -> CVResult:
    """summary.json from the folds that finished (summary.md is written by reports.cv)."""
    import pandas as pd

    start = time.perf_counter()
    out = Path(out)
    plan = read_own_plan(CV_FOLDER, out)
    done = [k for k in range(plan["folds"]) if fold_done(out, k)]
    if not done and not allow_partial:
        raise WorkError(f"no finished fold in {out}")
    fold_metrics = [read_fold_metrics(out, k) for k in done]
    summary: dict[str, Any] = {"task": plan["task"], "folds": plan["folds"],
                               "folds_done": done, "metrics": {}}
    if done and plan["task"] == "cls":
        frames = [pd.read_csv(fold_dir(out, k) / "eval-test/predictions.csv").assign(fold=k)
                  for k in done]
        pooled_frame = pd.concat(frames, ignore_index=True)
        with atomic_path(out / "oof_predictions.csv") as tmp:
            pooled_frame.to_csv(tmp, index=False)
        pooled, ci = _pooled_cls(pooled_frame["y_true"].to_numpy(),
                                 pooled_frame["p_malignant"].to_numpy(),
                                 pooled_frame["y_pred"].to_numpy(), plan["n_bootstrap"])
        spread = aggregate(fold_metrics, CLS_KEYS)
        for key in CLS_KEYS:
            summary["metrics"][key] = {"pooled": pooled[key], "mean": spread[key]["mean"],
                                       "sd": spread[key]["sd"], "ci": ci[key]}
        if "p_malignant_gt_roi" in pooled_frame.columns and all(
                "ground_truth_roi" in m for m in fold_metrics):
            # lesion-centred with crops from the fold's segmenter: the same classifiers on
            # ground-truth crops, pooled the same way (the cost of imperfect segmentation)
            gt_pooled, gt_ci = _pooled_cls(pooled_frame["y_true"].to_numpy(),
                                           pooled_frame["p_malignant_gt_roi"].to_numpy(),
                                           pooled_frame["y_pred_gt_roi"].to_numpy(),
                                           plan["n_bootstrap"])
            gt_spread = aggregate([m["ground_truth_roi"] for m in fold_metrics], CLS_KEYS)
            summary["ground_truth_roi"] = {
                key: {"pooled": gt_pooled[key], "mean": gt_spread[key]["mean"],
                      "sd": gt_spread[key]["sd"], "ci": gt_ci[key]} for key in CLS_KEYS}
            summary["crops_from"] = f"segmentation CV {plan.get('seg_cv')}"
            if "lesion_found" in pooled_frame.columns:
                summary["lesion_found"] = int(pooled_frame["lesion_found"].sum())
        elif plan["train"].get("roi", "none") != "none":
            summary["crops_from"] = "ground-truth masks"
            summary["roi_source"] = "ground-truth masks (oracle: upper bound)"
        if plan.get("fusion", "none") != "none" and "p_fused" in pooled_frame.columns and all(
                "fusion" in m for m in fold_metrics):
            summary["fusion"] = _pooled_fusion(pooled_frame, [m["fusion"] for m in fold_metrics],
                                               plan["n_bootstrap"])
        per_dataset = _by_dataset(pooled_frame, lambda part: classification_pooled(
            part, plan["n_bootstrap"]))
        if per_dataset:
            summary["by_dataset"] = per_dataset
        summary["n"] = int(len(pooled_frame))
        summary["n_malignant"] = int(pooled_frame["y_true"].sum())
        summary["thresholds"] = [m["threshold"] for m in fold_metrics]
        summary["threshold_sources"] = sorted({str(m.get("threshold_source"))
                                               for m in fold_metrics})
        summary["majority_baseline_accuracy"] = float(max(pooled_frame["y_true"].mean(),
                                                          1 - pooled_frame["y_true"].mean()))
    elif done:
        frames = [pd.read_csv(fold_dir(out, k) / "eval-test/per_case.csv").assign(fold=k)
                  for k in done]
        pooled_frame = pd.concat(frames, ignore_index=True)
        with atomic_path(out / "oof_per_case.csv") as tmp:
            pooled_frame.to_csv(tmp, index=False)
        pooled = dataset_metrics(pooled_frame.to_dict("records"),
                                 n_bootstrap=plan["n_bootstrap"])
        spread = aggregate(fold_metrics, SEG_KEYS)
        for key in SEG_KEYS:
            summary["metrics"][key] = {"pooled": pooled[key], "mean": spread[key]["mean"],
                                       "sd": spread[key]["sd"], "ci": pooled["ci"][key]}
        per_dataset = _by_dataset(pooled_frame, lambda part: {
            **{k: v for k, v in dataset_metrics(part.to_dict("records"),
                                                n_bootstrap=plan["n_bootstrap"]).items()
               if k in (*SEG_KEYS, "ci", "n")}})
        if per_dataset:
            summary["by_dataset"] = per_dataset
        summary["n"] = int(len(pooled_frame))
    summary["seconds_training"] = round(sum(
        RunConfig.read(fold_dir(out, k)).seconds_this_process for k in done), 1)
    write_json(out / SUMMARY, summary)  # summary.md: reports.cv.write_summary
    return CVResult(out=out, task=plan["task"], summary=summary, folds_done=len(done),
                    folds=plan["folds"], trained_this_run=0,
                    seconds=round(time.perf_counter() - start, 2))
