"""Commands of the design that this version does not implement yet: listed, and honest about it."""

from __future__ import annotations

import typer

from breastus_cli.cli.app import app
from breastus_cli.errors import NotBuiltError

_PENDING = {
    "cv": "Case-level k-fold cross-validation with pooled metrics and CIs.",
}


def _make(name: str, summary: str) -> None:
    @app.command(
        name=name,
        help=f"{summary} [not built yet in this version]",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _pending(ctx: typer.Context) -> None:
        raise NotBuiltError(f"'breastus {name}' is not built yet in this version")


for _name, _summary in _PENDING.items():
    _make(_name, _summary)
