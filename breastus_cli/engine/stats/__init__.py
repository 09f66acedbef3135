"""Numbers from predictions: bootstrap intervals, classification and segmentation metrics, lesion
descriptors.

Imports nothing else in engine (checked by the import contracts in pyproject.toml)."""
