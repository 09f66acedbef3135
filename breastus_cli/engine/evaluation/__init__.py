"""Scoring a run on a split: metrics, plots' inputs and the report files of RUN/eval-<split>/."""
