"""The fused classifier's numbers (CNN alone, descriptors alone, fused) as markdown, for a
cross-validation's summary and for one run's evaluation report."""

from __future__ import annotations

from typing import Any

#: the fused classifier's rows, in order, with the names a reader sees
FUSION_ROWS = (
    ("cnn", "CNN alone"),
    ("partner", "second classifier alone (--fuse-with)"),
    ("descriptors", "lesion descriptors alone (segmenter's masks)"),
    ("fused", "fused: CNN + descriptors (segmenter's masks)"),
    ("descriptors_gt_mask", "descriptors alone, ground-truth masks (oracle: upper bound)"),
    ("fused_gt_mask", "fused, ground-truth masks (oracle: upper bound)"),
)


def fusion_markdown(fusion: dict[str, Any], heading: str | None = "## Fused classifier: CNN + "
                    "lesion descriptors") -> list[str]:
    """CNN alone, descriptors alone and fused side by side (pooled, 95% CI), what was fitted on
    which cases, and each descriptor's weight (mean over folds). ``fusion``: a CV summary's
    block (each metric ``{"pooled", "ci"}``); one evaluation's goes through
    :func:`from_evaluation` first."""
    lines = [*([heading, ""] if heading else []),
             "| scores | AUC (95% CI) | sensitivity | specificity |", "|---|---:|---:|---:|"]

    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]["pooled"]
        if value is None:
            return "n/a"
        ci = row[key].get("ci")
        return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")

    for key, name in FUSION_ROWS:
        if "partner" in fusion and key.startswith("fused"):
            name = name.replace("CNN + descriptors", "CNN + second classifier + descriptors")
        if key in fusion:
            row = fusion[key]
            lines.append(f"| {name} | {cell(row, 'auc')} | {cell(row, 'sensitivity')} | "
                         f"{cell(row, 'specificity')} |")
    fitted = fusion.get("fitted_on") or {}
    lines += ["", f"Descriptors from {fusion.get('masks_from', 'the segmenter')}; a lesion was "
                  f"found in {fusion.get('lesion_found', 'n/a')} cases (none found: the "
                  "descriptors take the training medians)."]
    lines += [f"- {part.replace('_', ' ')}: {text}" for part, text in fitted.items()]
    if "partner" in fusion:
        lines.append(f"- second classifier: {fusion.get('partner_from') or fusion.get('partner_run')}"
                     " (trained on the same split: none of these cases)")
    weights = fusion.get("descriptor_weights") or {}
    if weights:
        ranked = sorted(weights.items(), key=lambda kv: -abs(kv[1]))
        lines += ["", "Descriptor weights (log-odds of malignancy per standard deviation, mean "
                      "over folds; positive: more often malignant):", "",
                  "| descriptor | weight |", "|---|---:|",
                  *[f"| {name} | {value:+.2f} |" for name, value in ranked]]
    combiner = fusion.get("combiner_weights") or {}
    if combiner:
        lines += ["", "Combination (per standard deviation of each logit): "
                      + ", ".join(f"{k} {v:+.2f}" for k, v in combiner.items()) + "."]
    return lines


def from_evaluation(block: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's ``metrics.json["fusion"]`` in the CV summary's shape."""
    def shaped(scores: dict[str, Any]) -> dict[str, Any]:
        ci = scores.get("ci") or {}
        return {key: {"pooled": scores.get(key), "ci": ci.get(key)}
                for key in ("auc", "sensitivity", "specificity", "accuracy",
                            "balanced_accuracy")}

    out = {k: v for k, v in block.items() if k not in ("cnn", "descriptors", "fused", "partner",
                                                       "ground_truth_masks")}
    if "partner" in block:
        out["partner_run"] = block["partner"].get("run")
    for name in ("cnn", "partner", "descriptors", "fused"):
        if name in block:
            out[name] = shaped(block[name])
    gt = block.get("ground_truth_masks") or {}
    for name in ("descriptors", "fused"):
        if name in gt:
            out[f"{name}_gt_mask"] = shaped(gt[name])
    return out
