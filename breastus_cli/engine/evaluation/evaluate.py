"""``breastus evaluate``: numbers for a run on a split, written as predictions.csv and
metrics.json in ``RUN/eval-<split>/`` (the reports layer adds plots and the report).

Classification: p(malignant) per case, the threshold (0.5, ``--threshold``, or the one that
reaches ``--target-sensitivity`` on the validation split), metrics with bootstrap CIs.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.engine.apply.masks import mask_cache, predicted_masks
from breastus_cli.engine.runs.rundir import (
    THRESHOLD, THRESHOLD_RULE, check_same_split, read_config, read_threshold, run_cases,
    same_dataset, split_fingerprint,
)
from breastus_cli.errors import InputError, UsageError, WorkError
from breastus_cli.ownership import claim


@dataclass
class EvalSettings:
    """Settings of ``breastus evaluate`` for one run."""

    run_dir: Path
    data: Path | None = None
    split: str = "test"
    target_sensitivity: float | None = None
    threshold: float | None = None
    batch_size: int = 32
    n_bootstrap: int = 2000
    seed: int = 0
    seg_run: Path | None = None  # lesion-centred classifiers: crops from this segmenter
    ensemble: bool = False  # run_dir is a cv folder scored as one model (its fold ensemble)
    tta: str = "none"  # test-time augmentation: none or flip (inference.with_tta)
    fusion: str = "none"  # "descriptors": fit the run's fused classifier (engine/apply/fusion.py)
    fuse_with: Path | None = None  # a second classifier run whose score the combiner also takes
    #: a segmenter's mask post-processing: None = the run's (engine/apply/postprocess.py, chosen on
    #: its validation cases the first time), or one of postprocess.METHODS forced
    postprocess: str | None = None

    def validate(self) -> None:
        from breastus_cli.engine.apply.inference import TTA_MODES

        if self.split not in ("train", "val", "test", "all"):
            raise UsageError(f"--split must be test, val, train or all (got '{self.split}')")
        if self.tta not in TTA_MODES:
            raise UsageError(f"--tta must be {' or '.join(TTA_MODES)} (got '{self.tta}')")
        from breastus_cli.engine.apply.postprocess import METHODS

        if self.postprocess is not None and self.postprocess not in METHODS:
            raise UsageError(f"--postprocess must be {' or '.join(METHODS)} "
                             f"(got '{self.postprocess}')")
        if self.ensemble and self.data is None:
            raise UsageError("--ensemble scores a fold ensemble on another dataset: give it with "
                             "--data (its fold models together saw every case of the "
                             "cross-validation's own dataset)")
        if self.ensemble and self.target_sensitivity is not None:
            raise UsageError("--ensemble: the threshold is the median of the folds' thresholds "
                             "(each chosen on its fold's validation cases); fix another with "
                             "--threshold, not --target-sensitivity")
        if self.target_sensitivity is not None and not 0 < self.target_sensitivity <= 1:
            raise UsageError(f"--target-sensitivity must lie in (0, 1] (got {self.target_sensitivity})")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"--threshold must lie in [0, 1] (got {self.threshold})")
        if self.threshold is not None and self.target_sensitivity is not None:
            raise UsageError("--threshold and --target-sensitivity exclude each other")
        if self.target_sensitivity is not None and self.split in ("val", "all"):
            raise UsageError(f"--target-sensitivity chooses the threshold on the validation "
                             f"cases, which --split {self.split} would then report on: the "
                             "threshold must come from validation: use --split test")
        if self.n_bootstrap < 0:
            raise UsageError(f"--bootstrap must be >= 0 (got {self.n_bootstrap})")
        if self.fusion not in ("none", "descriptors"):
            raise UsageError(f"--fusion must be none or descriptors (got '{self.fusion}')")
        if self.fusion != "none" and (self.seg_run is None or self.ensemble):
            raise UsageError("--fusion descriptors fits one run's fused classifier: it needs "
                             "--seg-run (the segmenter whose masks the descriptors describe)")
        if self.fuse_with is not None and self.fusion == "none":
            raise UsageError("--fuse-with adds a second classifier to the fused classifier: "
                             "give it with --fusion descriptors")
        if self.fuse_with is not None:
            from breastus_cli.engine.runs.cvdir import is_cv_dir

            if is_cv_dir(self.fuse_with):
                raise UsageError(f"--fuse-with takes one run directory, not the "
                                 f"cross-validation folder {self.fuse_with} (cv --fuse-with-cv "
                                 "fuses fold by fold)")
            if Path(self.fuse_with).resolve() == Path(self.run_dir).resolve():
                raise UsageError("--fuse-with needs another classifier than the run itself")
        if self.fusion != "none" and self.split != "test":
            raise UsageError("--fusion descriptors fits on the run's training and validation "
                             "cases: report it on --split test")

    def out_dir(self, other: bool = False) -> Path:
        """``RUN/eval-<split>/``; on ``other`` (``--data``, not the run's own dataset)
        ``RUN/eval-<dataset>-<split>/``, so scoring another hospital's cases never replaces the
        run's own evaluation; a fold ensemble's ``CV_DIR/eval-ensemble-<dataset>-<split>/``;
        with test-time augmentation ``...-tta-flip/`` (the plain evaluation is kept), with a
        forced segmentation post-processing ``...-postprocess-<method>/``."""
        suffix = "" if self.tta == "none" else f"-tta-{self.tta}"
        if self.postprocess is not None:
            suffix += f"-postprocess-{self.postprocess}"
        from breastus_cli.data.combine import dataset_names

        if self.ensemble:
            name = dataset_names([Path(self.data or "data")])[0]
            return Path(self.run_dir) / f"eval-ensemble-{name}-{self.split}{suffix}"
        if other and self.data is not None:
            name = dataset_names([Path(self.data)])[0]
            return Path(self.run_dir) / f"eval-{name}-{self.split}{suffix}"
        return Path(self.run_dir) / f"eval-{self.split}{suffix}"


@dataclass
class EvalResult:
    """One run evaluated on one split."""

    run_dir: Path
    out_dir: Path
    task: str
    split: str
    metrics: dict[str, Any]
    frame: Any  # pandas DataFrame of predictions
    config: dict[str, Any]
    command: str
    threshold_source: str = "default"
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None  # the prepared dataset scored (the run's own, or --data)
    #: ``data`` is another dataset than the run trained on (``--data OTHER``, or a fold
    #: ensemble's, which only scores other data): none of its cases trained or chose anything
    other: bool = False


def find_runs(paths: list[Path], ensemble: bool = False) -> list[Path]:
    """Expand each path: a run directory stays; a folder of runs (a CV parent) gives its runs.
    ``ensemble``: each path is a cross-validation folder, kept whole (its fold ensemble)."""
    runs: list[Path] = []
    for path in paths:
        path = Path(path)
        if ensemble:
            from breastus_cli.engine.runs.cvdir import is_cv_dir

            if not is_cv_dir(path):
                raise InputError(f"--ensemble takes cross-validation folders ('breastus cv' "
                                 f"output with cv.json): {path} is not one")
            runs.append(path)
            continue
        if (path / "config.json").is_file():
            runs.append(path)
            continue
        if not path.is_dir():
            raise InputError(f"run directory not found: {path}")
        children = sorted(p for p in path.iterdir() if (p / "config.json").is_file())
        if not children:
            raise InputError(f"{path} is neither a run directory nor a folder of runs")
        runs.extend(children)
    return runs


#: metrics.json's ``roi_source`` of a lesion-centred classifier scored on ground-truth crops
ORACLE_ROI = "ground-truth masks (oracle: upper bound)"


def _data_dir(settings: EvalSettings, config: dict[str, Any]) -> Path:
    data = settings.data or Path(config["data"]["path"])
    if not Path(data).is_dir():
        raise InputError(f"dataset {data} recorded in {settings.run_dir}/config.json not found; "
                         "give it with --data")
    if settings.split != "all":  # --split all scores every case: no split question
        check_same_split(settings.run_dir, config, data)
    return Path(data)


def _is_other(settings: EvalSettings, config: dict[str, Any], data: Path) -> bool:
    """Is ``data`` (``--data``) another dataset than the one the run trained on?"""
    from breastus_cli.engine.runs.rundir import same_dataset

    return settings.data is not None and not settings.ensemble \
        and not same_dataset(Path(data), config.get("data") or {})


def by_dataset(frame: Any, score: Any) -> dict[str, Any]:
    """``{dataset: score(mask)}`` for each dataset of a combined dataset's cases (column
    ``dataset``: ``breastus combine``), {} when the cases come from one dataset."""
    from breastus_cli.data.combine import dataset_column

    column = dataset_column(frame)
    if column is None:
        return {}
    values = frame[column].astype(str).to_numpy()
    return {name: score(values == name) for name in sorted(set(values))}


def _cases(data: Path, split: str, config: dict[str, Any]) -> Any:
    return run_cases(config, split, data)


def _p_malignant(loaded: Any, images: list[str], batch_size: int) -> np.ndarray:
    """p(malignant) of each prepared image through the one inference path."""
    from breastus_cli.engine.stats.metrics import as_score

    return as_score(loaded.run_files(images, batch_size)[:, 1])  # as predictions.csv has it


def _cls_images(frame: Any, config: dict[str, Any], settings: EvalSettings, out_dir: Path,
                role: str, source: str, prefix: str = "") -> tuple[list[str], list[bool] | None]:
    """What the classifier sees: whole images, or lesion crops from the ground-truth masks
    (``source='gt'``) or from the segmenter's masks (``'seg'``); with crops, whether a lesion
    was found (an empty mask falls back to the whole image). Crops are written to
    ``out_dir/<prefix>roi-<source>-<role>/``."""
    roi = config.get("roi", {})
    if roi.get("source", "none") == "none":
        return list(frame["image_path"]), None
    from breastus_cli.data.imaging import read_luminance, save_png
    from breastus_cli.data.roi import write_roi_crops
    from breastus_cli.engine.apply.inference import lesion_crop

    margin = float(roi.get("margin", 0.2))
    if source == "gt":
        if (frame["mask_path"] == "").any():
            raise InputError("ground-truth crops need a lesion mask for every case")
        return (write_roi_crops(frame, out_dir / f"{prefix}roi-gt-{role}", margin),
                [True] * len(frame))
    folder = out_dir / f"{prefix}roi-seg-{role}"
    folder.mkdir(parents=True, exist_ok=True)
    paths, found = [], []
    masks = predicted_masks(Path(settings.seg_run), list(frame["image_path"]),
                            settings.batch_size, tta=settings.tta)
    for case_id, image_path, mask in zip(frame["case_id"], frame["image_path"], masks):
        image, _, hit = lesion_crop(read_luminance(image_path), mask, margin)
        target = folder / f"{case_id}.png"
        save_png(image, target)
        paths.append(str(target))
        found.append(hit)
    return paths, found


def check_partner_unseen(partner: Path, config: dict[str, Any], data: Path,
                         frames: list[Any], run_config: dict[str, Any] | None = None) -> None:
    """Refuse (exit 2) a second classifier (``--fuse-with``) that trained on a case, or a
    patient, of ``frames`` (the cases the combiner is fitted or scored on) that the run itself
    did not train on (``run_config``): its score there would be a memory, not a prediction.
    Another dataset than the one it trained on passes."""
    import pandas as pd

    if not same_dataset(Path(data), config.get("data") or {}):
        return
    check_same_split(partner, config, data)  # re-split since: its training cases are unknown
    seen = run_cases(config, "train", data)
    scored = pd.concat(frames, ignore_index=True)
    own = (run_cases(run_config, "train", data)  # e.g. --split train: the run's own as well
           if run_config is not None and same_dataset(Path(data), run_config.get("data") or {})
           else scored.iloc[:0])
    for column, what in (("case_id", "case"), ("patient_id", "patient")):
        if column not in seen.columns or column not in scored.columns:
            continue
        known = set(own[column].astype(str)) if column in own.columns else set()
        both = sorted((set(seen[column].astype(str)) & set(scored[column].astype(str))) - known)
        if both:
            raise InputError(f"--fuse-with {partner} trained on {len(both)} {what}(s) that the "
                             f"fused classifier is fitted or scored on (e.g. {both[0]}): its "
                             "scores there are not predictions",
                             hint="fuse with a run trained on the same split and fold")


def _partner_scores(partner: Path, frames: dict[str, Any], settings: EvalSettings,
                    out_dir: Path, data: Path,
                    run_config: dict[str, Any]) -> tuple[dict[str, np.ndarray], float]:
    """A second classifier's p(malignant) on each named frame (through the one inference
    path: whole images, or lesion crops from ``--seg-run`` when it is lesion-centred), and its
    own decision threshold."""
    from breastus_cli.engine.apply.inference import open_run

    config = read_config(partner)
    if config.get("task") != "cls":
        raise InputError(f"--fuse-with {partner} is a '{config.get('task')}' run, not a "
                         "classifier")
    check_partner_unseen(partner, config, data, list(frames.values()), run_config)
    roi = config.get("roi", {}).get("source", "none") != "none"
    loaded = open_run(partner, "cls", config=config, tta=settings.tta)
    scores = {}
    for role, frame in frames.items():
        images, _ = _cls_images(frame, config, settings, out_dir, role,
                                "seg" if roi else "gt", prefix="partner-")
        scores[role] = _p_malignant(loaded, images, settings.batch_size)
    return scores, read_threshold(partner, config).value


def evaluate(settings: EvalSettings) -> EvalResult:
    """Evaluate one run; writes ``RUN/eval-<split>/predictions.csv`` and ``metrics.json``."""
    settings.validate()
    start = time.perf_counter()
    config = (ensemble_config(settings.run_dir, Path(settings.data or "")) if settings.ensemble
              else read_config(settings.run_dir))
    # RUN/eval-*/ (and threshold.json, fusion.json ...) go into the run or cross-validation
    # folder: breastus's own, with no link in it that leads out of it
    claim(settings.run_dir, "cv" if settings.ensemble else "run", option="")
    if config.get("task") == "seg":
        result = _evaluate_seg(settings, config, start)
    elif config.get("task") != "cls":
        raise InputError(f"{settings.run_dir}: unknown task '{config.get('task')}' in config.json")
    else:
        with mask_cache():  # the segmenter's masks, computed once for crops and descriptors
            result = _evaluate_cls(settings, config, start)
    result.metrics["tta"] = settings.tta
    twins = None if settings.ensemble else twins_in_training(settings, config)
    if twins is not None:
        result.metrics["near_duplicates"] = twins
    if settings.ensemble:
        result.metrics["ensemble"] = config["ensemble"]
        if result.task == "seg" and settings.threshold is None:  # the median, said so
            result.threshold_source = config["ensemble"]["threshold_source"]
            result.metrics["threshold_source"] = result.threshold_source
    write_json(result.out_dir / "metrics.json", result.metrics)
    return result


def twins_in_training(settings: EvalSettings, config: dict[str, Any]) -> dict[str, Any] | None:
    """How many of the scored (test or val) cases have a near-duplicate image among the run's
    training cases (a split made before ``split`` kept twins together, or a manifest without
    ``dup_group``: then found from the images now); None for another dataset, whose
    training cases are elsewhere, and for ``--split train``/``all``."""
    from breastus_cli.data import duplicates
    from breastus_cli.ownership import read_marker

    data = Path(settings.data or (config.get("data") or {}).get("path") or "")
    if settings.split not in ("test", "val") or not data.is_dir() \
            or _is_other(settings, config, data):
        return None
    found = (read_marker(data, "dataset") or {}).get("near_duplicates") or {}
    threshold = found.get("threshold", duplicates.DEFAULT_THRESHOLD)
    return duplicates.twins_in(run_cases(config, settings.split, data),
                               run_cases(config, "train", data), float(threshold))


def check_not_own_data(cv_dir: Path, data: Path, option: str = "--ensemble") -> None:
    """Refuse (exit 2) to score a fold ensemble on the dataset it was cross-validated on
    (the same path, manifest.csv or splits.csv by SHA-256): each fold model trained on the
    other folds' cases, so together they have seen every case."""
    from breastus_cli.data.manifest import SPLITS, file_sha256, manifest_hash, manifest_path
    from breastus_cli.engine.runs.cvdir import fold_runs

    plan, members = fold_runs(cv_dir)
    data = Path(data)
    if not manifest_path(data).is_file():
        raise InputError(f"--data {data} is not a prepared dataset (no manifest.csv)")
    records = [read_config(run).get("data") or {} for run in members]
    here = manifest_hash(data)
    splits = file_sha256(data / SPLITS) if (data / SPLITS).is_file() else None
    same = (bool(plan.get("data")) and data.resolve() == Path(plan["data"]).resolve()) or any(
        r.get("manifest_sha256") == here or (splits and r.get("splits_sha256") == splits)
        for r in records)
    if same:
        raise InputError(f"{option}: {data} is the dataset {cv_dir} was cross-validated on "
                         f"(manifest.csv sha256 {here[:12]}…): each fold model trained on the "
                         "other folds' cases, so the ensemble has seen every case; score it on "
                         "another dataset")


def ensemble_config(cv_dir: Path, data: Path) -> dict[str, Any]:
    """The configuration a fold ensemble is evaluated with: fold-0's settings (the folds share
    task, input size and roi), no fold, the evaluated dataset, and the folds it averages."""
    from breastus_cli.engine.apply.inference import ensemble_threshold
    from breastus_cli.engine.runs.cvdir import fold_runs

    check_not_own_data(cv_dir, data)
    plan, members = fold_runs(cv_dir)
    config = read_config(members[0])
    config["settings"]["fold"] = None
    config["data"] = {"path": str(Path(data).resolve())}  # reports read its images from here
    chosen = ensemble_threshold(members)
    config["threshold"] = chosen.value  # read_threshold(CV_DIR) falls back to it
    config["ensemble"] = {"cv": str(Path(cv_dir).resolve()), "task": plan.get("task"),
                          "folds": [str(run.resolve()) for run in members],
                          "fold_thresholds": [read_threshold(run).value for run in members],
                          "threshold": chosen.value, "threshold_source": chosen.source,
                          "data": str(Path(data).resolve())}
    return config


def _command(settings: EvalSettings) -> str:
    if sys.argv[1:] and Path(sys.argv[0]).name in ("breastus", "__main__.py"):
        return shlex.join(["breastus", *sys.argv[1:]])
    return f"breastus evaluate {settings.run_dir} --split {settings.split}"


def _evaluate_cls(settings: EvalSettings, config: dict[str, Any], start: float) -> EvalResult:
    import pandas as pd

    from breastus_cli.engine.apply.inference import open_run
    from breastus_cli.engine.runs.cvdir import is_cv_dir
    from breastus_cli.engine.stats.metrics import classification_metrics, threshold_for_sensitivity

    data = _data_dir(settings, config)
    frame = _cases(data, settings.split, config)
    frame = frame[frame["label"].isin(["benign", "malignant"])].reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"no case in split '{settings.split}' of {data}")
    loaded = open_run(settings.run_dir, "cls", config=config, tta=settings.tta)
    other = _is_other(settings, config, data)  # another dataset: its own folder, no threshold.json
    out_dir = settings.out_dir(other=other)
    out_dir.mkdir(parents=True, exist_ok=True)
    roi = config.get("roi", {}).get("source", "none") != "none"
    source = "seg" if roi and settings.seg_run is not None else "gt"
    from breastus_cli.engine.apply import fusion

    fused = None if settings.fusion != "none" else fusion.read(Path(settings.run_dir))
    if settings.seg_run is not None and not roi and settings.fusion == "none" and fused is None:
        raise UsageError("--seg-run is for lesion-centred classifiers (trained with --roi mask) "
                         "and fused ones (--fusion descriptors)")
    if settings.seg_run is not None and is_cv_dir(settings.seg_run):
        check_not_own_data(settings.seg_run, data, "--seg-run")  # a segmenter fold ensemble
    elif settings.seg_run is not None and settings.split != "all":
        check_same_split(settings.seg_run, read_config(settings.seg_run), data)
    images, found = _cls_images(frame, config, settings, out_dir, settings.split, source)
    p = _p_malignant(loaded, images, settings.batch_size)
    if not np.isfinite(p).all():
        raise WorkError(f"{settings.run_dir}: the model outputs non-finite probabilities "
                        f"for {int((~np.isfinite(p)).sum())} case(s); the training diverged")
    y = (frame["label"] == "malignant").to_numpy().astype(int)

    extra: dict[str, Any] = {}
    if roi:
        # ground-truth crops need the answer (the lesion mask) at test time: an oracle
        crops_from = ("segmentation run " + str(settings.seg_run) if source == "seg"
                      else "ground-truth masks")
        extra["roi_source"] = crops_from if source == "seg" else ORACLE_ROI
        extra["roi"] = {"crops_from": crops_from, "oracle": source == "gt",
                        "lesion_found": int(sum(found or [])), "n": int(len(frame))}
        if source == "seg":  # the segmenter's mask post-processing (engine/apply/postprocess.py)
            from breastus_cli.engine.apply import postprocess

            extra["roi"]["mask_postprocess"] = postprocess.of(settings.seg_run).method
    val = p_val = None
    if settings.target_sensitivity is not None or settings.fusion != "none":
        val = _cases(data, "val", config)
        val = val[val["label"].isin(["benign", "malignant"])].reset_index(drop=True)
        val_images, _ = _cls_images(val, config, settings, out_dir, "val", source)
        p_val = _p_malignant(loaded, val_images, settings.batch_size)
    if settings.target_sensitivity is not None:
        y_val = (val["label"] == "malignant").to_numpy().astype(int)
        if y_val.sum() == 0:
            raise InputError("--target-sensitivity needs malignant cases in the validation split")
        threshold = threshold_for_sensitivity(y_val, p_val, settings.target_sensitivity)
        source_text = ("chosen on validation cases for target sensitivity "
                       f"{settings.target_sensitivity:g}")
        extra["validation_sensitivity"] = float(((p_val >= threshold) & (y_val == 1)).sum()
                                                / y_val.sum())
        extra["validation_n"] = int(len(y_val))
        # predict uses this threshold for the run from now on (its label column); one chosen
        # on test-time-augmented scores, or on another dataset's validation cases, belongs to
        # that evaluation only (metrics.json)
        if settings.tta == "none" and not other:
            write_json(Path(settings.run_dir) / THRESHOLD, {
                "threshold": threshold, "source": source_text,
                "target_sensitivity": settings.target_sensitivity, "chosen_on": "validation",
                "validation_sensitivity": extra["validation_sensitivity"],
                "validation_n": extra["validation_n"], "data": str(data),
                "split_sha256": split_fingerprint(data,
                                                  config["settings"].get("fold") is not None)})
    elif settings.threshold is not None:
        threshold = float(settings.threshold)
        source_text = f"given with --threshold {threshold:g}"
    else:  # the one rule: the run's threshold.json (chosen on validation), else 0.5
        chosen = loaded.decision  # a fold ensemble's: the median of its folds' thresholds
        threshold, source_text = chosen.value, chosen.source
        # chosen on the validation cases of the run's own dataset: optimistic on a split of it
        # that holds them; another dataset's cases took no part (--target-sensitivity with
        # --split val/all is refused in EvalSettings)
        if settings.split in ("val", "all") and not other \
                and source_text.startswith("chosen on validation"):
            extra["threshold_note"] = (f"the threshold was chosen on the validation cases, "
                                       f"which split '{settings.split}' reports on: its "
                                       "sensitivity and specificity are optimistic")

    metrics = classification_metrics(y, p, threshold, n_bootstrap=settings.n_bootstrap,
                                     seed=settings.seed)
    p_gt = None
    if roi and source == "seg":
        # the cost of imperfect segmentation: the same classifier on ground-truth crops
        gt_images, _ = _cls_images(frame, config, settings, out_dir, settings.split, "gt")
        p_gt = _p_malignant(loaded, gt_images, settings.batch_size)
        extra["ground_truth_roi"] = {
            k: v for k, v in classification_metrics(y, p_gt, threshold,
                                                     n_bootstrap=settings.n_bootstrap,
                                                     seed=settings.seed).items()
            if k in ("auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "ci")}
    fusion_columns: dict[str, np.ndarray] = {}
    partner = (Path(settings.fuse_with) if settings.fuse_with is not None else
               fusion.partner_dir(Path(settings.run_dir), fused)
               if fused is not None and fused.partner is not None and settings.seg_run is not None
               else None)
    p_partner: dict[str, np.ndarray] = {}
    partner_threshold = 0.5
    if partner is not None:
        wanted = {settings.split: frame, **({"val": val} if settings.fusion != "none" else {})}
        p_partner, partner_threshold = _partner_scores(partner, wanted, settings, out_dir, data,
                                                       config)
    if settings.fusion != "none":
        # fitted on this run's training (descriptors) and validation (combination) cases
        fused = fusion.fit_for_run(Path(settings.run_dir), config, data, Path(settings.seg_run),
                                   val, p_val, settings.target_sensitivity, settings.batch_size,
                                   partner, p_partner.get("val"))
    if fused is not None and settings.seg_run is not None:
        extra["fusion"], fusion_columns = fusion.score_run(
            fused, frame, p, threshold, Path(settings.seg_run), out_dir, settings.batch_size,
            settings.n_bootstrap, settings.seed, p_partner.get(settings.split), partner_threshold)
    per_dataset = by_dataset(frame, lambda m: {
        k: v for k, v in classification_metrics(y[m], p[m], threshold,
                                                n_bootstrap=settings.n_bootstrap,
                                                seed=settings.seed).items()
        if k in ("n", "n_malignant", "auc", "sensitivity", "specificity", "accuracy",
                 "balanced_accuracy", "ci")})
    if per_dataset:  # a combined dataset: each hospital's own numbers beside the pooled ones
        extra["by_dataset"] = per_dataset
    metrics.update({"split": settings.split, "threshold_source": source_text,
                    "threshold_rule": THRESHOLD_RULE,
                    "run_dir": str(settings.run_dir), "model": config["settings"].get("model"),
                    "fold": config["settings"].get("fold"), **extra})
    predictions = pd.DataFrame({
        "case_id": frame["case_id"], "image": frame["image"], "y_true": y,
        "label": frame["label"], "p_malignant": p,  # rounded where made (as_score)
        "y_pred": (p >= threshold).astype(int),
    })
    if "dataset" in frame.columns:
        predictions.insert(1, "dataset", frame["dataset"])
    if found is not None:
        predictions["lesion_found"] = np.asarray(found, dtype=int)
    if p_gt is not None:  # pooled by cv --seg-cv beside the predicted-crop numbers
        predictions["p_malignant_gt_roi"] = p_gt
        predictions["y_pred_gt_roi"] = (p_gt >= threshold).astype(int)
    for name, values in fusion_columns.items():  # the fused classifier's, beside the CNN's
        predictions[name] = values
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    write_json(out_dir / "metrics.json", metrics)
    command = _command(settings)
    return EvalResult(run_dir=Path(settings.run_dir), out_dir=out_dir, task="cls",
                      split=settings.split, metrics=metrics, frame=predictions, config=config,
                      command=command, threshold_source=source_text,
                      seconds=round(time.perf_counter() - start, 2), extra=extra, data=data,
                      other=other or settings.ensemble)


def _truth_mask(case: Any, include_other: bool) -> np.ndarray:
    """A case's ground-truth lesion mask: its mask, united with its 'other' masks when the
    run's settings say so (``include_other_masks``)."""
    from breastus_cli.data.imaging import read_mask

    paths = [case["mask_path"]]
    if include_other and case.get("other_mask_path"):
        paths.append(case["other_mask_path"])
    return read_mask(paths)


def _seg_postprocess(settings: EvalSettings, config: dict[str, Any], loaded: Any,
                     include_other: bool) -> Any:
    """The mask post-processing a segmentation evaluation applies: ``--postprocess`` when
    given, else the run's (a fold ensemble's majority). A run without RUN/postprocess.json
    chooses it now on its own validation cases (:func:`postprocess.choose`, at the run's own
    threshold) and writes the file; when those cases cannot be read, masks stay as they are."""
    from breastus_cli.engine.apply import postprocess
    from breastus_cli.engine.apply.inference import to_original_size

    if settings.postprocess is not None:
        return postprocess.Postprocess(settings.postprocess, "given with --postprocess")
    run_dir = Path(settings.run_dir)
    if settings.ensemble or (run_dir / postprocess.POSTPROCESS).is_file():
        return loaded.postprocess
    try:
        own = Path(config["data"]["path"])
        check_same_split(run_dir, config, own)
        frame = run_cases(config, "val", own)
    except (InputError, KeyError, TypeError, OSError) as exc:
        reason = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        return postprocess.Postprocess("none", f"none (not chosen: the run's validation cases "
                                               f"cannot be read: {reason})")
    frame = frame[frame["mask_path"] != ""].reset_index(drop=True)
    if len(frame) == 0:
        return postprocess.Postprocess("none", "none (not chosen: no validation case has a mask)")
    threshold = read_threshold(run_dir, config).value
    probabilities = loaded.run_files(list(frame["image_path"]), settings.batch_size)
    truths = [_truth_mask(case, include_other) for _, case in frame.iterrows()]
    preds = [to_original_size(prob, truth.shape, threshold)[1]
             for prob, truth in zip(probabilities, truths)]
    postprocess.write(run_dir, postprocess.choose(truths, preds))
    return postprocess.read(run_dir)


def _evaluate_seg(settings: EvalSettings, config: dict[str, Any], start: float) -> EvalResult:
    """Per-case IoU, Dice, precision, recall, HD95 and areas, scored at each image's original
    size (the predicted probability map is resized back before thresholding)."""
    import pandas as pd

    from breastus_cli.data.imaging import read_luminance, save_png
    from breastus_cli.engine.stats.descriptors import agreement as descriptor_agreement
    from breastus_cli.engine.stats.descriptors import describe
    from breastus_cli.engine.apply.inference import open_run, to_original_size
    from breastus_cli.engine.stats.seg_metrics import case_metrics, dataset_metrics

    data = _data_dir(settings, config)
    frame = _cases(data, settings.split, config)
    frame = frame[frame["mask_path"] != ""].reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"no case with a lesion mask in split '{settings.split}' of {data}")
    if settings.threshold is not None:
        threshold = float(settings.threshold)
        threshold_source = f"given with --threshold {threshold:g}"
    else:
        chosen = read_threshold(settings.run_dir, config)
        threshold, threshold_source = chosen.value, chosen.source
    include_other = bool(config["settings"].get("include_other_masks"))
    loaded = open_run(settings.run_dir, "seg", config=config, tta=settings.tta)
    chosen = _seg_postprocess(settings, config, loaded, include_other)
    probabilities = loaded.run_files(list(frame["image_path"]), settings.batch_size)
    if not np.isfinite(probabilities).all():
        raise WorkError(f"{settings.run_dir}: the model outputs non-finite values; the training "
                        "diverged")
    other = _is_other(settings, config, data)
    out_dir = settings.out_dir(other=other)
    mask_dir = out_dir / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows, described = [], []
    for i, case in frame.iterrows():
        truth = _truth_mask(case, include_other)
        height, width = truth.shape
        pred = to_original_size(probabilities[i], truth.shape, threshold, chosen.method)[1]
        save_png(pred, mask_dir / f"{case['case_id']}.png")
        pixel = case.get("pixel_size_mm")
        pixel = float(pixel) if pixel is not None and np.isfinite(float(pixel)) else None
        scores = case_metrics(truth, pred, pixel)
        image = read_luminance(case["image_path"])
        image = image if image.shape == truth.shape else None  # intensity descriptors: NaN
        described.append({"case_id": case["case_id"], "label": case["label"],
                          **{f"gt_{k}": v for k, v in describe(truth, image, pixel).items()},
                          **{f"pred_{k}": v for k, v in describe(pred, image, pixel).items()}})
        rows.append({"case_id": case["case_id"], "label": case["label"],
                     "image": case["image"], "mask": case["mask"],
                     "pred_mask": f"masks/{case['case_id']}.png", "pixel_size_mm": pixel,
                     "width": width, "height": height, **scores})
    per_case = pd.DataFrame(rows)
    metrics = dataset_metrics(rows, n_bootstrap=settings.n_bootstrap, seed=settings.seed)
    per_dataset = by_dataset(frame, lambda m: dataset_metrics(
        [row for row, keep in zip(rows, m) if keep], n_bootstrap=settings.n_bootstrap,
        seed=settings.seed))
    if per_dataset:
        metrics["by_dataset"] = per_dataset
        per_case.insert(1, "dataset", frame["dataset"])
    metrics.update({"split": settings.split, "threshold": threshold,
                    "threshold_source": threshold_source, "threshold_rule": THRESHOLD_RULE,
                    "postprocess": chosen.method, "postprocess_source": chosen.source,
                    "run_dir": str(settings.run_dir),
                    "backbone": config["settings"].get("backbone"),
                    "fold": config["settings"].get("fold"),
                    "scored_at": "original image size"})
    descriptors = pd.DataFrame(described)
    metrics["descriptors"] = descriptor_agreement(descriptors)
    with atomic_path(out_dir / "per_case.csv") as tmp:
        per_case.to_csv(tmp, index=False)
    with atomic_path(out_dir / "descriptors.csv") as tmp:
        descriptors.to_csv(tmp, index=False)
    write_json(out_dir / "metrics.json", metrics)
    return EvalResult(run_dir=Path(settings.run_dir), out_dir=out_dir, task="seg",
                      split=settings.split, metrics=metrics, frame=per_case, config=config,
                      command=_command(settings), threshold_source=threshold_source,
                      seconds=round(time.perf_counter() - start, 2), data=data,
                      other=other or settings.ensemble)
