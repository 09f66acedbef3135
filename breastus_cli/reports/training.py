"""Rendering a finished training for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from breastus_cli.engine.training.train import TrainResult


def train_table(result: TrainResult) -> Table:
    table = Table(title=f"Run {result.run_dir}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("cases", f"{result.n_train} train / {result.n_val} val")
    epochs = f"{result.epochs_run} of {result.epochs_planned}"
    if result.stopped_early_at:
        epochs += f" (early stop at {result.stopped_early_at})"
    if result.resumed_from:
        epochs += f" (resumed after {result.resumed_from})"
    table.add_row("epochs", epochs)
    table.add_row(f"best {result.monitor}", f"{result.best_value:.4f} at epoch {result.best_epoch}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    table.add_row("model", str(result.run_dir / "model.keras"))
    table.caption = f"next: breastus evaluate {result.run_dir}"
    return table
