"""A run's charts: the learning curve, score distributions, confusion matrix, scores per class.

Each function takes plain NumPy data (never a run directory: reading one is
:mod:`reconad.rundir`'s job), draws in the house style (:func:`reconad.report.figure`), writes
one PNG atomically and returns its path. Charts never fail on awkward data: a group of one image,
all scores equal, no epochs, no labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from reconad.report._style import (
    ANOMALY_COLOR,
    NORMAL_COLOR,
    PALETTE,
    figure,
    finite_only,
    fmt,
    legend_below,
    message,
    note,
    omitted_note,
    threshold_style,
)


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
    with figure(out_path, figsize=(6.4, 4.0)) as (fig, ax):
        if epochs.size == 0:
            message(ax, "No epochs were recorded (history.csv is empty).")
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
            note(fig, f"best epoch {best_epoch}")
            ax.plot([best_epoch], [y], marker="*", markersize=14, color="#222222",
                    linestyle="none", zorder=6,
                    label=f"best epoch {best_epoch} ({fmt(y)})")
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
    scores, groups = finite_only(scores, groups)
    with figure(out_path, figsize=(6.2, 4.8)) as (fig, ax):
        if scores.size == 0:
            message(ax, "No finite scores to show.")
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
            label = f"{name} = {fmt(value)}" + (" (chosen)" if name == chosen else "")
            ax.axvline(value, label=label, **threshold_style(i, name, chosen))
        ax.set_xlabel("anomaly score (higher = more anomalous)")
        ax.set_ylabel("density")
        suffix = omitted_note(n_all - scores.size)
        if scores.min() == scores.max():
            suffix += f"\n(all {scores.size} scores equal {fmt(scores[0])})"
            note(fig, f"All {scores.size} scores are equal.")
        ax.set_title(title + suffix)
        legend_below(ax)
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
    with figure(out_path, figsize=(5.0, 4.3)) as (fig, ax):
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
    class_names: Sequence[str] | None = None,
) -> Path:
    """Box plot of scores per original class, normal and anomalous images side by side.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) original classes; -1 (unknown) is left out.
        is_anomaly: (N,) 0/1 ground truth.
        out_path: PNG to write.
        title: figure title.
        class_names: the name of each label value, written under its boxes (``blowhole``);
            None: the label numbers.

    Returns:
        ``out_path`` as a Path.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    y = np.asarray(is_anomaly).astype(int)
    keep = np.isfinite(scores) & (labels >= 0)
    scores, labels, y = scores[keep], labels[keep], y[keep]
    classes = np.unique(labels)
    with figure(out_path, figsize=(max(6.2, 0.45 * classes.size + 1.5), 4.8)) as (fig, ax):
        if classes.size == 0:
            message(ax, "No labelled images: scores per class need labels.")
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
        ticks = [class_names[c] if class_names is not None and 0 <= c < len(class_names)
                 else str(c) for c in classes.tolist()]
        long = max(len(t) for t in ticks) > 3  # names, not digits: slanted so they fit
        ax.set_xticks(range(classes.size), ticks, rotation=30 if long else 0,
                      ha="right" if long else "center")
        ax.set_xlim(-0.7, classes.size - 0.3)
        ax.set_xlabel("original class" if class_names is not None else "original class (label)")
        note(fig, "Classes: " + ", ".join(ticks))
        ax.set_ylabel("anomaly score")
        ax.set_title(title)
        ax.legend()
    return Path(out_path)
