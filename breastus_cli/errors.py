"""One error hierarchy for the whole toolkit.

The CLI turns a :class:`BreastusError` into one clear line and the error's ``exit_code``:
2 for bad usage or bad input (the user can fix it), 1 for work that failed.
Anything else that escapes is a bug: the CLI says so and ``--debug`` shows the traceback.
"""

from __future__ import annotations


class BreastusError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(BreastusError):
    """An option or argument is invalid (bad value, out of range, wrong combination)."""

    exit_code = 2


class InputError(BreastusError):
    """The input data is structurally unusable: a missing folder, workbook, sheet or column."""

    exit_code = 2


class RowError(BreastusError):
    """One row (case) of a source cannot be used; readers collect these and skip the row."""

    exit_code = 2


class WorkError(BreastusError):
    """The work itself failed (training diverged, nothing could be predicted, ...)."""

    exit_code = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised by the CLI's signal handler so that every ``finally``
    and ``except BaseException`` cleans up; not an :class:`Exception`, so nothing swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` (often a library's message of several lines) on one line: runs of whitespace,
    newlines included, become one space; beyond ``limit`` characters the middle is elided (the
    start says what failed, the end usually why). ``--debug`` shows the message in full."""
    flat = " ".join(str(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    half = (limit - 5) // 2
    return f"{flat[:half]} ... {flat[-half:]}"
