"""Every chart reconad draws, in one consistent style, written as PNG files.

Each public function takes plain NumPy data (never a run directory: that is
:mod:`reconad.report`'s job), writes one PNG atomically and returns its path. matplotlib is
imported inside the functions, with the Agg backend, so ``import reconad`` stays fast. The
image grids (reconstructions, gallery) live in :mod:`reconad.pictures` and share this
module's style helpers.

Plots never fail on awkward data: a group of one image, all scores equal, or a set without
anomalies (the plots that need anomalies then draw a short explanation instead of a curve).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reconad.files import atomic_file

NORMAL_COLOR = "#3b75af"
ANOMALY_COLOR = "#c8403a"
# Anomaly groups (normal is always NORMAL_COLOR) and threshold methods have separate colour
# cycles, so a threshold line is never mistaken for a group; the chosen threshold is bolder.
PALETTE = ["#c8403a", "#e08b2c", "#a0522d", "#d4a017", "#e377c2", "#8c564b"]
THRESHOLD_COLORS = ["#6a3d9a", "#1b9e77", "#5a9e4b", "#b3528f", "#7a6a55", "#17becf", "#444444"]
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]
DPI = 110

_STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "font.size": 10,
}


@contextmanager
def _figure(out_path: str | Path, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``(fig, axes)`` like ``plt.subplots`` in the house style, then save atomically.

    Figures are made without pyplot, so drawing never changes the user's backend or leaves
    figures open in a notebook.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_STYLE):
        figsize = kwargs.pop("figsize", None)
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(*args, **kwargs)
        yield fig, axes
        # The PNG's Description says what the plot states in words (a message instead
        # of a curve, AUROC...), for people and tests that read the file.
        meta = {"Software": "reconad", "Description": getattr(fig, "reconad_note", "")}
        with atomic_file(out_path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata=meta)


def _message(ax: Any, text: str) -> None:
    """Replace an axis' content by a centred explanation (used when a plot cannot be drawn)."""
    _note(ax.figure, text)
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="#555555",
            transform=ax.transAxes)


def _note(fig: Any, text: str) -> None:
    """Add a sentence to the PNG's Description metadata."""
    fig.reconad_note = " ".join(filter(None, [getattr(fig, "reconad_note", ""), text]))


def operating_points(
    scores: np.ndarray, is_anomaly: np.ndarray, thresholds: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """TPR, FPR and precision of each threshold when flagging ``score > value``.

    Args:
        scores: (N,) anomaly scores.
        is_anomaly: (N,) 0/1 ground truth.
        thresholds: method -> value.

    Returns:
        method -> ``{"tpr", "fpr", "precision"}``; a rate without images to count is NaN and
        precision with nothing flagged is 1 (the end of sklearn's precision-recall curve).
    """
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(is_anomaly).astype(bool)
    out = {}
    for name, value in thresholds.items():
        flagged = scores > value
        out[name] = {
            "tpr": float(flagged[y].mean()) if y.any() else float("nan"),
            "fpr": float(flagged[~y].mean()) if (~y).any() else float("nan"),
            "precision": float(y[flagged].mean()) if flagged.any() else 1.0,
        }
    return out


def _finite(scores: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop non-finite scores (a diverged model) from scores and the arrays aligned with them."""
    keep = np.isfinite(scores)
    return (scores[keep], *(o[keep] for o in others))


def _omitted_note(n_omitted: int) -> str:
    return f" ({n_omitted} non-finite scores omitted)" if n_omitted else ""


def _threshold_style(i: int, name: str, chosen: str | None) -> dict[str, Any]:
    emphasised = name == chosen
    return {
        "color": THRESHOLD_COLORS[i % len(THRESHOLD_COLORS)],
        "linewidth": 2.6 if emphasised else 1.1,
        "linestyle": "-" if emphasised else "--",
        "alpha": 1.0 if emphasised else 0.8,
        "zorder": 5 if emphasised else 3,
    }


def _legend_below(ax: Any) -> None:
    """A legend under the axes: with seven thresholds it would cover the data inside."""
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2 if n > 3 else n,
              columnspacing=1.2, handlelength=1.8)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def learning_curve(
    epochs: np.ndarray,
    train_loss: np.ndarray,
    val_loss: np.ndarray,
    out_path: str | Path,
    best_epoch: int | None = None,
) -> Path:
    """Train and validation loss per epoch, with the best (early-stopping) epoch marked.

    Args:
        epochs: (E,) epoch numbers, starting at 1.
        train_loss: (E,) mean training loss per epoch.
        val_loss: (E,) validation loss per epoch; NaN where there was none.
        out_path: PNG to write.
        best_epoch: the epoch whose weights were kept, or None.

    Returns:
        ``out_path`` as a Path.
    """
    epochs, train_loss, val_loss = (np.asarray(a, dtype=float) for a in (epochs, train_loss,
                                                                          val_loss))
    with _figure(out_path, figsize=(6.4, 4.0)) as (fig, ax):
        if epochs.size == 0:
            _message(ax, "No epochs were recorded (history.csv is empty).")
            return Path(out_path)
        ax.plot(epochs, train_loss, marker="o", markersize=3.5, color=NORMAL_COLOR,
                label="train")
        if np.isfinite(val_loss).any():
            ax.plot(epochs, val_loss, marker="o", markersize=3.5, color="#e08b2c",
                    label="validation")
        if best_epoch is not None and best_epoch in set(epochs.astype(int).tolist()):
            i = int(np.flatnonzero(epochs.astype(int) == best_epoch)[0])
            ax.axvline(best_epoch, color="#555555", linestyle=":", linewidth=1.2)
            y = val_loss[i] if np.isfinite(val_loss[i]) else train_loss[i]
            _note(fig, f"best epoch {best_epoch}")
            ax.plot([best_epoch], [y], marker="*", markersize=14, color="#222222",
                    linestyle="none", zorder=6,
                    label=f"best epoch {best_epoch} ({_fmt(y)})")
        losses = np.concatenate([train_loss, val_loss])
        losses = losses[np.isfinite(losses)]
        # Losses often fall by orders of magnitude in the first epochs: log scale keeps the
        # tail readable.
        if losses.size and losses.min() > 0 and losses.max() / losses.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (per image, mean over batch)")
        ax.set_title("Learning curve")
        if epochs.size <= 20:
            ax.set_xticks(epochs.astype(int))
        ax.legend()
    return Path(out_path)


def _bins(values: np.ndarray, n: int = 50) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:  # all scores equal: a narrow window around the single value
        pad = max(abs(lo) * 0.05, 1e-6)
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, n + 1)


def score_distributions(
    scores: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    thresholds: Mapping[str, float],
    out_path: str | Path,
    chosen: str | None = None,
    normal_group: str = "normal",
    title: str = "Score distributions",
) -> Path:
    """One density histogram per group with a vertical line per threshold, the chosen one bold.

    Args:
        scores: (N,) anomaly scores (higher = more anomalous).
        groups: (N,) group name of each score (``normal``, ``class 8``, ``gaussian``...).
        thresholds: threshold method -> value.
        out_path: PNG to write.
        chosen: the method applied to the evaluation sets; drawn thicker.
        normal_group: the group drawn in the normal colour, first.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    scores = np.asarray(scores, dtype=float)
    groups = np.asarray(groups, dtype=str)
    n_all = scores.size
    scores, groups = _finite(scores, groups)
    with _figure(out_path, figsize=(6.2, 4.8)) as (fig, ax):
        if scores.size == 0:
            _message(ax, "No finite scores to show.")
            return Path(out_path)
        names = sorted(set(groups.tolist()), key=lambda g: (g != normal_group, g))
        # Thresholds far outside the scores would squash the histograms: widen the range to
        # include them, as the point of the plot is where they fall.
        finite_t = [v for v in thresholds.values() if np.isfinite(v)]
        bins = _bins(np.concatenate([scores, finite_t]))
        for i, name in enumerate(names):
            s = scores[groups == name]
            color = NORMAL_COLOR if name == normal_group else PALETTE[(i - 1) % len(PALETTE)]
            # Density, so that 8,000 normals and 1,000 anomalies are comparable.
            ax.hist(s, bins=bins, density=True, histtype="stepfilled", alpha=0.3, color=color)
            ax.hist(s, bins=bins, density=True, histtype="step", linewidth=1.3, color=color,
                    label=f"{name} (n={s.size})")
        for i, (name, value) in enumerate(thresholds.items()):
            if not np.isfinite(value):
                continue
            label = f"{name} = {_fmt(value)}" + (" (chosen)" if name == chosen else "")
            ax.axvline(value, label=label, **_threshold_style(i, name, chosen))
        ax.set_xlabel("anomaly score (higher = more anomalous)")
        ax.set_ylabel("density")
        note = _omitted_note(n_all - scores.size)
        if scores.min() == scores.max():
            note += f"\n(all {scores.size} scores equal {_fmt(scores[0])})"
            _note(fig, f"All {scores.size} scores are equal.")
        ax.set_title(title + note)
        _legend_below(ax)
    return Path(out_path)


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def _need_both_message(kind: str, y: np.ndarray) -> str:
    missing = "anomalies" if int(y.sum()) == 0 else "normal images"
    return f"No {missing} in this set: the {kind} needs both normal and anomalous images."


def roc_curve(
    scores: np.ndarray,
    is_anomaly: np.ndarray,
    thresholds: Mapping[str, float],
    out_path: str | Path,
    chosen: str | None = None,
    title: str = "ROC curve",
) -> Path:
    """ROC curve with AUROC in the legend and each threshold's operating point marked.

    A threshold flags ``score > value``; its point is computed from the scores, so it lies on
    the curve.

    Args:
        scores: (N,) anomaly scores.
        is_anomaly: (N,) 0/1 ground truth.
        thresholds: threshold method -> value.
        out_path: PNG to write.
        chosen: the emphasised method.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    scores = np.asarray(scores, dtype=float)
    y = np.asarray(is_anomaly).astype(int)
    n_all = scores.size
    scores, y = _finite(scores, y)
    with _figure(out_path, figsize=(5.6, 5.0)) as (fig, ax):
        if not _both_classes(y):
            _message(ax, _need_both_message("ROC curve", y))
            return Path(out_path)
        fpr, tpr, _ = sk_roc_curve(y, scores)
        auroc = roc_auc_score(y, scores)
        ax.plot(fpr, tpr, color="#222222", linewidth=1.8, label=f"ROC (AUROC = {auroc:.4f})")
        ax.plot([0, 1], [0, 1], color="#aaaaaa", linestyle=":", linewidth=1, label="chance")
        _note(fig, f"AUROC={auroc:.6f}")
        for i, (name, p) in enumerate(operating_points(scores, y, thresholds).items()):
            _mark(ax, i, name, chosen, p["fpr"], p["tpr"],
                  f"{name}: TPR {p['tpr']:.3f}, FPR {p['fpr']:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (normals flagged)")
        ax.set_ylabel("true positive rate (anomalies flagged)")
        ax.set_title(title + _omitted_note(n_all - scores.size))
        _legend_below(ax)
    return Path(out_path)


def _mark(ax: Any, i: int, name: str, chosen: str | None, x: float, y: float,
          label: str) -> None:
    emphasised = name == chosen
    ax.plot([x], [y], linestyle="none", marker=MARKERS[i % len(MARKERS)],
            markersize=11 if emphasised else 7,
            color=THRESHOLD_COLORS[i % len(THRESHOLD_COLORS)],
            markeredgecolor="black" if emphasised else "white", markeredgewidth=1.2,
            zorder=6 if emphasised else 4, label=label + (" (chosen)" if emphasised else ""))


def precision_recall_curve(
    scores: np.ndarray,
    is_anomaly: np.ndarray,
    thresholds: Mapping[str, float],
    out_path: str | Path,
    chosen: str | None = None,
    title: str = "Precision-recall curve",
) -> Path:
    """Precision-recall curve with average precision in the legend and the operating points.

    Args:
        scores: (N,) anomaly scores.
        is_anomaly: (N,) 0/1 ground truth.
        thresholds: threshold method -> value (flag = ``score > value``).
        out_path: PNG to write.
        chosen: the emphasised method.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    from sklearn.metrics import average_precision_score
    from sklearn.metrics import precision_recall_curve as sk_pr_curve

    scores = np.asarray(scores, dtype=float)
    y = np.asarray(is_anomaly).astype(int)
    n_all = scores.size
    scores, y = _finite(scores, y)
    with _figure(out_path, figsize=(5.6, 5.0)) as (fig, ax):
        if not _both_classes(y):
            _message(ax, _need_both_message("precision-recall curve", y))
            return Path(out_path)
        precision, recall, _ = sk_pr_curve(y, scores)
        ap = average_precision_score(y, scores)
        ax.step(recall, precision, where="post", color="#222222", linewidth=1.8,
                label=f"PR (AP = {ap:.4f})")
        ax.axhline(y.mean(), color="#aaaaaa", linestyle=":", linewidth=1,
                   label=f"chance ({y.mean():.3f})")
        _note(fig, f"AP={ap:.6f}")
        for i, (name, p) in enumerate(operating_points(scores, y, thresholds).items()):
            _mark(ax, i, name, chosen, p["tpr"], p["precision"],
                  f"{name}: P {p['precision']:.3f}, R {p['tpr']:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("recall (anomalies flagged)")
        ax.set_ylabel("precision (flagged that are anomalies)")
        ax.set_title(title + _omitted_note(n_all - scores.size))
        _legend_below(ax)
    return Path(out_path)


def confusion_matrix(
    tp: int, fp: int, tn: int, fn: int, out_path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """A 2x2 confusion matrix showing counts and row rates (TNR, FPR / FNR, TPR).

    Args:
        tp: anomalies flagged.
        fp: normals flagged.
        tn: normals not flagged.
        fn: anomalies not flagged.
        out_path: PNG to write.
        title: figure title (name the threshold in it).

    Returns:
        ``out_path`` as a Path.
    """
    counts = np.array([[tn, fp], [fn, tp]], dtype=float)  # rows: truth, columns: flagged
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)
    names = [["true negatives", "false positives"], ["false negatives", "true positives"]]
    with _figure(out_path, figsize=(5.0, 4.3)) as (fig, ax):
        # Colour by row rate, so that a rare anomaly class is as visible as the normals.
        ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0, vmax=1)
        for r in range(2):
            for c in range(2):
                rate = rates[r, c]
                rate_text = "n/a (row empty)" if np.isnan(rate) else f"{rate:.1%} of row"
                dark = not np.isnan(rate) and rate > 0.6
                ax.text(c, r, f"{names[r][c]}\n{int(counts[r, c]):,}\n{rate_text}",
                        ha="center", va="center", fontsize=10,
                        color="white" if dark else "#222222")
        ax.set_xticks([0, 1], ["not flagged", "flagged"])
        ax.set_yticks([0, 1], [f"normal (n={int(totals[0, 0]):,})",
                               f"anomaly (n={int(totals[1, 0]):,})"])
        ax.set_xlabel("prediction")
        ax.set_ylabel("truth")
        ax.grid(False)
        ax.set_title(title)
    return Path(out_path)


def class_boxplot(
    scores: np.ndarray,
    labels: np.ndarray,
    is_anomaly: np.ndarray,
    out_path: str | Path,
    title: str = "Scores per class",
) -> Path:
    """Box plot of scores per original class, normal and anomalous images side by side.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) original classes; -1 (unknown) is left out.
        is_anomaly: (N,) 0/1 ground truth.
        out_path: PNG to write.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    y = np.asarray(is_anomaly).astype(int)
    keep = np.isfinite(scores) & (labels >= 0)
    scores, labels, y = scores[keep], labels[keep], y[keep]
    classes = np.unique(labels)
    with _figure(out_path, figsize=(max(6.2, 0.45 * classes.size + 1.5), 4.8)) as (fig, ax):
        if classes.size == 0:
            _message(ax, "No labelled images: scores per class need labels.")
            return Path(out_path)
        for truth, color, offset, name in [(0, NORMAL_COLOR, -0.18, "normal"),
                                           (1, ANOMALY_COLOR, 0.18, "anomaly")]:
            data, pos = [], []
            for c, cls in enumerate(classes):
                s = scores[(labels == cls) & (y == truth)]
                if s.size:
                    data.append(s)
                    # Side by side only where a class has both normal and anomalous images.
                    mixed = np.unique(y[labels == cls]).size == 2
                    pos.append(c + (offset if mixed else 0.0))
            if not data:
                continue
            ax.boxplot(data, positions=pos, widths=0.32, patch_artist=True,
                       boxprops={"facecolor": color, "alpha": 0.45, "edgecolor": color},
                       medianprops={"color": "black"}, whiskerprops={"color": color},
                       capprops={"color": color},
                       flierprops={"marker": ".", "markersize": 3, "markeredgecolor": color})
            ax.plot([], [], color=color, linewidth=6, alpha=0.45, label=name)
        ax.set_xticks(range(classes.size), [str(c) for c in classes])
        ax.set_xlim(-0.7, classes.size - 0.3)
        ax.set_xlabel("original class (label)")
        ax.set_ylabel("anomaly score")
        ax.set_title(title)
        ax.legend()
    return Path(out_path)


def metric_bars(
    values: Mapping[str, Mapping[str, float | None]],
    out_path: str | Path,
    title: str = "Headline metrics",
) -> Path:
    """Grouped bars: one group per metric, one bar per run (missing values left out).

    Args:
        values: run label -> metric name -> value in [0, 1] (or None when not available).
        out_path: PNG to write.
        title: figure title.

    Returns:
        ``out_path`` as a Path.
    """
    runs = list(values)
    metrics: list[str] = []
    for run in runs:
        metrics += [m for m in values[run] if m not in metrics]
    width = 0.8 / max(len(runs), 1)
    with _figure(out_path, figsize=(max(6.0, 1.1 * len(metrics) * max(1, len(runs)) ** 0.5 + 2),
                                    4.4)) as (fig, ax):
        if not runs or not metrics:
            _message(ax, "No metrics to compare.")
            return Path(out_path)
        x = np.arange(len(metrics))
        for r, run in enumerate(runs):
            v = np.array([np.nan if values[run].get(m) is None else float(values[run][m])
                          for m in metrics])
            pos = x - 0.4 + width * (r + 0.5)
            bars = ax.bar(pos, np.nan_to_num(v), width=width * 0.92,
                          color=PALETTE[r % len(PALETTE)] if r else NORMAL_COLOR, label=run)
            for bar, value in zip(bars, v, strict=True):
                text = "n/a" if np.isnan(value) else f"{value:.3f}"
                ax.text(bar.get_x() + bar.get_width() / 2, (0 if np.isnan(value) else value)
                        + 0.01, text, ha="center", va="bottom", rotation=90, fontsize=7)
        ax.set_xticks(x, metrics)
        ax.set_ylim(0, 1.18)
        ax.set_ylabel("value (0 to 1)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(4, len(runs)))
    return Path(out_path)
