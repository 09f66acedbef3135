"""``breastus shift``'s plots and report (OUT/report.md, OUT/*.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli.atomic import write_text
from breastus_cli.reports.plots import _figure, _save

REPORT = "report.md"
PLOTS = {"ood": "ood_scores.png", "grey": "grey_levels.png", "measures": "measures.png"}
_LABELS = {"width": "width (px)", "height": "height (px)", "pixel_mm": "pixel spacing (mm)",
           "mean": "mean grey level", "contrast": "contrast (grey-level SD)",
           "frame_fraction": "ultrasound share of frame"}


def _ood_png(scores: dict[str, np.ndarray], path: Path) -> Path:
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    top = max(2.0, float(max(np.quantile(s, 0.99) for s in scores.values() if len(s))))
    bins = np.linspace(0, top, 40)
    for name, values in scores.items():
        ax.hist(np.clip(values, 0, top), bins=bins, alpha=0.5, density=True,
                label=f"{name} (n={len(values)})")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="in-domain limit")
    ax.set_xlabel("ood_score (1 = 95th percentile of the run's validation cases)")
    ax.set_ylabel("density")
    ax.legend()
    return _save(fig, path)


def _grey_png(histograms: dict[str, np.ndarray], path: Path) -> Path:
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    for name, hist in histograms.items():
        centres = (np.arange(len(hist)) + 0.5) * 256 / len(hist)
        ax.plot(centres, hist, label=name)
    ax.set_xlabel("grey level")
    ax.set_ylabel("share of pixels")
    ax.legend()
    return _save(fig, path)


def _measures_png(sets: dict[str, Any], path: Path) -> Path:
    names = list(_LABELS)
    fig = _figure(10, 6)
    axes = fig.subplots(2, 3)
    for ax, measure in zip(axes.ravel(), names):
        data, labels = [], []
        for name, stats in sets.items():
            values = np.asarray(getattr(stats, measure), np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                data.append(values)
                labels.append(name)
        if data:
            ax.boxplot(data, tick_labels=labels)
        else:
            ax.text(0.5, 0.5, "unknown", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_LABELS[measure], fontsize=9)
    return _save(fig, path)


def _cell(summary: dict[str, Any]) -> str:
    if not summary.get("n"):
        return "unknown"
    return f"{summary['median']:g} [{summary['p5']:g}, {summary['p95']:g}] (n={summary['n']})"


def write_report(out: Path, summary: dict[str, Any], sets: dict[str, Any],
                 scores: dict[str, np.ndarray]) -> Path:
    """OUT/report.md and its three plots."""
    _ood_png(scores, out / PLOTS["ood"])
    _grey_png({name: stats.histogram for name, stats in sets.items()}, out / PLOTS["grey"])
    _measures_png(sets, out / PLOTS["measures"])
    auc = summary.get("ood_auc_vs_validation")
    lines = [f"# Shift check: {summary['inputs']} against {summary['run']}", "",
             f"**Verdict:** {summary['verdict']}.", "",
             f"{summary['n_scans']} scan(s) read ({summary['n_errors']} unreadable), compared "
             f"with {summary['n_training_scans']} of the run's training scans; ood_score is the "
             "Mahalanobis distance of a scan's features to the training cases' (at several "
             "depths of the backbone, each level scaled by the training cases' own spread), "
             f"divided by its 95th percentile over the run's {summary['n_validation_cases']} "
             "validation cases (so about 5% of those score above 1).", "",
             "## ood_score", "",
             "| scans | median [5th, 95th percentile] | out of domain (> 1) |",
             "|---|---|---:|",
             f"| new | {_cell(summary['ood_score']['new'])} | {summary['out_of_domain']:.1%} |",
             f"| run's validation | {_cell(summary['ood_score']['validation'])} | "
             f"{summary['validation_out_of_domain']:.1%} |",
             f"| run's training | {_cell(summary['ood_score']['training'])} | "
             f"{summary['training_out_of_domain']:.1%} |", "",
             "AUC of ood_score, new scans against the run's validation cases: "
             + ("undefined" if auc is None else f"{auc:.3f}") + ".", "",
             f"![ood scores]({PLOTS['ood']})", "",
             "## Images", "", "| measure | new: median [5th, 95th] | training: median [5th, 95th] |",
             "|---|---|---|"]
    for measure, label in _LABELS.items():
        both = summary["measures"][measure]
        lines.append(f"| {label} | {_cell(both['new'])} | {_cell(both['training'])} |")
    lines += ["", "Ultrasound share of frame: the largest connected region brighter than grey "
              "level 12 (black borders, text and calipers outside it count out).", "",
              f"Grey-level histograms differ by {summary['histogram_distance']:.3f} (total "
              "variation distance, 0 = same, 1 = disjoint).", "",
              f"![grey levels]({PLOTS['grey']})", "", f"![measures]({PLOTS['measures']})", ""]
    if summary["errors"]:
        lines += ["## Unreadable files", ""] + [f"- {e['path']}: {e['reason']}"
                                                for e in summary["errors"]] + [""]
    return write_text(out / REPORT, "\n".join(lines))
