"""Matplotlib figures for evaluation reports; each function writes one PNG atomically.

matplotlib is imported inside the functions, so importing this module costs nothing. Figures are
built with the object-oriented API (``matplotlib.figure.Figure`` drawn by the Agg canvas), not
with ``pyplot``: no window can ever open (on a cluster node without a display, under Slurm, in a
test), nothing is registered in pyplot's global figure list, so a loop over thousands of
overlays does not grow memory, and the process-wide backend of a caller (for example a notebook)
is left alone. The figure is explicitly cleared after saving anyway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastus_cli.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
TRUTH_COLOR = "#00e000"  # green
PRED_COLOR = "#ff00ff"  # magenta: distinguishable from green also for red-green colour blindness


def _figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A figure bound to the Agg canvas, outside pyplot's registry."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str], tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and release its artists."""
    try:
        with atomic_path(path) as tmp:
            # bbox_inches="tight": long tick labels are never clipped at the figure edge. It
            # costs a second draw, so the axis-free overlays (one per image in predict) skip it.
            extra = {"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}
            fig.savefig(tmp, format="png", dpi=DPI, **extra)
    finally:
        fig.clear()
    return Path(path)


def _binary_inputs(y_true: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int8).ravel()
    s = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and p differ in length: {y.size} vs {s.size}")
    return y, s


def _undefined(ax: Axes, message: str) -> None:
    """Mark a panel as undefined instead of failing the whole report."""
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11,
            transform=ax.transAxes, bbox={"boxstyle": "round", "fc": "#fff3cd", "ec": "#b58900"})


def confusion_matrix_png(
    cm: Sequence[Sequence[int]] | np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix (rows = true class, columns = predicted) with counts and row percentages.

    Row percentages are per true class, so the diagonal reads as each class's recall
    (specificity for benign, sensitivity for malignant).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(labels) != k:
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(labels)} labels")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, cm / np.where(rows > 0, rows, 1), 0.0)

    fig = _figure(1.6 * k + 2.4, 1.4 * k + 1.8)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            text = f"{cm[i, j]}\n({share[i, j] * 100:.1f}%)" if rows[i, 0] else f"{cm[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=12,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels=list(labels))
    ax.set_yticks(range(k), labels=[f"{lab}\n(n={int(n)})" for lab, n in zip(labels, rows[:, 0])])
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return _save(fig, path)


def roc_png(
    y_true: Any,
    p: Any,
    path: str | os.PathLike[str],
    auc: float | None = None,
    ci: Sequence[float] | None = None,
    operating_point: tuple[float, float] | None = None,
    title: str = "ROC curve (malignant = positive)",
) -> Path:
    """ROC curve with the chance diagonal; the legend gives AUC (and its CI when given).

    ``operating_point`` = (sensitivity, specificity) at the chosen threshold, drawn as a marker.
    With a single class present the ROC is undefined: the figure says so instead of failing.
    """
    y, s = _binary_inputs(y_true, p)
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if 0 < y.sum() < y.size:
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(y, s)
        auc = float(roc_auc_score(y, s)) if auc is None else float(auc)
        label = f"AUC {auc:.3f}"
        if ci is not None and None not in ci:
            label += f" (95% CI {ci[0]:.3f}\u2013{ci[1]:.3f})"
        ax.plot(fpr, tpr, color="#1f5fa8", linewidth=2, label=label)
        if operating_point is not None:
            sens, spec = operating_point
            if sens is not None and spec is not None:
                ax.plot([1 - spec], [sens], marker="o", markersize=9, color="#d62728",
                        linestyle="none",
                        label=f"operating point (sens {sens:.2f}, spec {spec:.2f})")
    else:
        _undefined(ax, "ROC undefined:\nonly one class present")
    return _save_roc(fig, ax, title, path)


def _save_roc(fig: Any, ax: Any, title: str, path: Path) -> Path:
    """The ROC axes every ROC plot shares (unit square, labels, grid, legend), then save."""
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 \u2212 specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def pr_png(
    y_true: Any, p: Any, path: str | os.PathLike[str],
    title: str = "Precision-recall (malignant = positive)",
) -> Path:
    """Precision-recall curve with average precision and the prevalence baseline (a classifier
    that guesses has precision equal to the share of malignant cases)."""
    y, s = _binary_inputs(y_true, p)
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    if y.sum() > 0:
        from sklearn.metrics import average_precision_score, precision_recall_curve

        precision, recall, _ = precision_recall_curve(y, s)
        ap = float(average_precision_score(y, s))
        ax.plot(recall, precision, drawstyle="steps-post", color="#1f5fa8", linewidth=2,
                label=f"AP {ap:.3f}")
        prevalence = float(y.mean())
        ax.axhline(prevalence, linestyle="--", color="grey", linewidth=1,
                   label=f"prevalence baseline {prevalence:.3f}")
        ax.legend(loc="lower left", fontsize=9)
    else:
        _undefined(ax, "Precision-recall undefined:\nno malignant case")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def calibration_png(
    y_true: Any, p: Any, path: str | os.PathLike[str], n_bins: int = 10,
    title: str = "Calibration (reliability diagram)",
) -> Path:
    """Reliability diagram: observed fraction malignant against mean predicted probability in
    ``n_bins`` equal-width bins, the perfect-calibration diagonal, and a count histogram below
    (a bin with few cases is noisy; the counts say how much to trust each point)."""
    y, s = _binary_inputs(y_true, p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # the same equal-width bins as calibration_curve(strategy="uniform"), for the count histogram
    counts = np.histogram(s, bins=edges)[0]
    if y.size and np.unique(y).size == 2:
        frac_y, mean_p = calibration_curve(y, s, n_bins=n_bins, strategy="uniform")
    else:  # calibration_curve needs both classes; one class: observed fraction is 0 or 1
        filled = counts > 0
        which = np.clip(np.digitize(s, edges[1:-1]), 0, n_bins - 1)
        mean_p = (np.bincount(which, weights=s, minlength=n_bins)[filled] / counts[filled])
        frac_y = np.full(mean_p.shape, float(y[0]) if y.size else 0.0)
    brier = float(np.mean((s - y) ** 2)) if y.size else float("nan")

    fig = _figure(5.6, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1,
             label="perfectly calibrated")
    top.plot(mean_p, frac_y, marker="o", color="#1f5fa8", linewidth=2,
             label=f"model (Brier {brier:.3f})")
    top.set_xlim(0, 1)
    top.set_ylim(-0.01, 1.01)
    top.set_ylabel("Observed fraction malignant")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#9bbbd9",
               edgecolor="#1f5fa8")
    bottom.set_xlabel("Mean predicted probability of malignancy")
    bottom.set_ylabel("Cases")
    return _save(fig, path)


def _grey(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise ValueError(f"image must be H x W (or H x W x 3), got shape {arr.shape}")
    return arr


def _contour(ax: Axes, mask: np.ndarray, color: str) -> bool:
    """Draw the 0.5 contour of ``mask``; False (nothing drawn) for an empty or full mask,
    where matplotlib would warn that no contour level was found."""
    m = np.asarray(mask).astype(bool)
    if not m.any() or m.all():
        return False
    # Pad by one pixel so a lesion touching the image edge still gets a closed outline.
    padded = np.pad(m.astype(np.float32), 1)
    ys = np.arange(-1, m.shape[0] + 1)
    xs = np.arange(-1, m.shape[1] + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=[color], linewidths=1.5)
    return True


def overlay_png(
    image_uint8: Any,
    truth_bool: Any | None,
    pred_bool: Any | None,
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Grey image with the truth outline (green) and the predicted outline (magenta).

    Either mask may be None (``predict`` has no truth). The legend says when a mask is empty.
    """
    from matplotlib.lines import Line2D

    grey = _grey(image_uint8)
    h, w = grey.shape
    for name, m in (("truth", truth_bool), ("pred", pred_bool)):
        if m is not None and np.shape(m) != (h, w):
            raise ValueError(f"{name} mask shape {np.shape(m)} differs from image shape {(h, w)}")
    scale = 6.0 / max(h, w)
    fig = _figure(max(w * scale, 2.5), max(h * scale, 2.5) + (0.4 if title else 0.0))
    ax = fig.add_subplot()
    vmax = 255 if grey.max() > 1 else 1
    ax.imshow(grey, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    handles = []
    layers = (("truth", truth_bool, TRUTH_COLOR), ("prediction", pred_bool, PRED_COLOR))
    for name, mask, color in layers:
        if mask is None:
            continue
        drawn = _contour(ax, mask, color)
        label = name if drawn or np.asarray(mask).any() else f"{name} (empty)"
        handles.append(Line2D([], [], color=color, linewidth=2, label=label))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.7)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, tight=False)


_NOT_METRICS = {"epoch", "lr", "learning_rate", "seconds", "time", "epoch_seconds", "step"}


def _history_columns(history: Any) -> dict[str, list[float]]:
    """Numeric columns of a DataFrame or mapping as lists of floats (others are skipped)."""
    if hasattr(history, "columns") and hasattr(history, "__getitem__"):  # a pandas DataFrame
        raw = {str(c): list(history[c]) for c in history.columns}
    elif isinstance(history, Mapping):
        raw = {str(k): list(v) for k, v in history.items()}
    else:
        raise ValueError("history must be a DataFrame or a mapping of column -> list of values")
    cols: dict[str, list[float]] = {}
    for name, values in raw.items():
        try:
            cols[name] = [float(v) for v in values]
        except (TypeError, ValueError):
            continue  # a text column (e.g. a timestamp) is not a curve
    return cols


def history_png(
    history: Any, path: str | os.PathLike[str], title: str = "Training history"
) -> Path:
    """One panel per monitored quantity (loss, auc, iou, ...), train and ``val_`` curves per epoch.

    ``history`` is a DataFrame (history.csv) or a mapping of column -> values; columns such as
    ``epoch``, ``lr`` and ``seconds`` are not plotted. The best validation epoch is marked.
    """
    cols = _history_columns(history)
    n_rows = max((len(v) for v in cols.values()), default=0)
    epochs = cols["epoch"] if "epoch" in cols else list(range(1, n_rows + 1))
    if "epoch" in cols and min(epochs, default=1) == 0:
        epochs = [e + 1 for e in epochs]  # Keras CSVLogger counts from 0; people count from 1
    bases: list[str] = []
    for name in cols:
        base = name[4:] if name.startswith("val_") else name
        if base not in _NOT_METRICS and base not in bases:
            bases.append(base)
    bases = sorted(bases, key=lambda b: b != "loss")  # loss first, then as given (stable sort)

    n = max(len(bases), 1)
    n_cols = min(n, 3)
    n_rows_grid = (n + n_cols - 1) // n_cols
    fig = _figure(4.2 * n_cols, 3.4 * n_rows_grid)
    axes = np.atleast_1d(fig.subplots(n_rows_grid, n_cols, squeeze=False)).ravel()
    if not bases:
        _undefined(axes[0], "no metric columns in history")
    for ax, base in zip(axes, bases):
        for name, style, label in ((base, "-", "train"), (f"val_{base}", "--", "validation")):
            if name in cols:
                values = cols[name]
                ax.plot(epochs[: len(values)], values, linestyle=style, marker=".", label=label)
        val = cols.get(f"val_{base}")
        if val:
            arr = np.asarray(val, dtype=np.float64)
            if np.isfinite(arr).any():
                best = int(np.nanargmin(arr) if "loss" in base else np.nanargmax(arr))
                ax.axvline(epochs[best], color="grey", linewidth=0.8, linestyle=":",
                           label=f"best val (epoch {epochs[best]:g})")
        ax.set_title(base)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(base)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(bases) if bases else 1:]:
        ax.set_axis_off()
    fig.suptitle(title)
    return _save(fig, path)


def sweep_grid_png(rows: Sequence[dict[str, Any]], metric: str, path: str | os.PathLike[str],
                   title: str | None = None) -> Path:
    """The reference study's sweep plot: ``metric`` against learning rate (log x), one line per
    epoch count."""
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    epochs = sorted({int(r["epochs"]) for r in rows})
    for e in epochs:
        points = sorted((float(r["lr"]), float(r[metric])) for r in rows
                        if int(r["epochs"]) == e and r.get(metric) == r.get(metric))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{e} epochs")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric)
    ax.set_title(title or f"Sweep: {metric} by learning rate and epochs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def sweep_heatmap_png(rows: Sequence[dict[str, Any]], metric: str,
                      path: str | os.PathLike[str]) -> Path:
    """``metric`` over the learning-rate x epochs grid, the best cell outlined."""
    lrs = sorted({float(r["lr"]) for r in rows})
    epochs = sorted({int(r["epochs"]) for r in rows})
    grid = np.full((len(epochs), len(lrs)), np.nan)
    for r in rows:
        value = r.get(metric)
        if value is not None and value == value:
            grid[epochs.index(int(r["epochs"])), lrs.index(float(r["lr"]))] = float(value)
    fig = _figure(1.2 + 0.9 * len(lrs), 1.2 + 0.6 * len(epochs))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs], rotation=45)
    ax.set_yticks(range(len(epochs)), [str(e) for e in epochs])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("epochs")
    for i in range(len(epochs)):
        for j in range(len(lrs)):
            if grid[i, j] == grid[i, j]:
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white")
    if np.isfinite(grid).any():
        best = np.unravel_index(np.nanargmax(grid) if not metric.endswith("loss")
                                else np.nanargmin(grid), grid.shape)
        ax.add_patch(_rectangle(best))
    ax.set_title(f"Sweep: {metric}")
    return _save(fig, path)


def _rectangle(cell: tuple[int, ...]) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((cell[1] - 0.5, cell[0] - 0.5), 1, 1, fill=False, edgecolor="red", lw=2)


def paired_roc_png(
    y_true: Any,
    scores: Mapping[str, Any],
    path: str | os.PathLike[str],
    title: str = "ROC curves on the same cases (malignant = positive)",
) -> Path:
    """Several models' ROC curves on the same cases, one colour each; ``scores`` maps a legend
    label (e.g. 'A: run-name, AUC 0.812') to that model's p(malignant) of every case."""
    from sklearn.metrics import roc_curve

    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    colours = ("#1f5fa8", "#d62728", "#2ca02c", "#9467bd")
    for i, (label, p) in enumerate(scores.items()):
        y, s = _binary_inputs(y_true, p)
        if not 0 < y.sum() < y.size:
            _undefined(ax, "ROC undefined:\nonly one class present")
            break
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, color=colours[i % len(colours)], linewidth=2, label=label)
    return _save_roc(fig, ax, title, path)
