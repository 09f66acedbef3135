"""Summary of a prediction run for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from breastus_cli.engine.apply.predict_settings import PredictResult


def predict_table(result: PredictResult, merged: int = 0) -> Table:
    title = f"Merged {merged} parts into {result.out}" if merged else f"Predictions in {result.out}"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("files", str(result.files))
    table.add_row("images predicted", str(result.rows))
    table.add_row("flagged malignant", str(result.malignant))
    table.add_row("errors", f"[warn]{result.errors}[/warn]" if result.errors else "0")
    if result.skipped_done:
        table.add_row("already done (--resume)", str(result.skipped_done))
    if not merged:
        table.add_row("images/s", f"{result.images_per_second:.1f}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    for path, reason in result.error_examples:
        table.add_row(f"[dim]{path}[/dim]", f"[dim]{reason}[/dim]")
    return table
