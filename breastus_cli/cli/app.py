"""The ``breastus`` command: global options, error handling and the command list."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import typer

from breastus_cli import __version__, atomic
from breastus_cli.errors import BreastusError, Interrupted, one_line
from breastus_cli.reports import console

app = typer.Typer(
    name="breastus",
    help=(
        "Breast-ultrasound lesion analysis: prepare public datasets, train and evaluate "
        "benign/malignant classifiers and lesion segmenters, batch-predict folders of scans.\n\n"
        "Typical session: breastus synth demo/src && breastus prepare demo/src --out demo/data "
        "&& breastus split demo/data"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Global flags accepted anywhere on the line (`breastus prepare ... --debug` works too).
GLOBAL_FLAGS = ("--debug", "--verbose", "-v", "--quiet", "-q")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"breastus {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail, TensorFlow logs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors."),
) -> None:
    """Global options; they may also be given after the command name."""
    console.state.debug = debug
    console.state.verbose = verbose and not quiet
    console.state.quiet = quiet


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move global flags given after the command name in front of it (before any ``--``)."""
    head: list[str] = []
    rest: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        (head if arg in GLOBAL_FLAGS else rest).append(arg)
    return head + rest


def _register() -> None:
    # Commands register on import; this order is the order of --help (the workflow's).
    import importlib

    for module in ("data_cmds", "train_cmds", "eval_cmds", "compare_cmds", "predict_cmds",
                   "review_cmds", "site_cmds", "export_cmds", "sweep_cmds", "cv_cmds",
                   "weights_cmds"):
        importlib.import_module(f"breastus_cli.cli.{module}")


_register()


def _unwrap(text: str) -> str:
    """A docstring's paragraphs as one line each (bullets "- "/"* " keep their own lines).
    Docstrings are wrapped for the source; Typer's rich help keeps every line break, so an
    80-column terminal showed each wrapped line broken again."""
    paragraphs = []
    for block in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in block.split("\n"):
            if lines and not line.lstrip().startswith(("- ", "* ", "\b")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _unwrap_help(typer_app: typer.Typer) -> None:
    """Every command's help (and each group's, recursively) unwrapped, before Typer builds it."""
    for info in typer_app.registered_commands:
        text = info.help or inspect.getdoc(info.callback)
        if text:
            info.help = _unwrap(text)
    for group in typer_app.registered_groups:
        if group.help:
            group.help = _unwrap(group.help)
        if group.typer_instance is not None:
            _unwrap_help(group.typer_instance)


_unwrap_help(app)


SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, so every ``finally``
    and ``except BaseException`` cleans up (temporary folders, run status, child processes).
    During that cleanup further signals are ignored, except a second SIGINT (Ctrl-C twice),
    which ends the process at once. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (an embedding application's thread)
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if received:
            if signum == signal.SIGINT and received[-1] == signal.SIGINT:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        received.append(signum)
        if atomic.defer_signal(signum):
            return  # a folder is being swapped: raised when that is done
        raise Interrupted(signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, Callable[..., Any] | int | None]) -> None:
    for sig, old in previous.items():
        if old is not None:
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, map errors to one line and an exit code."""
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(app)
    previous = _install_signal_handlers()
    try:
        # Standalone mode: Typer handles --help, usage errors (exit 2) and typer.Exit itself and
        # ends with sys.exit; what escapes is ours to report.
        command.main(args=args, prog_name="breastus", standalone_mode=True)
    except (Interrupted, KeyboardInterrupt) as exc:
        if console.state.debug:
            traceback.print_exc()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        console.error(f"interrupted ({name})")
        sys.exit(128 + signum)
    except BreastusError as exc:
        if console.state.debug:
            traceback.print_exc()
        console.error(one_line(exc.message), exc.hint)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: say so in one line, the traceback with --debug
        if console.state.debug:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {one_line(exc)}",
                      None if console.state.debug else "run again with --debug for the traceback")
        sys.exit(1)
    finally:
        _restore_signal_handlers(previous)
