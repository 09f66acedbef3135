"""Command-line layer: Typer commands that build a settings object, call one core function and
render its result. Heavy modules are imported inside the commands so ``--help`` stays instant."""
