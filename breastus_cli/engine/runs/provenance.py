"""What a result came from, as fields that code compares (never sentences parsed back).

    masks_source(seg_run, folder)   {"seg_run": its path relative to ``folder``, the folder
                                    of the file that records it; "seg_model_sha256"}: which
                                    segmenter's masks an evaluation's crops or descriptors
                                    came from (metrics.json's ``roi`` and ``fusion`` blocks)
    masks_from_run(block, folder, seg_run)   whether a block records ``seg_run``'s masks
    fusion_threshold_rule(fitted_on)         the rule that chose a fused classifier's
                                    threshold (``fitted_on.threshold_rule`` in fusion.json and
                                    an evaluation's fusion block)

Files written before these fields keep working: each reader falls back once to the sentence
the older version wrote, and the next write records the fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from breastus_cli.data.manifest import file_sha256
from breastus_cli.runfiles import FUSION_THRESHOLD_RULES

#: ``fitted_on.threshold_rule`` of a fused classifier: chosen on cross-fitted validation
#: scores (today's rule), none asked (0.5), or on the combiner's own fitted scores (before)
FUSION_CROSS_FITTED, FUSION_DEFAULT, FUSION_FITTED = FUSION_THRESHOLD_RULES
#: rules a resumed cross-validation keeps (others are fitted and scored again)
FUSION_CURRENT_RULES = (FUSION_CROSS_FITTED, FUSION_DEFAULT)
#: ``Threshold.chosen_on``: on the run's validation cases (threshold.json), config.json's
#: default, the median of a fold ensemble's, an export's metadata, a new hospital's labelled
#: cases (``adapt --labels``)
CHOSEN_ON_VALIDATION, CHOSEN_DEFAULT, CHOSEN_BY_FOLDS, CHOSEN_IN_EXPORT, CHOSEN_ON_LOCAL = (
    "validation", "default", "folds", "export", "local")
MODEL_FILE = "model.keras"


def masks_source(seg_run: str | Path, folder: str | Path) -> dict[str, Any]:
    """Which segmenter's masks a result used: its path relative to ``folder`` (where the file
    recording it lies: the two move together) and its model's SHA-256 (None for a fold
    ensemble or a run without model.keras)."""
    model = Path(seg_run) / MODEL_FILE
    return {"seg_run": os.path.relpath(Path(seg_run).resolve(), Path(folder).resolve()),
            "seg_model_sha256": file_sha256(model) if model.is_file() else None}


def masks_from_run(block: dict[str, Any], folder: str | Path, seg_run: str | Path,
                   sentence: str | None = None) -> bool | None:
    """Whether ``block`` (an evaluation's ``roi`` or ``fusion`` block, in a file in ``folder``)
    records ``seg_run``'s masks; None when it records no segmenter. A block written before
    the ``seg_run`` field is read by its ``sentence`` (crops_from/masks_from), once."""
    recorded = block.get("seg_run")
    if isinstance(recorded, str):
        return (Path(folder) / recorded).resolve() == Path(seg_run).resolve()
    if sentence is None:
        return None
    return sentence == f"segmentation run {seg_run}"  # the older files' wording


def fusion_threshold_rule(fitted_on: dict[str, Any] | None) -> str | None:
    """The rule that chose a fused classifier's threshold: ``fitted_on.threshold_rule``, or,
    in a file written before that field, read from its ``threshold`` sentence."""
    fitted_on = fitted_on or {}
    rule = fitted_on.get("threshold_rule")
    if rule is not None:
        return str(rule)
    text = str(fitted_on.get("threshold", ""))
    if not text:
        return None
    if "cross-fitted" in text:
        return FUSION_CROSS_FITTED
    return FUSION_DEFAULT if text.startswith("default") else FUSION_FITTED


def fusion_threshold_current(fitted_on: dict[str, Any] | None) -> bool:
    """Whether a fused classifier chose its threshold by today's rule (on cross-fitted
    validation scores, or none asked: 0.5). A fusion fitted before is fitted again when its CV
    is resumed (nothing retrained)."""
    return fusion_threshold_rule(fitted_on) in FUSION_CURRENT_RULES
