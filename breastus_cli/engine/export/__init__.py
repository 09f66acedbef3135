"""Deployment files of a run: TFLite / SavedModel conversion, their inputs and the agreement check."""
