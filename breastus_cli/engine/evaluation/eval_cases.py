"""Which cases an evaluation scores and the checks that they are fair: the runs a path names,
the dataset and split, the cases of a combined dataset by hospital, near-duplicates of
training cases, a fold ensemble never scored on its own dataset, a second classifier
(``--fuse-with``) that never trained on the scored cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from breastus_cli.data import duplicates
from breastus_cli.data.combine import dataset_column, dataset_record
from breastus_cli.data.manifest import SPLITS, file_sha256, manifest_hash, manifest_path
from breastus_cli.engine.apply.loaded_run import ensemble_threshold
from breastus_cli.engine.evaluation.eval_settings import EvalSettings
from breastus_cli.engine.runs.cvdir import fold_runs, is_cv_dir
from breastus_cli.engine.runs.rundir import (
    check_same_split, read_config, read_threshold, run_cases, same_dataset,
)
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError


def find_runs(paths: list[Path], ensemble: bool = False) -> list[Path]:
    """Expand each path: a run directory stays; a folder of runs (a CV parent) gives its runs.
    ``ensemble``: each path is a cross-validation folder, kept whole (its fold ensemble)."""
    runs: list[Path] = []
    for path in paths:
        path = Path(path)
        if ensemble:
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


def data_dir(settings: EvalSettings, config: dict[str, Any] | RunConfig) -> Path:
    """The dataset scored: ``--data``, else the one the run trained on."""
    data = settings.data or RunConfig.of(config).data_path
    if data is None:
        raise InputError(f"{settings.run_dir}/config.json records no dataset; give it with --data")
    if not Path(data).is_dir():
        raise InputError(f"dataset {data} recorded in {settings.run_dir}/config.json not found; "
                         "give it with --data")
    if settings.split != "all":  # --split all scores every case: no split question
        check_same_split(settings.run_dir, config, data)
    return Path(data)


def is_other_dataset(settings: EvalSettings, config: dict[str, Any] | RunConfig,
                     data: Path) -> bool:
    """Is ``data`` (``--data``) another dataset than the one the run trained on?"""
    return settings.data is not None and not settings.ensemble \
        and not same_dataset(Path(data), RunConfig.of(config).data)


def by_dataset(frame: Any, score: Any) -> dict[str, Any]:
    """``{dataset: score(mask)}`` for each dataset of a combined dataset's cases (column
    ``dataset``: ``breastus combine``), {} when the cases come from one dataset."""
    column = dataset_column(frame)
    if column is None:
        return {}
    values = frame[column].astype(str).to_numpy()
    return {name: score(values == name) for name in sorted(set(values))}


def split_cases(data: Path, split: str, config: dict[str, Any] | RunConfig) -> Any:
    return run_cases(config, split, data)


def check_partner_unseen(partner: Path, config: dict[str, Any] | RunConfig, data: Path,
                         frames: list[Any],
                         run_config: dict[str, Any] | RunConfig | None = None) -> None:
    """Refuse (exit 2) a second classifier (``--fuse-with``) that trained on a case, or a
    patient, of ``frames`` (the cases the combiner is fitted or scored on) that the run itself
    did not train on (``run_config``): its score there would be a memory, not a prediction.
    Another dataset than the one it trained on passes."""
    if not same_dataset(Path(data), RunConfig.of(config).data):
        return
    check_same_split(partner, config, data)  # re-split since: its training cases are unknown
    seen = run_cases(config, "train", data)
    scored = pd.concat(frames, ignore_index=True)
    own = (run_cases(run_config, "train", data)  # e.g. --split train: the run's own as well
           if run_config is not None and same_dataset(Path(data), RunConfig.of(run_config).data)
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



def twins_in_training(settings: EvalSettings,
                      config: dict[str, Any] | RunConfig) -> dict[str, Any] | None:
    """How many of the scored (test or val) cases have a near-duplicate image among the run's
    training cases (a split made before ``split`` kept twins together, or a manifest without
    ``dup_group``: then found from the images now); None for another dataset, whose
    training cases are elsewhere, and for ``--split train``/``all``."""
    data = Path(settings.data or RunConfig.of(config).data_path or "")
    if settings.split not in ("test", "val") or not data.is_dir() \
            or is_other_dataset(settings, config, data):
        return None
    found = (dataset_record(data) or {}).get("near_duplicates") or {}
    threshold = found.get("threshold") or duplicates.DEFAULT_THRESHOLD
    return duplicates.twins_in(run_cases(config, settings.split, data),
                               run_cases(config, "train", data), float(threshold))


def check_not_own_data(cv_dir: Path, data: Path, option: str = "--ensemble") -> None:
    """Refuse (exit 2) to score a fold ensemble on the dataset it was cross-validated on
    (the same path, manifest.csv or splits.csv by SHA-256): each fold model trained on the
    other folds' cases, so together they have seen every case."""
    plan, members = fold_runs(cv_dir)
    data = Path(data)
    if not manifest_path(data).is_file():
        raise InputError(f"--data {data} is not a prepared dataset (no manifest.csv)")
    records = [RunConfig.read(run).data for run in members]
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

