"""``breastus split``: case-level (patient-level where known), stratified, seeded splits.

* A patient (or, without patient ids, a case) never spans two splits or two folds; nor does a
  group of near-duplicate images (manifest column ``dup_group``, found by ``prepare``): cases
  that share a patient or a ``dup_group`` are split together.
* Each label is split on its own (stratification); per label the counts follow the ratios by
  largest-remainder rounding, so each split is within one group of its target.
* The same seed gives the same split on any machine (numpy's PCG64, sorted inputs).
* ``--folds K`` adds a ``fold`` column (0..K-1) from scikit-learn's StratifiedGroupKFold, or
  the source's published folds (BUS-BRA) when the manifest has them.
* ``--materialize`` writes the folder layout with the ``split-folders`` package.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from breastus_cli.atomic import atomic_path, uninterrupted, write_json
from breastus_cli.data.manifest import SPLITS, read_manifest
from breastus_cli.data.sources.base import LABELS
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import SPLIT_FORMAT, ensure_replaceable, marker_name

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitSettings:
    """Settings of ``breastus split``."""

    data: Path
    ratio: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 42
    folds: int | None = None
    materialize: bool = False
    published_folds: bool = True

    def validate(self) -> None:
        ratio = tuple(float(r) for r in self.ratio)
        if len(ratio) not in (2, 3):
            raise UsageError(f"--ratio takes 2 or 3 numbers (train val [test]), got {len(ratio)}")
        if any(not math.isfinite(r) or r < 0 or r > 1 for r in ratio):
            raise UsageError(f"--ratio values must lie in [0, 1], got {' '.join(map(str, ratio))}")
        if abs(sum(ratio) - 1.0) > 1e-6:
            raise UsageError(f"--ratio must sum to 1, got {sum(ratio):g}")
        if ratio[0] <= 0:
            raise UsageError("--ratio: the training share must be above 0")
        if ratio[1] <= 0:  # an empty val is no split to train on (0 test: no test split)
            raise UsageError(f"--ratio {' '.join(f'{r:g}' for r in ratio)}: the validation "
                             "share must be above 0 (training needs validation cases for its "
                             "metric and best checkpoint)")
        if self.folds is not None and self.folds < 2:
            raise UsageError(f"--folds must be at least 2, got {self.folds}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")


@dataclass
class SplitResult:
    """What ``split`` wrote; ``table[split][label]`` counts cases."""

    splits_csv: Path
    table: dict[str, dict[str, int]]
    fold_table: dict[int, dict[str, int]] = field(default_factory=dict)
    fold_source: str | None = None
    materialized: Path | None = None
    groups: str = "case"
    warnings: list[str] = field(default_factory=list)  # shares left empty (shown by the CLI)


def largest_remainder(total: int, ratio: Sequence[float]) -> list[int]:
    """Integer counts summing to ``total`` with each within 1 of ``total * r``.

    >>> largest_remainder(10, (0.8, 0.1, 0.1))
    [8, 1, 1]
    """
    targets = [total * r for r in ratio]
    counts = [math.floor(t) for t in targets]
    remainder = total - sum(counts)
    # Ties go to the later (smaller) splits, so val/test are not left empty on tiny classes.
    order = sorted(range(len(ratio)), key=lambda i: (-(targets[i] - counts[i]), -i))
    for i in order[:remainder]:
        counts[i] += 1
    return counts


def split_groups(frame) -> list[str]:
    """The group each case is split with: cases linked by a shared patient or a shared
    ``dup_group`` (near-duplicate images) form one group, named by its smallest patient id, so
    a manifest without ``dup_group`` (or without twins) splits exactly as by patient."""
    from breastus_cli.data.duplicates import components

    patients = [str(p) for p in frame["patient_id"]]
    if "dup_group" not in frame.columns:
        return patients
    links: list[tuple[str, str]] = []
    for group, part in frame.assign(_p=patients).groupby("dup_group", sort=False):
        members = sorted(set(part["_p"]))
        if str(group) and str(group) != "nan":
            links.extend((members[0], other) for other in members[1:])
    root = components(sorted(set(patients)), links)
    return [root[p] for p in patients]


def _group_labels(frame) -> dict[str, str]:  # patient -> label used for stratification
    labels: dict[str, str] = {}
    for patient, part in frame.groupby("patient_id", sort=True):
        counts = part["label"].value_counts()
        # The rarer (malignant) label wins ties: a patient with any doubt is stratified with it.
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] != "malignant", kv[0]))[0][0]
        labels[str(patient)] = str(best)
    return labels


def assign_splits(frame, ratio: Sequence[float], seed: int) -> dict[str, str]:
    """Map each patient to train/val/test, stratified by label, deterministic for ``seed``."""
    group_label = _group_labels(frame)
    assignment: dict[str, str] = {}
    for index, label in enumerate(sorted(set(group_label.values()))):
        groups = sorted(g for g, lab in group_label.items() if lab == label)
        # One generator per label, so adding a case of one label leaves the others' split alone.
        rng = np.random.default_rng([seed, index])
        order = [groups[i] for i in rng.permutation(len(groups))]
        counts = largest_remainder(len(order), ratio)
        start = 0
        for name, count in zip(SPLIT_NAMES, counts):
            for group in order[start:start + count]:
                assignment[group] = name
            start += count
    return assignment


def assign_folds(frame, k: int, seed: int) -> dict[str, int]:
    """Map each case to a fold 0..k-1 (StratifiedGroupKFold over patients)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_label_groups = frame.groupby("label")["patient_id"].nunique()
    if int(per_label_groups.min()) < k:
        smallest = per_label_groups.idxmin()
        raise UsageError(
            f"--folds {k} needs at least {k} patients per label; '{smallest}' has "
            f"{int(per_label_groups.min())}"
        )
    ordered = frame.sort_values("case_id").reset_index(drop=True)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds: dict[str, int] = {}
    for fold, (_, test_idx) in enumerate(
        splitter.split(ordered, ordered["label"], groups=ordered["patient_id"])
    ):
        for case_id in ordered.loc[test_idx, "case_id"]:
            folds[str(case_id)] = fold
    return folds


def _published_folds(frame, k: int) -> dict[str, int] | None:
    column = f"published_fold_{k}"
    if column not in frame.columns:
        return None
    values = frame[column].replace("", np.nan).dropna()
    if len(values) != len(frame):
        return None
    numbers = values.astype(float).astype(int)
    if set(numbers) == set(range(1, k + 1)):
        numbers = numbers - 1  # published 1-based: store 0-based like every other fold here
    if set(numbers) != set(range(k)):
        return None
    return dict(zip(frame["case_id"].astype(str), numbers.astype(int)))


def label_counts(labels) -> str:
    """'benign 12, malignant 3' (then any other label) for a Series of labels."""
    counts = labels.value_counts()
    names = list(LABELS) + sorted(set(counts.index) - set(LABELS))
    return ", ".join(f"{name} {int(counts.get(name, 0))}" for name in names)


def _check_classes(frame, data: Path) -> None:
    """Refuse a dataset with one class: train-cls, cv and evaluate need benign and malignant."""
    present = [label for label in LABELS if (frame["label"] == label).any()]
    if len(present) < len(LABELS):
        raise InputError(f"{data} holds one class only ({label_counts(frame['label'])}): a split "
                         "for benign/malignant training needs cases of both",
                         hint="prepare a source with both classes")


_USE = {"val": "training needs it (validation metric, best checkpoint)",
        "test": "evaluate has nothing to score"}


def _empty_shares(frame, assignment: dict[str, str], ratio: Sequence[float]) -> list[str]:
    """Warnings for a val or test share (when asked for) left with no case, or with no case
    of one class: the split is written, but training (val) or evaluation (test) cannot use it."""
    splits = frame["patient_id"].astype(str).map(assignment)
    shown = " ".join(f"{r:g}" for r in ratio)
    warnings = []
    for name, share in zip(SPLIT_NAMES[1:], tuple(ratio)[1:]):
        if share <= 0:
            continue
        part = frame[splits == name]
        if part.empty:
            warnings.append(f"{name} holds no case ({label_counts(frame['label'])} cases in all, "
                            f"--ratio {shown}): {_USE[name]}; add cases or raise the {name} share")
            continue
        for label in LABELS:
            if not (part["label"] == label).any():
                total = int((frame["label"] == label).sum())
                warnings.append(f"{name} holds no {label} case ({label}: {total} cases in all, "
                                f"--ratio {shown}): its AUC, sensitivity or specificity cannot "
                                f"be measured; add {label} cases or raise the {name} share")
    return warnings


def split_dataset(settings: SplitSettings) -> SplitResult:
    """Write ``DATA/splits.csv`` (and with ``materialize`` the split folders).

    >>> split_dataset(SplitSettings(Path("data/breast"), seed=42))  # doctest: +SKIP
    """
    import pandas as pd

    settings.validate()
    data = Path(settings.data)
    frame = read_manifest(data)
    if settings.materialize:  # refuse before splits.csv changes
        ensure_replaceable(data / "split", "split", legacy=_legacy_split)
    patients = frame["patient_id"].nunique()
    groups = "patient" if patients < len(frame) else "case"
    # patients and near-duplicate groups together: the unit each split and fold keeps whole
    keyed = frame.assign(patient_id=split_groups(frame))
    if keyed["patient_id"].nunique() < patients:
        groups += " + near-duplicate"

    _check_classes(frame, data)
    assignment = assign_splits(keyed, settings.ratio, settings.seed)
    warnings = _empty_shares(keyed, assignment, settings.ratio)
    out = pd.DataFrame({
        "case_id": frame["case_id"],
        "patient_id": frame["patient_id"],
        "label": frame["label"],
        "split": [assignment[str(p)] for p in keyed["patient_id"]],
    })
    fold_table: dict[int, dict[str, int]] = {}
    fold_source = None
    if settings.folds:
        folds = _published_folds(frame, settings.folds) if settings.published_folds else None
        fold_source = "published" if folds is not None else "stratified-group"
        if folds is None:
            folds = assign_folds(keyed, settings.folds, settings.seed)
        elif keyed["patient_id"].nunique() < patients:  # twins across the source's patients
            spanning = keyed.assign(_fold=[folds[str(c)] for c in keyed["case_id"]]) \
                .groupby("patient_id")["_fold"].nunique().gt(1).sum()
            if spanning:
                warnings.append(f"{spanning} group(s) of near-duplicate images span the "
                                "source's published folds; --no-published-folds keeps each "
                                "in one fold")
        out["fold"] = [folds[str(c)] for c in out["case_id"]]
        for fold, part in out.groupby("fold"):
            fold_table[int(fold)] = part["label"].value_counts().sort_index().to_dict()
    out = out.sort_values("case_id").reset_index(drop=True)
    splits_csv = data / SPLITS
    with atomic_path(splits_csv) as tmp:
        out.to_csv(tmp, index=False)

    labels = sorted(out["label"].unique())
    table = {
        name: {lab: int(((out["split"] == name) & (out["label"] == lab)).sum()) for lab in labels}
        for name in SPLIT_NAMES
        if name in set(out["split"]) or name != "test"
    }
    materialized = _materialize(data, frame, out) if settings.materialize else None
    return SplitResult(splits_csv, table, fold_table, fold_source, materialized, groups,
                       warnings)


def read_splits(data_dir: str | Path):  # -> pandas.DataFrame
    """Read ``DATA/splits.csv``; missing -> :class:`InputError` telling how to make it."""
    import pandas as pd

    path = Path(data_dir) / SPLITS
    if not path.is_file():
        raise InputError(f"{path} not found: run 'breastus split {data_dir}' first")
    return pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "label": str, "split": str})


def _legacy_split(folder: Path) -> bool:
    """A DATA/split/ written before split.json existed: nothing but cls/ and seg/ folders."""
    children = list(folder.iterdir())
    return bool(children) and all(c.name in ("cls", "seg") and c.is_dir() and not c.is_symlink()
                                  for c in children)


def _materialize(data: Path, manifest, splits) -> Path:
    """Write DATA/split/cls/{split}/{label}/ and DATA/split/seg/{split}/{images,masks}/.

    ``split-folders`` copies the files; breastus decides which case goes where (its own
    case-level, stratified assignment), so images and masks always land together.
    """
    from splitfolders.split import copy_files, copy_sibling_files

    target = data / "split"
    # Replaced only when split wrote it (split.json; older ones hold just cls/ and seg/).
    ensure_replaceable(target, "split", legacy=_legacy_split)
    tmp = Path(tempfile.mkdtemp(prefix=".split.tmp-", dir=data))
    try:
        merged = manifest.merge(splits[["case_id", "split"]], on="case_id")
        for label, part in merged.groupby("label"):
            files_type = [
                ([str(data / p) for p in part.loc[part["split"] == name, "image"]], name)
                for name in SPLIT_NAMES
            ]
            copy_files(files_type, Path(str(label)), tmp / "cls", None, False)
        with_mask = merged[merged["mask"].astype(str) != ""]
        pairs = [
            ([(str(data / r.image), str(data / r.mask))
              for r in with_mask[with_mask["split"] == name].itertuples()], name)
            for name in SPLIT_NAMES
        ]
        copy_sibling_files(pairs, ["images", "masks"], tmp / "seg", None, False)
        write_json(tmp / marker_name("split"), {"format": SPLIT_FORMAT, "splits": SPLITS})
        with uninterrupted():  # a signal never leaves the old folders gone and no new ones
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


ROLES = ("train", "val", "test", "all")


def select_cases(data_dir: str | Path, role: str, *, fold: int | None = None,
                 seed: int = 42, val_fraction: float = 0.1):  # -> pandas.DataFrame
    """Manifest rows of one split (``train``/``val``/``test``/``all``), with absolute paths.

    With ``fold=K`` (datasets split with ``--folds``) the test cases are fold K; validation is
    carved from the other folds (stratified, patient-level, ``val_fraction``, seeded), and the
    rest is training. Columns ``image_path`` and ``mask_path`` are absolute ("" without mask).
    """
    if role not in ROLES:
        raise UsageError(f"--split must be one of {', '.join(ROLES)} (got '{role}')")
    data_dir = Path(data_dir)
    frame = read_manifest(data_dir)
    if role != "all" or fold is not None:
        splits = read_splits(data_dir)
        frame = frame.merge(splits[[c for c in ("case_id", "split", "fold") if c in splits]],
                            on="case_id", how="inner")
    if fold is not None:
        if "fold" not in frame.columns:
            raise InputError(f"{data_dir / SPLITS} has no folds: run 'breastus split "
                             f"{data_dir} --folds K' first")
        folds = sorted(int(f) for f in frame["fold"].unique())
        if fold not in folds:
            raise UsageError(f"--fold must be one of {', '.join(map(str, folds))} (got {fold})")
        if role == "test":
            frame = frame[frame["fold"] == fold]
        elif role in ("train", "val"):
            rest = frame[frame["fold"] != fold]
            keyed = rest.assign(patient_id=split_groups(rest))  # twins stay on one side
            carve = assign_splits(keyed, (1.0 - val_fraction, val_fraction, 0.0), seed)
            wanted = {str(p) for p, s in carve.items() if s == role}
            frame = rest[keyed["patient_id"].astype(str).isin(wanted).to_numpy()]
    elif role != "all":
        frame = frame[frame["split"] == role]
    frame = frame.sort_values("case_id").reset_index(drop=True)
    frame["image_path"] = [str(data_dir / p) for p in frame["image"]]
    frame["mask_path"] = [str(data_dir / p) if isinstance(p, str) and p else ""
                          for p in frame["mask"]]
    others = frame["other_mask"] if "other_mask" in frame.columns else [""] * len(frame)
    frame["other_mask_path"] = [str(data_dir / p) if isinstance(p, str) and p else ""
                                for p in others]
    return frame
