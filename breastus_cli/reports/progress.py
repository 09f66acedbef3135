"""Progress for work longer than a few seconds: a rich bar on a terminal, sparse plain lines
otherwise (a Slurm log gets a line every 10% instead of thousands of spinner frames)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from breastus_cli.reports import console


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``; renders as a bar (terminal) or as plain lines (logs)."""
    if console.state.quiet:
        yield lambda done, total: None
        return
    if console.interactive():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console.err(), transient=True) as bar:
            task = bar.add_task(description, total=total)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return

    state = {"next": 0.0, "start": time.perf_counter()}

    def update_plain(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if fraction >= state["next"] or done == total:
            elapsed = time.perf_counter() - state["start"]
            console.info(f"{description}: {done}/{total} ({fraction:.0%}, {elapsed:.1f} s)")
            state["next"] = min(1.0, fraction + 0.1)
            if done == total:
                state["next"] = 2.0  # never again

    yield update_plain
