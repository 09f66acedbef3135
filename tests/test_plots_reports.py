"""Plots write valid PNGs; the report writer writes report.md and report.html."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastus_cli.reports import plots
from breastus_cli.reports.report import format_ci, write_report


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert image.width > 100 and image.height > 100
    # atomic writes leave no temporary sibling behind
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=120)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def test_classification_plots(tmp_path: Path, scores) -> None:
    y, p = scores
    assert_png(plots.confusion_matrix_png([[40, 10], [5, 65]], ["benign", "malignant"],
                                          tmp_path / "confusion_matrix.png"))
    assert_png(plots.roc_png(y, p, tmp_path / "roc.png", auc=0.81, ci=(0.74, 0.88),
                             operating_point=(0.9, 0.6)))
    assert_png(plots.pr_png(y, p, tmp_path / "pr.png"))
    assert_png(plots.calibration_png(y, p, tmp_path / "calibration.png", n_bins=8))


def test_plots_survive_a_single_class(tmp_path: Path) -> None:
    y = np.zeros(10, dtype=int)
    p = np.linspace(0, 1, 10)
    assert_png(plots.roc_png(y, p, tmp_path / "roc.png"))
    assert_png(plots.pr_png(y, p, tmp_path / "pr.png"))
    assert_png(plots.confusion_matrix_png([[0, 0], [3, 7]], ["benign", "malignant"],
                                          tmp_path / "cm.png"))


@pytest.mark.filterwarnings("error")
def test_overlay(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(96, 128), dtype=np.uint8)
    truth = np.zeros((96, 128), dtype=bool)
    truth[20:60, 30:80] = True
    pred = np.zeros_like(truth)
    pred[25:65, 35:90] = True
    assert_png(plots.overlay_png(image, truth, pred, tmp_path / "overlay.png", title="case 001"))
    # empty prediction, no truth, lesion touching the border: no warnings, still a PNG
    edge = np.zeros_like(truth)
    edge[:10, :10] = True
    assert_png(plots.overlay_png(image, edge, np.zeros_like(truth), tmp_path / "o2.png", "empty"))
    assert_png(plots.overlay_png(image, None, pred, tmp_path / "o3.png", None))
    with pytest.raises(ValueError, match="shape"):
        plots.overlay_png(image, truth[:10], pred, tmp_path / "bad.png")


def test_history(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "epoch": [0, 1, 2, 3], "loss": [0.9, 0.7, 0.6, 0.5], "val_loss": [1.0, 0.8, 0.75, 0.8],
        "auc": [0.6, 0.7, 0.8, 0.85], "val_auc": [0.55, 0.65, 0.7, 0.68],
        "lr": [1e-3] * 4, "seconds": [3.0, 2.5, 2.5, 2.4],
    })
    assert_png(plots.history_png(frame, tmp_path / "history.png"))
    seg = {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5], "iou": [0.4, 0.5], "val_iou": [0.3, 0.45]}
    assert_png(plots.history_png(seg, tmp_path / "history_seg.png"))


def test_figures_do_not_accumulate(tmp_path: Path, scores) -> None:
    # pyplot is never involved, so no figure is left registered after many plots
    y, p = scores
    for i in range(3):
        plots.roc_png(y, p, tmp_path / f"roc{i}.png")
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_importing_plots_is_cheap() -> None:
    code = ("import sys, breastus_cli.reports.plots, breastus_cli.reports.report, "
            "breastus_cli.engine.stats.metrics, breastus_cli.engine.stats.seg_metrics; "
            "heavy = [m for m in ('matplotlib', 'sklearn', 'tensorflow', 'scipy') "
            "if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_ci() -> None:
    assert format_ci(0.8423, [0.7712, 0.9031]) == "0.842 (95% CI 0.771\u20130.903)"
    assert format_ci(0.8423, None) == "0.842"
    assert format_ci(0.8423, [None, None]) == "0.842"
    assert format_ci(None, [0.1, 0.2]) == "n/a"
    assert format_ci(0.5, (0.4, 0.6), digits=1) == "0.5 (95% CI 0.4\u20130.6)"
    assert format_ci(0.5, (0.4, 0.6), level=0.9).startswith("0.500 (90% CI")


def test_write_report(tmp_path: Path, scores) -> None:
    y, p = scores
    out = tmp_path / "eval-test"
    plots.roc_png(y, p, out / "roc.png")
    command = "breastus evaluate runs/cls/x --split test --threshold 0.42"
    md_path, html_path = write_report(
        out,
        title="Evaluation <test>",
        summary_rows=[("AUC", format_ci(0.842, [0.771, 0.903])),
                      ("Sensitivity | malignant", "0.900")],
        sections=[("Per class", "Counts by class.\n\n| class | n |\n|---|---|\n| benign | 60 |\n"
                                "| malignant | 60 |\n\n- a bullet with `code`\n\n"
                                "<script>x</script>")],
        figures=[("roc.png", "ROC curve")],
        command=command,
        notes=["Threshold chosen on validation."],
    )
    assert md_path == out / "report.md" and html_path == out / "report.html"
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Evaluation <test>")
    assert "| AUC | 0.842 (95% CI 0.771\u20130.903) |" in md
    assert "Sensitivity \\| malignant" in md  # a pipe in a cell must not split it
    assert "![ROC curve](roc.png)" in md
    assert md.rstrip().endswith(f"## Reproduce\n\n```bash\n{command}\n```")

    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert '<img src="roc.png"' in page
    assert '<table class="summary">' in page and "<td>AUC</td>" in page
    assert "<th>class</th>" in page and "<td>benign</td>" in page  # the section's pipe table
    assert "<li>a bullet with <code>code</code></li>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Evaluation &lt;test&gt;" in page
    tail = page[page.rindex("<h2>"):]
    assert tail.startswith("<h2>Reproduce</h2>") and command in tail
    assert not [f for f in out.iterdir() if f.name.startswith(".")]


def test_write_report_minimal_and_checks(tmp_path: Path) -> None:
    md_path, html_path = write_report(tmp_path, title="Empty", summary_rows=[])
    assert "## Reproduce" in md_path.read_text() and "not recorded" in html_path.read_text()
    with pytest.raises(ValueError, match="file, caption"):
        write_report(tmp_path, title="x", summary_rows=[], figures=[("ROC curve", "roc.png")])
    with pytest.raises(ValueError, match="relative"):
        write_report(tmp_path, title="x", summary_rows=[], figures=[("/tmp/roc.png", "ROC")])
