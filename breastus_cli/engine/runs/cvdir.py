"""What a cross-validation folder is on disk: its plan (cv.json) and its fold-K/ run directories.

    CV_DIR/cv.json        the plan: task, data, folds, settings (written by ``breastus cv``)
    CV_DIR/fold-K/        fold K's run directory (config.json, model.keras, eval-test/, ...)

Read here by every command that takes a cross-validation folder (cv resuming, evaluate
--ensemble, predict and evaluate with a fold ensemble, post-processing's fold majority).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from breastus_cli.engine.runs.provenance import fusion_threshold_current, masks_from_run
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.errors import InputError
from breastus_cli.runfiles import read_cv, read_metrics

PLAN = "cv.json"
#: a fold's evaluation on its held-out fold, in its run directory
FOLD_METRICS = "eval-test/metrics.json"


def read_plan(out: Path, option: str = "", hint: str | None = None) -> dict[str, Any]:
    """``out/cv.json``; exit 2 naming ``option`` when ``out`` is no cross-validation folder."""
    if not (Path(out) / PLAN).is_file():
        raise InputError(f"{option}{out} is not a cross-validation folder (no {PLAN})", hint=hint)
    return read_cv(Path(out) / PLAN)


def fold_dir(out: Path, k: int) -> Path:
    """Fold ``k``'s run directory in the cross-validation folder ``out``."""
    return Path(out) / f"fold-{k}"


def fold_metrics(out: Path, k: int) -> dict[str, Any]:
    """Fold ``k``'s evaluation on its held-out fold (``fold-K/eval-test/metrics.json``),
    checked (a bad value is one line naming the file, exit 2)."""
    return read_metrics(fold_dir(out, k) / FOLD_METRICS)


def is_cv_dir(path: str | Path) -> bool:
    """A ``breastus cv`` output folder (cv.json, fold-K/ runs), not a run directory."""
    path = Path(path)
    return (path / PLAN).is_file() and not (path / "config.json").is_file()


def fold_done(out: Path, k: int, fusion: str = "none", partner: bool = False,
              seg_cv: str | None = None) -> bool:
    """Fold ``k`` trained and evaluated (with its fused classifier when ``fusion`` asks, and
    that with a second classifier's score when ``partner``; with the masks of fold ``k`` of the
    segmentation CV ``seg_cv`` when given)."""
    run = fold_dir(out, k)
    config = run / "config.json"
    metrics = run / FOLD_METRICS
    if not (config.is_file() and RunConfig.read(run).finished and metrics.is_file()):
        return False
    m = fold_metrics(out, k)
    if seg_cv is not None:
        wanted = fold_dir(Path(seg_cv), k)
        for block, sentence in ((m.get("roi"), "crops_from"), (m.get("fusion"), "masks_from")):
            if not block:
                continue
            same = masks_from_run(block, metrics.parent, wanted, block.get(sentence))
            if same is not None:
                if not same:
                    return False  # scored with another segmenter's masks: score it again
                break
    if fusion == "none":
        return True
    block = m.get("fusion")
    # a fusion whose threshold was chosen by an older rule is fitted and scored again
    return (block is not None and (not partner or "partner" in block)
            and fusion_threshold_current(block.get("fitted_on")))


def fold_runs(cv_dir: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """A cross-validation's plan (cv.json) and its fold run directories, every one finished
    (trained and evaluated on its held-out fold), else a one-line InputError naming the fold."""
    cv_dir = Path(cv_dir)
    plan = read_plan(cv_dir)
    folds = plan.get("folds")
    if not isinstance(folds, int) or folds < 1:
        raise InputError(f"{cv_dir}/cv.json names no folds (folds: {folds!r})")
    for k in range(folds):
        try:
            done = fold_done(cv_dir, k)
        except (OSError, ValueError):
            done = False
        if not done:
            raise InputError(f"{cv_dir}: fold-{k} has not finished (trained and evaluated): a "
                             f"fold ensemble needs all {folds} folds",
                             hint=f"finish it with 'breastus cv {plan.get('task')} ... --out "
                                  f"{cv_dir}' (it resumes), or give one finished fold")
    return plan, [fold_dir(cv_dir, k) for k in range(folds)]

