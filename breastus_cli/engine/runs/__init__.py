"""What a run folder and a cross-validation folder are on disk, and the settings a run records.

Imports nothing else in engine (checked by the import contracts in pyproject.toml)."""
