"""ROC and precision-recall curves, with each threshold's operating point on them.

A threshold flags ``score > value``; its operating point is computed from the scores
(:func:`operating_points`), so it lies on the curve. Like every chart of the package, each
function takes plain NumPy data, writes one PNG atomically and returns its path; a set without
normals or without anomalies gets a short explanation instead of a curve.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reconad.report._style import (
    MARKERS,
    THRESHOLD_COLORS,
    figure,
    finite_only,
    legend_below,
    message,
    note,
    omitted_note,
)


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
    scores, y = finite_only(scores, y)
    with figure(out_path, figsize=(5.6, 5.0)) as (fig, ax):
        if not _both_classes(y):
            message(ax, _need_both_message("ROC curve", y))
            return Path(out_path)
        fpr, tpr, _ = sk_roc_curve(y, scores)
        auroc = roc_auc_score(y, scores)
        ax.plot(fpr, tpr, color="#222222", linewidth=1.8, label=f"ROC (AUROC = {auroc:.4f})")
        ax.plot([0, 1], [0, 1], color="#aaaaaa", linestyle=":", linewidth=1, label="chance")
        note(fig, f"AUROC={auroc:.6f}")
        for i, (name, p) in enumerate(operating_points(scores, y, thresholds).items()):
            _mark(ax, i, name, chosen, p["fpr"], p["tpr"],
                  f"{name}: TPR {p['tpr']:.3f}, FPR {p['fpr']:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (normals flagged)")
        ax.set_ylabel("true positive rate (anomalies flagged)")
        ax.set_title(title + omitted_note(n_all - scores.size))
        legend_below(ax)
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
    scores, y = finite_only(scores, y)
    with figure(out_path, figsize=(5.6, 5.0)) as (fig, ax):
        if not _both_classes(y):
            message(ax, _need_both_message("precision-recall curve", y))
            return Path(out_path)
        precision, recall, _ = sk_pr_curve(y, scores)
        ap = average_precision_score(y, scores)
        ax.step(recall, precision, where="post", color="#222222", linewidth=1.8,
                label=f"PR (AP = {ap:.4f})")
        ax.axhline(y.mean(), color="#aaaaaa", linestyle=":", linewidth=1,
                   label=f"chance ({y.mean():.3f})")
        note(fig, f"AP={ap:.6f}")
        for i, (name, p) in enumerate(operating_points(scores, y, thresholds).items()):
            _mark(ax, i, name, chosen, p["tpr"], p["precision"],
                  f"{name}: P {p['precision']:.3f}, R {p['tpr']:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("recall (anomalies flagged)")
        ax.set_ylabel("precision (flagged that are anomalies)")
        ax.set_title(title + omitted_note(n_all - scores.size))
        legend_below(ax)
    return Path(out_path)
