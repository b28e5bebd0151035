"""How well scores separate anomalies: AUROC/AP, per-group statistics, confusion at thresholds.

Everything returned is JSON-ready (plain ``int``/``float``/``None``), in the shape of a set's
entry in ``metrics.json``. A flag means ``score > threshold``.

>>> import numpy as np
>>> r = evaluate_set(np.array([0.1, 0.2, 0.9]), np.array([False, False, True]),
...                  np.array(["normal", "normal", "class 8"]), {"youden": 0.5})
>>> r["auroc"], r["thresholds"]["youden"]["tp"], r["groups"]["class 8"]["n"]
(1.0, 1, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from reconad.errors import ReconadError


def check_scores(scores: np.ndarray, name: str = "anomaly") -> np.ndarray:
    """Return ``scores`` as a flat float32/float64 array (dtype kept), refusing NaN and infinity.

    Args:
        scores: (N,) anomaly scores.
        name: which scores these are, for the message (e.g. "development").

    Raises:
        ReconadError: when a score is NaN or infinite (a diverged model).
    """
    s = np.asarray(scores).ravel()  # (N,)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        what = "NaN" if np.isnan(s).any() else "infinity"
        raise ReconadError(
            f"{name} scores contain {what} ({int(bad.sum())} of {len(s)} images): "
            "the model diverged; lower train.lr"
        )
    return s


def group_stats(scores: np.ndarray, group: np.ndarray | str) -> dict[str, dict[str, Any]]:
    """Count, mean and (population) standard deviation of the scores of each group.

    Args:
        scores: (N,) anomaly scores.
        group: (N,) group name of each score, or one name for all of them.

    Returns:
        ``{group: {"n": int, "mean": float, "std": float}}`` in order of first appearance
        (mean and std are None for an empty score array given one name).
    """
    s = check_scores(scores)
    if isinstance(group, str):
        g = np.full(len(s), group)
        if not len(s):
            return {group: {"n": 0, "mean": None, "std": None}}
    else:
        g = np.asarray(group).astype(str).ravel()
        if g.shape != s.shape:
            raise ReconadError(f"{len(s)} scores but {len(g)} group names; pass one per score")
    names, first = np.unique(g, return_index=True)
    out = {}
    for name in names[np.argsort(first)]:
        values = s[g == name]
        out[str(name)] = {
            "n": int(len(values)),
            "mean": float(values.mean()),
            "std": float(values.std()),
        }
    return out


def evaluate_set(
    scores: np.ndarray,
    is_anomaly: np.ndarray,
    group: np.ndarray,
    thresholds: dict[str, float | None],
) -> dict[str, Any]:
    """Every metric of one evaluated set, as the set's entry in ``metrics.json``.

    Args:
        scores: (N,) anomaly scores (higher = more anomalous).
        is_anomaly: (N,) bool ground truth.
        group: (N,) group name of each image ("normal", "class 8", ...).
        thresholds: ``{method: value}``; methods whose value is None are left out.

    Returns:
        ``{"n_normal", "n_anomaly", "auroc", "average_precision", "groups", "thresholds"}``
        where ``thresholds[method]`` holds ``value``, ``tp``/``fp``/``tn``/``fn`` (flag =
        ``score > value``) and ``tpr``, ``fpr``, ``precision``, ``recall``, ``f1``,
        ``accuracy``, ``balanced_accuracy``. A metric that is undefined for this set (AUROC
        without both classes, recall without anomalies, FPR without normals) is None;
        precision is 0 when nothing is flagged.

    Raises:
        ReconadError: NaN/infinite scores, mismatched lengths or an empty set.
    """
    s = check_scores(scores)
    y = np.asarray(is_anomaly).astype(bool).ravel()  # (N,)
    if y.shape != s.shape:
        raise ReconadError(f"{len(s)} scores but {len(y)} anomaly labels; pass one per score")
    if not len(s):
        raise ReconadError("cannot evaluate an empty set of scores; check the scenario's splits")
    n_anomaly = int(y.sum())
    n_normal = int(len(y) - n_anomaly)
    both = n_anomaly > 0 and n_normal > 0
    return {
        "n_normal": n_normal,
        "n_anomaly": n_anomaly,
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        "groups": group_stats(s, group),
        "thresholds": {
            name: _at_threshold(s, y, float(value))
            for name, value in thresholds.items()
            if value is not None
        },
    }


def _at_threshold(s: np.ndarray, y: np.ndarray, value: float) -> dict[str, Any]:
    """Confusion counts and rates when flagging ``s > value``."""
    flag = s > value  # (N,)
    tn, fp, fn, tp = (int(c) for c in confusion_matrix(y, flag, labels=[False, True]).ravel())
    has_anomalies, has_normals = tp + fn > 0, fp + tn > 0
    recall = float(recall_score(y, flag, zero_division=0)) if has_anomalies else None
    return {
        "value": value,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tpr": recall,
        "fpr": fp / (fp + tn) if has_normals else None,
        "precision": float(precision_score(y, flag, zero_division=0)),
        "recall": recall,
        "f1": float(f1_score(y, flag, zero_division=0)) if has_anomalies else None,
        "accuracy": float(accuracy_score(y, flag)),
        "balanced_accuracy": (
            float(balanced_accuracy_score(y, flag)) if has_anomalies and has_normals else None
        ),
    }
