"""Cross-validation summary: the terminal table and CV_DIR/summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from breastus_cli.atomic import write_text
from breastus_cli.reports.fusion import fusion_markdown
from breastus_cli.reports.sweep import slurm_caption

if TYPE_CHECKING:
    from breastus_cli.engine.orchestration.cv import CVResult


def cv_table(result: CVResult) -> Table:
    summary = result.summary
    table = Table(title=f"{result.folds}-fold CV {result.out} ({result.folds_done} folds done, "
                  f"{summary.get('n', 0)} cases out of fold)", title_justify="left")
    for column in ("metric", "pooled", "95% CI", "mean ± sd (folds)"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, row in summary.get("metrics", {}).items():
        ci = row.get("ci")
        table.add_row(key, "n/a" if row["pooled"] is None else f"{row['pooled']:.3f}",
                      f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "",
                      "n/a" if row["mean"] is None else f"{row['mean']:.3f} ± {row['sd']:.3f}")
    caption = f"summary.json, summary.md in {result.out}"
    if "majority_baseline_accuracy" in summary:
        caption += f"; majority-class accuracy {summary['majority_baseline_accuracy']:.3f}"
    table.caption = caption + slurm_caption(result)
    return table


def write_summary(result: CVResult) -> Path:
    """``CV_DIR/summary.md`` from the engine's summary (summary.json) and plan (cv.json)."""
    from breastus_cli.engine.runs.cvdir import read_plan

    return write_text(Path(result.out) / "summary.md",
                      summary_markdown(result.summary, read_plan(Path(result.out))))


def summary_markdown(summary: dict[str, Any], plan: dict[str, Any]) -> str:
    """A small markdown table: pooled (95% CI), mean +- sd over folds."""
    train = plan["train"]
    name = train.get("model") or f"U-Net {train.get('backbone')}"
    oracle = " [oracle: ground-truth lesion crops, an upper bound]" \
        if "roi_source" in summary else ""
    lines = [f"# {plan['folds']}-fold cross-validation: {name}{oracle}", "",
             f"Data: `{plan['data']}`; {summary.get('n', 0)} cases out of fold, folds done: "
             f"{len(summary['folds_done'])}/{plan['folds']}; img size {train.get('img_size')}, "
             f"lr {train.get('lr')}, epochs {train.get('epochs')}, weights {train.get('weights')}.",
             "", *_table(summary["metrics"])]
    if summary.get("by_dataset"):
        from breastus_cli.reports.evaluation import (
            CLS_BY_DATASET,
            SEG_BY_DATASET,
            by_dataset_markdown,
        )

        keys = SEG_BY_DATASET if plan.get("task") == "seg" else CLS_BY_DATASET
        lines += ["", "Per dataset, pooled out of fold:", "", by_dataset_markdown(summary, keys)]
    if "crops_from" in summary:
        lines += ["", f"Lesion-centred: crops from {summary['crops_from']}"
                      + (f" (a lesion found in {summary['lesion_found']} of {summary['n']} "
                         "cases; the rest used the whole image)" if "lesion_found" in summary
                         else "") + "."]
    if oracle:
        lines += ["", "Oracle numbers: each image was cropped around its ground-truth lesion "
                      "mask, which new scans do not have; an upper bound. Cross-validate with "
                      "--seg-cv for crops from a segmenter."]
    if summary.get("threshold_sources"):
        lines += ["", "Decision threshold per fold: "
                      + "; ".join(summary["threshold_sources"]) + "."]
    if "ground_truth_roi" in summary:
        lines += ["", "The same classifiers on ground-truth crops (oracle, an upper bound):",
                  "",
                  *_table(summary["ground_truth_roi"])]
    if "fusion" in summary:
        lines += ["", *fusion_markdown(summary["fusion"])]
    if "majority_baseline_accuracy" in summary:
        lines += ["", f"Majority-class baseline accuracy: "
                      f"{summary['majority_baseline_accuracy']:.3f}."]
    return "\n".join(lines) + "\n"


def _table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: metric | pooled (95% CI) | mean ± sd over folds."""
    lines = ["| metric | pooled (95% CI) | mean ± sd over folds |", "|---|---:|---:|"]
    for key, row in metrics.items():
        pooled = "n/a" if row["pooled"] is None else f"{row['pooled']:.3f}"
        if row["pooled"] is not None and row["ci"]:
            pooled += f" ({row['ci'][0]:.3f}–{row['ci'][1]:.3f})"
        spread = "n/a" if row["mean"] is None else f"{row['mean']:.3f} ± {row['sd']:.3f}"
        lines.append(f"| {key} | {pooled} | {spread} |")
    return lines

