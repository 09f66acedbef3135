"""Progress for work longer than a few seconds: a rich bar on a terminal, sparse plain lines
otherwise (a Slurm log gets a line every 10% instead of thousands of spinner frames)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from breastus_cli.reports import console


class _RateColumn(ProgressColumn):
    """Items per second (images/s for predict)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:5.1f}/s", style="progress.data.speed")


@contextlib.contextmanager
def progress(description: str, total: int | None = None,
             rate: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``; renders as a bar (terminal) or as plain lines (logs)."""
    if console.state.quiet:
        yield lambda done, total: None
        return
    if console.interactive():
        columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(),
                                         MofNCompleteColumn(), TimeRemainingColumn()]
        if rate:
            columns.insert(3, _RateColumn())
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


class TrainProgress:
    """Batch progress within each epoch on a terminal (the epoch lines come from the log)."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None
        self._epoch = 0

    def __enter__(self) -> TrainProgress:
        if console.interactive() and not console.state.quiet:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=console.err(), transient=True)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def on_batch(self, epoch: int, step: int, steps: int) -> None:
        if self._bar is None:
            return
        if epoch != self._epoch:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(f"epoch {epoch}", total=steps)
            self._epoch = epoch
        self._bar.update(self._task, completed=step)
