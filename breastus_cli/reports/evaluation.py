"""Plots, reports and terminal tables for evaluations (one run, several models, or folds)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.reports.report import format_ci, write_report

if TYPE_CHECKING:
    from breastus_cli.engine.evaluation.eval_settings import EvalResult

#: Rows of the classification summary: (label, metrics key, has a CI).
CLS_ROWS = (
    ("AUC", "auc", True), ("Sensitivity (malignant recall)", "sensitivity", True),
    ("Specificity", "specificity", True), ("Accuracy", "accuracy", True),
    ("Balanced accuracy", "balanced_accuracy", True), ("Precision (PPV)", "precision", False),
    ("NPV", "npv", False), ("F1 (malignant)", "f1", False), ("Brier score", "brier", False),
)


def _value(metrics: dict[str, Any], key: str, with_ci: bool) -> str:
    return format_ci(metrics.get(key), metrics.get("ci", {}).get(key) if with_ci else None)


ORACLE_LABEL = "oracle: ground-truth lesion crops, an upper bound"
ORACLE_NOTE = ("Oracle numbers: each image was cropped around its ground-truth lesion mask, "
               "which new scans do not have; they are an upper bound, not the expected "
               "performance. Evaluate with --seg-run SEG_RUN for crops from a segmenter.")


def is_oracle(metrics: dict[str, Any]) -> bool:
    """A lesion-centred classifier scored on crops around the ground-truth masks."""
    return bool((metrics.get("roi") or {}).get("oracle"))


def by_dataset_markdown(m: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> str:
    """One row per dataset of a combined dataset (metrics ``by_dataset``), with CIs."""
    per = m.get("by_dataset") or {}
    head = "| dataset | cases | " + " | ".join(label for label, _ in keys) + " |"
    rule = "|---|---:|" + "---:|" * len(keys)
    rows = [f"| {name} | {d.get('n', '')} | "
            + " | ".join(_value(d, key, True) for _, key in keys) + " |"
            for name, d in per.items()]
    return "\n".join([head, rule, *rows])


CLS_BY_DATASET = (("AUC", "auc"), ("Sensitivity", "sensitivity"), ("Specificity", "specificity"))
SEG_BY_DATASET = (("Dice", "dice"), ("IoU", "iou"))


def _threshold_note(m: dict[str, Any], source: str) -> str:
    return (f"Decision threshold {m['threshold']:.4f}: {source}. Rule: "
            f"{m.get('threshold_rule', 'threshold.json when present, else 0.5')}.")


def twins_note(m: dict[str, Any], split: str) -> str | None:
    """The line saying how many scored cases have a near-duplicate in training, when any."""
    twins = m.get("near_duplicates") or {}
    if not twins.get("with_twin_in_training"):
        return None
    return (f"{twins['with_twin_in_training']} of {twins['n']} {split} cases have a "
            f"near-duplicate image among the run's training cases ({twins['method']} >= "
            f"{twins['threshold']:g}, {twins['source']}): these numbers are optimistic; split "
            "again (breastus split keeps near-duplicates together) and retrain")


def write_cls_artifacts(result: EvalResult) -> list[Path]:
    """Confusion matrix, ROC, PR, calibration and the report for one classification eval."""
    from breastus_cli.reports import plots

    m, frame, out = result.metrics, result.frame, result.out_dir
    y, p = frame["y_true"].to_numpy(), frame["p_malignant"].to_numpy()
    files = [
        plots.confusion_matrix_png(m["confusion_matrix"], m["confusion_labels"],
                                   out / "confusion_matrix.png",
                                   title=f"Confusion matrix at threshold {m['threshold']:.3f}"),
        plots.roc_png(y, p, out / "roc.png", auc=m.get("auc"), ci=m["ci"].get("auc"),
                      operating_point=(m["sensitivity"], m["specificity"])
                      if m.get("sensitivity") is not None and m.get("specificity") is not None
                      else None),
        plots.pr_png(y, p, out / "pr.png"),
        plots.calibration_png(y, p, out / "calibration.png"),
    ]
    history = result.run_dir / "history.csv"
    if history.is_file():
        import pandas as pd

        files.append(plots.history_png(pd.read_csv(history), out / "history.png"))
    rows = [(label, _value(m, key, ci)) for label, key, ci in CLS_ROWS]
    gt = m.get("ground_truth_roi")
    if gt:
        rows += [(f"{label}, ground-truth crops (oracle)", _value(gt, key, ci))
                 for label, key, ci in CLS_ROWS[:5]]
    if m.get("roi"):
        rows.append(("Lesion crops from", f"{m.get('roi_source', m['roi']['crops_from'])} "
                     f"({m['roi']['lesion_found']}/{m['roi']['n']} found)"))
    rows += [("Threshold", f"{m['threshold']:.4f} ({result.threshold_source})"),
             ("Cases", f"{m['n']} ({m['n_malignant']} malignant, {m['n_benign']} benign)")]
    cm = m["confusion_matrix"]
    sections = [
        ("Confusion matrix", "| | predicted benign | predicted malignant |\n|---|---:|---:|\n"
         f"| true benign | {cm[0][0]} | {cm[0][1]} |\n| true malignant | {cm[1][0]} | {cm[1][1]} |"),
        ("Per class", _per_class_table(m)),
    ]
    if m.get("by_dataset"):
        sections.insert(0, ("Per dataset (one threshold for all)",
                            by_dataset_markdown(m, CLS_BY_DATASET)))
    if m.get("fusion"):
        from breastus_cli.reports.fusion import from_evaluation, fusion_markdown

        sections.append(("Fused classifier: CNN + lesion descriptors",
                         "\n".join(fusion_markdown(from_evaluation(m["fusion"]), None))))
        if "fused_why" in frame.columns:
            sections.append(("Why, per lesion", _why_table(frame)))
    run = RunConfig.of(result.config)
    notes = [f"Run: {result.run_dir} (model {run.model}, img size {run.img_size}, weights "
             f"{run.weights}" + (f", fold {run.fold}" if run.fold is not None else "") + ").",
             f"Split: {result.split}. Confidence intervals: {m['ci_method']}.",
             _threshold_note(m, result.threshold_source)]
    if m.get("threshold_note"):
        notes.append(f"Note: {m['threshold_note']}.")
    if result.split == "all" and result.other:
        notes.append(f"Split all: every case of {result.data}, another dataset than the run "
                     "trained on: none of its cases took part in training or in choosing the "
                     "threshold.")
    elif result.split == "all":
        notes.append("Split all: every case of the dataset, including any the run trained on.")
    if twins_note(m, result.split):
        notes.append(f"Leakage: {twins_note(m, result.split)}.")
    if is_oracle(m):
        notes.insert(0, ORACLE_NOTE)
    elif gt:
        notes.append("The ground-truth-crop rows are an oracle (an upper bound): the headline "
                     "numbers use the segmenter's crops.")
    figures = [(f.name, name) for name, f in zip(
        ["Confusion matrix", "ROC", "Precision-recall", "Calibration", "Training history"], files)]
    title = f"Classification evaluation: {result.run_dir.name} ({result.split})"
    if is_oracle(m):
        title += f" [{ORACLE_LABEL}]"
    md, html = write_report(out, title=title, summary_rows=rows, sections=sections,
                            figures=figures, command=result.command, notes=notes)
    return files + [md, html]


def _why_table(frame: Any, n: int = 5) -> str:
    """The ``n`` lesions the fused classifier calls most malignant and the ``n`` most benign,
    each with the descriptors that moved its descriptor score most (predictions.csv's
    ``fused_why`` has every lesion's)."""
    ranked = frame.sort_values("p_fused", ascending=False, kind="stable")
    picks = ranked.head(n) if len(ranked) <= 2 * n else ranked.iloc[list(range(n))
                                                                     + list(range(-n, 0))]
    lines = ["Descriptor contributions in log-odds of malignancy (+ towards malignant); every "
             "lesion's are in predictions.csv (`fused_why`).", "",
             "| case | truth | p fused | p CNN | p descriptors | largest contributions |",
             "|---|---|---:|---:|---:|---|"]
    for _, row in picks.iterrows():
        lines.append(f"| {row['case_id']} | {row['label']} | {row['p_fused']:.3f} | "
                     f"{row['p_malignant']:.3f} | {row['p_descriptors']:.3f} | "
                     f"{row['fused_why']} |")
    return "\n".join(lines)


def _per_class_table(m: dict[str, Any]) -> str:
    lines = ["| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in [*m["per_class"].items(), ("macro avg", m["macro_avg"]),
                      ("weighted avg", m["weighted_avg"])]:
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | "
                     f"{row['f1-score']:.3f} | {row['support']} |")
    return "\n".join(lines)


def _postprocess(m: dict) -> str:
    """A segmentation evaluation's mask post-processing and where it came from."""
    method = m.get("postprocess", "none")
    name = "largest connected component, holes filled" if method == "largest" else method
    return f"{name} ({m.get('postprocess_source', 'not recorded')})"


def cls_table(result: EvalResult) -> Table:
    m = result.metrics
    table = Table(title=f"{result.run_dir} on {result.split} ({m['n']} cases, "
                  f"{m['n_malignant']} malignant)"
                  + (f" [{ORACLE_LABEL}]" if is_oracle(m) else ""), title_justify="left")
    table.add_column("metric")
    table.add_column("value (95% CI)", justify="right")
    for label, key, ci in CLS_ROWS:
        table.add_row(label, _value(m, key, ci))
    table.add_row("threshold", f"{m['threshold']:.4f} ({result.threshold_source})")
    if m.get("roi"):
        table.add_row("lesion crops from", f"{m.get('roi_source', m['roi']['crops_from'])} "
                      f"({m['roi']['lesion_found']}/{m['roi']['n']} found)")
    gt = m.get("ground_truth_roi")
    if gt:
        for label, key, ci in CLS_ROWS[:5]:
            table.add_row(f"{label}, ground-truth crops (oracle)", _value(gt, key, ci))
    for name, label in (("descriptors", "descriptors alone"), ("fused", "fused")):
        scores = (m.get("fusion") or {}).get(name)
        if scores:
            table.add_row(f"AUC, {label}", _value(scores, "auc", True))
    table.caption = f"written to {result.out_dir}"
    return table


def comparison_table(results: list[EvalResult]) -> Table:
    """The reference study's Table I, with AUC and sensitivity (and CIs) added."""
    table = Table(title="Comparison", title_justify="left")
    for column in ("run", "model", "accuracy", "F1", "precision", "AUC (95% CI)",
                   "sensitivity (95% CI)", "specificity"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for r in results:
        m = r.metrics
        plain = [_value(m, key, False) for key in ("accuracy", "f1", "precision")]
        name = r.run_dir.name + (" (oracle: ground-truth crops)" if is_oracle(m) else "")
        table.add_row(name, str(m.get("model")), *plain, _value(m, "auc", True),
                      _value(m, "sensitivity", True), _value(m, "specificity", False))
    if any(is_oracle(r.metrics) for r in results):
        table.caption = ORACLE_NOTE
    return table


def folds_table(summary: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("metric", "mean", "sd", "folds"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, row in summary.items():
        if row["mean"] is None:
            continue
        table.add_row(key, f"{row['mean']:.3f}", f"{row['sd']:.3f}", str(row["n"]))
    return table


SEG_ROWS = (("Mean IoU", "iou", True), ("Mean Dice", "dice", True),
            ("Median IoU", "median_iou", False), ("Median Dice", "median_dice", False),
            ("Dataset IoU (pixels pooled)", "dataset_iou", False),
            ("Mean precision", "precision", False), ("Mean recall", "recall", False),
            ("Mean HD95 (mm)", "hd95_mm", False))


def write_seg_artifacts(result: EvalResult) -> list[Path]:
    """Overlays of the best, median and worst cases, the history plot and the report."""
    import numpy as np

    from breastus_cli.data.imaging import read_luminance, read_mask
    from breastus_cli.reports import plots

    m, per_case, out = result.metrics, result.frame, result.out_dir
    run = RunConfig.of(result.config)
    data = result.data or run.data_path  # the dataset scored: --data, else the run's own
    overlays = out / "overlays"
    overlays.mkdir(exist_ok=True)
    ranked = per_case.sort_values("iou", kind="stable").reset_index(drop=True)
    picks = {"worst": 0, "median": len(ranked) // 2, "best": len(ranked) - 1}
    files: list[Path] = []
    figures: list[tuple[str, str]] = []
    for name, index in picks.items():
        row = ranked.iloc[index]
        base = Path(data) if data else result.run_dir
        image = read_luminance(base / row["image"])
        truth = read_mask([base / row["mask"]])
        pred = read_mask([out / row["pred_mask"]])
        path = plots.overlay_png(image, truth, pred, overlays / f"{name}-{row['case_id']}.png",
                                 title=f"{name}: {row['case_id']}  IoU {row['iou']:.3f}  "
                                       f"Dice {row['dice']:.3f}")
        files.append(path)
        figures.append((f"overlays/{path.name}", f"{name.title()} case {row['case_id']} "
                        "(green: truth, red: prediction)"))
    history = result.run_dir / "history.csv"
    if history.is_file():
        import pandas as pd

        files.append(plots.history_png(pd.read_csv(history), out / "history.png"))
        figures.append(("history.png", "Training history"))
    rows = [(label, _value(m, key, ci)) for label, key, ci in SEG_ROWS]
    rows += [("Cases", str(m["n"])), ("Empty predictions", str(m["empty_predictions"])),
             ("Threshold", f"{m['threshold']:.2f} ({result.threshold_source})"),
             ("Post-processing", _postprocess(m))]
    worst = ranked.head(5)[["case_id", "iou", "dice"]]
    sections = [("Lowest IoU", "| case | IoU | Dice |\n|---|---:|---:|\n" + "\n".join(
        f"| {r.case_id} | {r.iou:.3f} | {r.dice:.3f} |" for r in worst.itertuples()))]
    if m.get("by_dataset"):
        sections.insert(0, ("Per dataset", by_dataset_markdown(m, SEG_BY_DATASET)))
    agreement = m.get("descriptors") or {}
    if agreement:  # the error each lesion descriptor inherits from imperfect segmentation
        sections.append(("Descriptor agreement (predicted vs ground-truth mask)",
                         "| descriptor | MAE | Spearman | n |\n|---|---:|---:|---:|\n" + "\n".join(
                             f"| {name} | {_number(e.get('mae'))} | {_number(e.get('spearman'))} "
                             f"| {e.get('n', 0)} |" for name, e in agreement.items())
                         + "\n\nPer case, both masks: descriptors.csv."))
    notes = [f"Run: {result.run_dir} (U-Net {run.backbone}, img size {run.img_size}, "
             f"weights {run.weights}).",
             "Predicted probability maps are resized back to each image's original size and "
             f"thresholded at {m['threshold']:.2f} before scoring. CIs: {m.get('ci_method')}.",
             f"Per-case numbers: per_case.csv; predicted masks: masks/. Mean IoU "
             f"{np.mean(per_case['iou']):.3f} over {len(per_case)} cases."]
    if twins_note(m, result.split):
        notes.append(f"Leakage: {twins_note(m, result.split)}.")
    md, html = write_report(out, title=f"Segmentation evaluation: {result.run_dir.name} "
                            f"({result.split})", summary_rows=rows, sections=sections,
                            figures=figures, command=result.command, notes=notes)
    return files + [md, html]


def _number(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def seg_table(result: EvalResult) -> Table:
    m = result.metrics
    table = Table(title=f"{result.run_dir} on {result.split} ({m['n']} cases)",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value (95% CI)", justify="right")
    for label, key, ci in SEG_ROWS:
        table.add_row(label, _value(m, key, ci))
    table.add_row("empty predictions", str(m["empty_predictions"]))
    table.add_row("post-processing", _postprocess(m))
    table.caption = f"written to {result.out_dir}"
    return table


def write_artifacts(result: EvalResult) -> list[Path]:
    return write_cls_artifacts(result) if result.task == "cls" else write_seg_artifacts(result)


def result_table(result: EvalResult) -> Table:
    return cls_table(result) if result.task == "cls" else seg_table(result)
