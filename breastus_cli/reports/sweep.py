"""Sweep results for the terminal and as plots."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from breastus_cli.engine.orchestration.sweep import SweepResult


def write_sweep_plots(result: SweepResult) -> None:
    from breastus_cli.reports.plots import sweep_grid_png, sweep_heatmap_png

    sweep_grid_png(result.rows, result.metric, result.out / "grid.png")
    sweep_heatmap_png(result.rows, result.metric, result.out / "heatmap.png")


def sweep_table(result: SweepResult) -> Table:
    if not result.rows:
        table = Table(title=f"Sweep {result.out}: {result.trainings} trainings planned, none "
                      "finished yet", title_justify="left", show_header=False)
        table.add_column("what")
        if result.submitted_job:
            table.add_row(f"submitted Slurm job {result.submitted_job}; when it finishes: "
                          f"breastus sweep collect {result.out}")
        elif result.sbatch:
            table.add_row(f"wrote {result.sbatch} (submit it with sbatch)")
        return table
    lrs = sorted({r["lr"] for r in result.rows})
    epochs = sorted({r["epochs"] for r in result.rows})
    table = Table(title=f"Sweep {result.out}: {result.metric} (rows: epochs, columns: lr)",
                  title_justify="left")
    table.add_column("epochs", justify="right")
    for lr in lrs:
        table.add_column(f"{lr:g}", justify="right")
    cell = {(r["epochs"], r["lr"]): r.get(result.metric) for r in result.rows}
    best = result.best or {}
    for e in epochs:
        values = []
        for lr in lrs:
            v = cell.get((e, lr))
            text = "" if v is None else f"{v:.4f}"
            if best.get("epochs") == e and best.get("lr") == lr:
                text = f"[bold green]{text}[/bold green]"
            values.append(text)
        table.add_row(str(e), *values)
    caption = (f"{result.trainings} trainings ({result.trainings_this_run} this run)")
    if result.best:
        caption += (f"; best {result.metric} {result.best[result.metric]:.4f} at lr "
                    f"{result.best['lr']:g}, {result.best['epochs']} epochs")
    if result.missing:
        caption += f"; missing {len(result.missing)}: " + ", ".join(result.missing[:4])
    table.caption = caption + slurm_caption(result)
    return table


def slurm_caption(result: object) -> str:
    """"; submitted Slurm job N" or "; wrote X.sbatch" for sweep and cv results."""
    job, sbatch = getattr(result, "submitted_job", None), getattr(result, "sbatch", None)
    if job:
        return f"; submitted Slurm job {job}"
    return f"; wrote {sbatch}" if sbatch else ""
