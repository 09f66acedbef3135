"""Cross-validation summary for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from breastus_cli.reports.sweep import slurm_caption

if TYPE_CHECKING:
    from breastus_cli.engine.cv import CVResult


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
