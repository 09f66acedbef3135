"""``breastus compare``'s table, plot and report (OUT/roc_paired.png, OUT/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from breastus_cli.atomic import write_text
from breastus_cli.reports.report import format_ci

if TYPE_CHECKING:
    from breastus_cli.engine.evaluation.compare import CompareResult

PLOT = "roc_paired.png"
REPORT = "report.md"


def _signed(value: float, ci: list[float] | None) -> str:
    text = f"{value:+.3f}"
    if ci is not None and None not in ci:
        text += f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f})"
    return text


def verdict(result: CompareResult) -> str:
    """One sentence: which model the paired CI favours, or that it includes 0."""
    ci = result.paired.ci_difference
    if ci is None:
        return "no bootstrap CI (--bootstrap 0)"
    if ci[0] > 0:
        return f"B ({result.name_b}) ranks the cases better: the CI lies above 0"
    if ci[1] < 0:
        return f"A ({result.name_a}) ranks the cases better: the CI lies below 0"
    return "no difference shown: the CI includes 0"


def table(result: CompareResult) -> Table:
    p = result.paired
    out = Table(title=f"Paired comparison on {p.n} cases ({p.n_malignant} malignant)",
                title_justify="left", caption=verdict(result))
    for column in ("", "run", "AUC (95% CI)"):
        out.add_column(column, justify="right" if column.startswith("AUC") else "left")
    out.add_row("A", result.name_a, format_ci(p.auc_a, p.ci_a))
    out.add_row("B", result.name_b, format_ci(p.auc_b, p.ci_b))
    out.add_row("B \u2212 A", "paired bootstrap", _signed(p.difference, p.ci_difference))
    return out


def write_artifacts(result: CompareResult) -> list[Path]:
    """OUT/roc_paired.png (both ROC curves) and OUT/report.md (the table as markdown)."""
    from breastus_cli.reports.plots import paired_roc_png

    p = result.paired
    frame = result.frame
    plot = paired_roc_png(frame["y_true"].to_numpy(), {
        f"A: {result.name_a}, AUC {p.auc_a:.3f}": frame["p_a"].to_numpy(),
        f"B: {result.name_b}, AUC {p.auc_b:.3f}": frame["p_b"].to_numpy()}, result.out / PLOT)
    lines = [f"# Paired comparison: {result.name_a} (A) and {result.name_b} (B)", "",
             f"The same {p.n} cases ({p.n_malignant} malignant), scored by both. CIs: "
             f"{p.n_bootstrap} class-stratified bootstrap resamples, each scoring both models "
             "on the same drawn cases (paired).", "",
             "| | run | predictions | AUC (95% CI) |", "|---|---|---|---:|",
             f"| A | {result.name_a} | {result.source_a} | {format_ci(p.auc_a, p.ci_a)} |",
             f"| B | {result.name_b} | {result.source_b} | {format_ci(p.auc_b, p.ci_b)} |",
             f"| B \u2212 A | | | {_signed(p.difference, p.ci_difference)} |", "",
             f"{verdict(result)[0].upper()}{verdict(result)[1:]}.", "", f"![ROC curves]({PLOT})",
             ""]
    return [plot, write_text(result.out / REPORT, "\n".join(lines))]
