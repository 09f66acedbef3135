"""Where the toolkit's words go: rich on a terminal, plain lines in a log or under Slurm.

One module owns the consoles so that ``--quiet`` / ``--verbose`` and the terminal check are
decided once. Errors always go to stderr, results to stdout.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.theme import Theme

_THEME = Theme({"ok": "green", "warn": "yellow", "err": "bold red", "dim": "dim", "key": "cyan"})


@dataclass
class OutputState:
    quiet: bool = False
    verbose: bool = False
    debug: bool = False


state = OutputState()


def _make(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Slurm batch jobs write to files; rich already detects a non-terminal, this also covers an
    # interactive `srun --pty` where colour codes would end up in the job's output file.
    under_slurm = "SLURM_JOB_ID" in os.environ and not stream.isatty()
    return Console(
        file=stream,
        theme=_THEME,
        highlight=False,
        soft_wrap=not stream.isatty(),
        no_color=under_slurm or None,
        width=None if stream.isatty() else 120,
    )


def out() -> Console:
    """The console for results (stdout). Created per call so tests capturing stdout see it."""
    return _make(stderr=False)


def err() -> Console:
    """The console for messages and errors (stderr)."""
    return _make(stderr=True)


def interactive() -> bool:
    """True when stdout is a terminal: progress bars and colours are welcome."""
    return sys.stdout.isatty()


def info(message: str) -> None:
    """A progress/info line on stderr, hidden by --quiet."""
    if not state.quiet:
        err().print(escape(message))


def detail(message: str) -> None:
    """A line shown only with --verbose."""
    if state.verbose and not state.quiet:
        err().print(f"[dim]{escape(message)}[/dim]")


def warn(message: str) -> None:
    """A warning on stderr (shown even with --quiet)."""
    err().print(f"[warn]warning:[/warn] {escape(message)}")


def error(message: str, hint: str | None = None) -> None:
    """The one red error line (and an optional hint line)."""
    console = err()
    console.print(f"[err]error:[/err] {escape(message)}")
    if hint:
        console.print(f"[dim]hint: {escape(hint)}[/dim]")


class _ConsoleHandler(logging.Handler):
    """Route the engine's ``breastus`` log records to the console (stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            elif record.levelno >= logging.INFO:
                info(message)
            else:
                detail(message)
        except Exception:  # logging must never break the work
            self.handleError(record)


def route_engine_logs() -> None:
    """Send ``logging.getLogger('breastus')`` to the console once per process."""
    logger = logging.getLogger("breastus")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.DEBUG if state.verbose else logging.INFO)
    logger.propagate = False
