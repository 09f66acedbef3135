"""``breastus compare RUN_A RUN_B``: two classifiers' evaluations of the same cases, side by side.

Each side is an evaluation's predictions: a run directory (its ``eval-<split>/``), an evaluation
folder itself, or a cross-validation folder (its pooled out-of-fold predictions). The cases must
be the same with the same labels; the comparison is the paired bootstrap difference of AUC
(:func:`~breastus_cli.engine.stats.paired.paired_auc`), written to OUT/compare.json and
OUT/paired_predictions.csv (the plot and report are the CLI's, from :mod:`reports.comparison`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastus_cli import __version__
from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.engine.runs.cvdir import is_cv_dir
from breastus_cli.engine.stats.paired import PairedAUC, paired_auc
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import COMPARE_FORMAT, ensure_own_or_empty

#: the marker and record of a comparison folder
RECORD = "compare.json"
PAIRED = "paired_predictions.csv"
#: the columns compare reads from each side's predictions
COLUMNS = ("case_id", "y_true", "p_malignant")


@dataclass
class CompareSettings:
    """Settings of ``breastus compare``."""

    run_a: Path
    run_b: Path
    out: Path
    split: str = "test"
    n_bootstrap: int = 2000
    seed: int = 0

    def validate(self) -> None:
        if self.n_bootstrap < 0:
            raise UsageError(f"--bootstrap must be 0 or more (got {self.n_bootstrap})")
        if not self.split or "/" in self.split:
            raise UsageError(f"--split names an evaluation (test, val, ...; got '{self.split}')")


@dataclass
class CompareResult:
    """What compare found and wrote."""

    out: Path
    name_a: str
    name_b: str
    source_a: Path
    source_b: Path
    paired: PairedAUC
    frame: Any  # case_id, y_true, p_a, p_b


def predictions_file(source: Path, split: str = "test") -> Path:
    """The predictions an evaluation wrote for ``source``: an evaluation folder's
    predictions.csv, a run's ``eval-<split>/predictions.csv``, a cross-validation's
    oof_predictions.csv; else a one-line InputError saying what to run."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source} is not a folder (a run, an evaluation or a cross-validation)")
    if is_cv_dir(source):
        candidates = [source / "oof_predictions.csv"]
        hint = f"finish the cross-validation ('breastus cv ... --out {source}')"
    else:
        candidates = [source / "predictions.csv", source / f"eval-{split}" / "predictions.csv"]
        hint = f"run 'breastus evaluate {source} --split {split}' first"
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise InputError(f"{source} has no classification predictions "
                         f"({' or '.join(str(c) for c in candidates)})", hint=hint)
    return found


def _read(path: Path) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype={"case_id": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable predictions.csv ({exc})") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}: not a classification "
                         "evaluation's predictions")
    twice = frame["case_id"][frame["case_id"].duplicated()]
    if len(twice):
        raise InputError(f"{path} lists case {twice.iloc[0]} twice (a comparison pairs each "
                         "case once)")
    return frame[list(COLUMNS)]


def paired_frame(file_a: Path, file_b: Path) -> Any:
    """One row per case scored by both, with both scores; InputError unless both scored the
    same cases with the same labels."""
    a, b = _read(file_a), _read(file_b)
    only_a = sorted(set(a["case_id"]) - set(b["case_id"]))
    only_b = sorted(set(b["case_id"]) - set(a["case_id"]))
    if only_a or only_b:
        first = (only_a or only_b)[0]
        raise InputError(f"the two evaluations scored different cases ({len(only_a)} only in "
                         f"{file_a}, {len(only_b)} only in {file_b}; e.g. {first}): a paired "
                         "comparison needs the same cases", hint="evaluate both on the same "
                         "data and split")
    both = a.merge(b, on="case_id", suffixes=("_a", "_b"))
    differ = both["y_true_a"] != both["y_true_b"]
    if differ.any():
        raise InputError(f"case {both['case_id'][differ].iloc[0]} has label "
                         f"{both['y_true_a'][differ].iloc[0]} in {file_a} and "
                         f"{both['y_true_b'][differ].iloc[0]} in {file_b}: not the same cases")
    return both.rename(columns={"y_true_a": "y_true", "p_malignant_a": "p_a",
                                "p_malignant_b": "p_b"})[["case_id", "y_true", "p_a", "p_b"]]


def _name(source: Path) -> str:
    source = Path(source).resolve()
    return source.parent.name if source.name.startswith("eval-") else source.name


def compare(settings: CompareSettings) -> CompareResult:
    """Pair the two evaluations' cases, compute the paired AUC difference (B minus A) and write
    OUT/compare.json and OUT/paired_predictions.csv; OUT must be new, empty or an earlier
    comparison's."""
    settings.validate()
    file_a = predictions_file(settings.run_a, settings.split)
    file_b = predictions_file(settings.run_b, settings.split)
    if file_a.resolve() == file_b.resolve():
        raise UsageError(f"RUN_A and RUN_B are the same evaluation ({file_a})")
    frame = paired_frame(file_a, file_b)
    paired = paired_auc(frame["y_true"].to_numpy(), frame["p_a"].to_numpy(),
                        frame["p_b"].to_numpy(), settings.n_bootstrap, seed=settings.seed)
    out = Path(settings.out)
    ensure_own_or_empty(out, "compare")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PAIRED) as tmp:
        frame.to_csv(tmp, index=False)
    name_a, name_b = _name(settings.run_a), _name(settings.run_b)
    write_json(out / RECORD, {
        "format": COMPARE_FORMAT, "breastus_version": __version__,
        "a": {"name": name_a, "predictions": str(file_a.resolve())},
        "b": {"name": name_b, "predictions": str(file_b.resolve())},
        "split": settings.split, "seed": settings.seed, "auc": paired.to_dict(),
    })
    return CompareResult(out, name_a, name_b, file_a, file_b, paired, frame)
