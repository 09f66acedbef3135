"""Write RESULTS.md from cross-validation folders (used by examples/results_breast.sh).

Usage: python examples/write_results.py OUT.md --seconds S --commands FILE LABEL=CV_DIR ...

Each CV_DIR holds summary.json from `breastus cv`. The table puts the reference study's numbers
(one 27-image test split) beside breastus's 5-fold pooled out-of-fold numbers with 95%
bootstrap CIs, and the majority-class baseline that the reference test set could not rule out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

REFERENCE = [
    ("MobileNetV2 (reference study)", "0.630 (27 test images)", "n/r", "0.45 (both models)", "n/r"),
    ("ResNet50 (reference study)", "0.667 (27 test images)", "n/r", "0.45 (both models)", "n/r"),
    ("U-Net EfficientNetB2 (reference study)", "", "", "", "IoU 0.629 (test)"),
]


def _fmt(row: dict | None, digits: int = 3) -> str:
    if not row or row.get("pooled") is None:
        return "n/a"
    text = f"{row['pooled']:.{digits}f}"
    if row.get("ci"):
        text += f" ({row['ci'][0]:.{digits}f}–{row['ci'][1]:.{digits}f})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", help="LABEL=CV_DIR")
    parser.add_argument("--seconds", type=float, default=None, help="wall time of the script")
    parser.add_argument("--commands", type=Path, default=None, help="file with the commands run")
    args = parser.parse_args()

    lines = ["# Results on BrEaST-Lesions_USG", "",
             "Data: BrEaST-Lesions_USG (Pawłowska et al., Scientific Data 2024; TCIA, "
             "DOI 10.7937/9WKK-Q141; CC BY 4.0): the 252 cases with a tumor mask (154 benign, "
             "98 malignant). breastus numbers are pooled over the out-of-fold predictions of a "
             "case-level stratified 5-fold cross-validation (every case scored once, by a model "
             "that never saw it), with 95% percentile-bootstrap CIs over cases; the reference "
             "numbers come from one 27-image test split.", "",
             "| model | accuracy | AUC | sensitivity | specificity | Dice / IoU |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {acc} | {auc} | {sens} | {spec} | {seg} |"
              for name, acc, auc, sens, spec, seg in REFERENCE]
    baseline = None
    for item in args.runs:
        label, folder = item.split("=", 1)
        summary = json.loads((Path(folder) / "summary.json").read_text())
        m = summary["metrics"]
        if summary["task"] == "cls":
            baseline = summary.get("majority_baseline_accuracy", baseline)
            lines.append(f"| {label} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('auc'))} | "
                         f"{_fmt(m.get('sensitivity'))} | {_fmt(m.get('specificity'))} | |")
        else:
            lines.append(f"| {label} | | | | | Dice {_fmt(m.get('dice'))}, "
                         f"IoU {_fmt(m.get('iou'))} |")
    if baseline is not None:
        lines.append(f"| always 'benign' (majority class) | {baseline:.3f} | 0.500 | 0.000 | "
                     "1.000 | |")
    lines += ["", f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
              f"cores, no GPU; Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}."]
    if args.seconds is not None:
        lines.append(f"Wall time of the whole script: {args.seconds / 60:.1f} minutes.")
    if args.commands and args.commands.is_file():
        lines += ["", "## Commands", "", "```bash", args.commands.read_text().strip(), "```"]
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
