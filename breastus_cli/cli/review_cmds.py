"""``breastus review``: (re)write the review page of a predict output folder."""

from __future__ import annotations

from pathlib import Path

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console


def write_page(out: Path) -> None:
    """Write OUT/index.html (reports/review_page.py) and say where it is; ``predict --report``
    calls this too."""
    from breastus_cli.reports.review_page import write_review_page

    page = write_review_page(out)
    console.info(f"review page: {page.path} ({page.rows} scan(s), {page.errors} error(s); "
                 f"{page.thumbs_written} thumbnail(s) written, {page.thumbs_kept} kept, "
                 f"{page.seconds:.1f} s)")
    if page.missing_images:
        console.warn(f"{len(page.missing_images)} scan(s) could not be read again for their "
                     f"thumbnail (moved or deleted?), e.g. {page.missing_images[0]}")


@app.command(
    "review",
    epilog="Examples: breastus review out  |  breastus predict scans/ --cls-run RUN --out out "
           "--report (the same page, written at the end)",
)
def review_cmd(
    out: Path = typer.Argument(..., help="The --out folder of a 'breastus predict' run."),
) -> None:
    """Write OUT/index.html: a page to review the predictions, one row per scan.

    Self-contained (no network; it opens from the file): thumbnails of each scan and its
    overlay (OUT/thumbs/), p(malignant) and label (fused where the classifier has a fusion),
    the descriptors behind the fused score, sortable (most suspicious first) and filterable;
    unreadable files listed apart; the models and thresholds in the header.
    """
    write_page(out)
