"""Rich tables for the data commands (synth, prepare, split)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from breastus_cli.data.combine import CombineResult
    from breastus_cli.data.prepare import PrepareResult
    from breastus_cli.data.split import SplitResult
    from breastus_cli.data.synth import SynthResult


def synth_table(result: SynthResult) -> Table:
    table = Table(title=f"Synthetic BrEaST dataset: {result.out}", title_justify="left")
    table.add_column("class")
    table.add_column("cases", justify="right")
    for label, count in result.counts.items():
        table.add_row(label, str(count))
    table.add_row("[dim]other masks[/dim]", f"[dim]{result.other_masks}[/dim]")
    table.add_row("total", str(sum(result.counts.values())), style="bold")
    table.caption = f"{result.seconds:.1f} s"
    return table


def prepare_tables(result: PrepareResult) -> list[Table]:
    counts = Table(title=f"Prepared {result.format} -> {result.out}", title_justify="left")
    counts.add_column("class")
    counts.add_column("cases", justify="right")
    for label, count in result.counts.items():
        counts.add_row(label, str(count))
    counts.add_row("kept", str(result.kept), style="bold")
    counts.add_row("skipped", str(len(result.skipped)))
    counts.add_row("rows read", str(result.rows_read))
    size = result.image_size
    px = result.pixel_size_mm
    counts.caption = (
        f"images {size['min_width']}-{size['max_width']} x {size['min_height']}-{size['max_height']} px"
        + (f", pixel {px['min']:.4f}-{px['max']:.4f} mm" if px.get("min") is not None else "")
        + f", {result.with_mask} with lesion mask, {result.seconds:.1f} s"
        + f"; {len(result.dup_pairs)} near-duplicate pair(s) (prepare.json)"
    )
    tables = [counts]
    if result.skipped:
        reasons = Table(title="Skipped rows (all listed in prepare.json)", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        reasons.add_column("cases")
        for reason, n in result.skipped_by_reason.items():
            ids = [s.case_id for s in result.skipped if s.reason == reason]
            shown = ", ".join(ids[:6]) + (f", ... (+{len(ids) - 6})" if len(ids) > 6 else "")
            reasons.add_row(reason, str(n), shown)
        tables.append(reasons)
    return tables


def split_tables(result: SplitResult) -> list[Table]:
    labels = sorted({lab for row in result.table.values() for lab in row})
    table = Table(title=f"Split ({result.groups}-level, stratified): {result.splits_csv}",
                  title_justify="left")
    table.add_column("split")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for name, row in result.table.items():
        table.add_row(name, *(str(row.get(lab, 0)) for lab in labels), str(sum(row.values())))
    tables = [table]
    if result.fold_table:
        folds = Table(title=f"Folds ({result.fold_source})", title_justify="left")
        folds.add_column("fold")
        for label in labels:
            folds.add_column(label, justify="right")
        folds.add_column("total", justify="right")
        for fold, row in sorted(result.fold_table.items()):
            folds.add_row(str(fold), *(str(row.get(lab, 0)) for lab in labels),
                          str(sum(row.values())))
        tables.append(folds)
    if result.materialized:
        table.caption = f"folders written to {result.materialized}"
    return tables


def combine_table(result: CombineResult) -> Table:
    labels = sorted({lab for d in result.datasets for lab in d["labels"]})
    table = Table(title=f"Combined dataset: {result.out}", title_justify="left")
    table.add_column("dataset")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    table.add_column("folds", justify="right")
    for d in result.datasets:
        table.add_row(d["name"], *(str(d["labels"].get(lab, 0)) for lab in labels),
                      str(d["cases"]), str(d["folds"] or "-"))
    table.caption = (f"{result.cases} cases; "
                     + (f"{result.folds} folds kept" if result.folds else "no folds"))
    return table
