"""Every threshold method, computed once on the development set.

A flag means ``score > threshold`` everywhere in reconad (scores: higher = more anomalous).
scikit-learn's curves use ``score >= t``, so each curve point is turned into a value ``v`` with
``score > v`` flagging exactly the same development images: the midpoint between the curve's
threshold and the next lower distinct development score (just below the lowest score when
there is none; the highest score itself for the "flag nothing" point). The midpoint leaves the
largest margin on both sides, which is what a threshold applied to new images should do.

Ties between operating points (equal J, F1 or distance) go to the highest threshold, i.e. the
one flagging the fewest images.

>>> import numpy as np
>>> from reconad.config import ThresholdConfig
>>> dev = np.array([0.1, 0.2, 0.8, 0.9])
>>> compute_thresholds(dev, dev > 0.5, np.array([0.1, 0.2]), ThresholdConfig())["youden"]
0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from reconad.config import ThresholdConfig
from reconad.errors import ReconadError
from reconad.evaluation._metrics import check_scores, evaluate_set

if TYPE_CHECKING:
    from reconad.scenarios import Splits

METHODS = ("youden", "max_f1", "pr_closest", "quantile", "target_fpr", "target_recall", "fixed")


def compute_thresholds(
    dev_scores: np.ndarray,
    dev_is_anomaly: np.ndarray,
    val_scores: np.ndarray,
    cfg: ThresholdConfig,
) -> dict[str, float | None]:
    """Compute every threshold method; a flag is ``score > threshold``.

    Args:
        dev_scores: (N,) anomaly scores of the development set (higher = more anomalous).
        dev_is_anomaly: (N,) bool, True for the development anomalies.
        val_scores: (M,) scores of the normal validation images (used by ``quantile`` only).
        cfg: the ``threshold`` config section (quantile, target_fpr, target_recall, value).

    Returns:
        ``{method: value}`` for every name in :data:`METHODS`, in that order, as plain floats.
        A value is None when it cannot be computed: the curve methods when the development set
        lacks normals or anomalies, ``quantile`` without validation scores, ``fixed`` without
        ``cfg.value``.

    Raises:
        ReconadError: scores containing NaN or infinity, or mismatched lengths.
    """
    dev_scores = check_scores(dev_scores, "development")
    val_scores = check_scores(val_scores, "validation")
    y = np.asarray(dev_is_anomaly).astype(bool).ravel()  # (N,)
    if y.shape != dev_scores.shape:
        raise ReconadError(
            f"{len(dev_scores)} development scores but {len(y)} anomaly labels; "
            "pass one label per score"
        )

    out: dict[str, float | None] = dict.fromkeys(METHODS)
    if y.any() and not y.all():
        out.update(_curve_thresholds(dev_scores, y, cfg))
    if len(val_scores):
        out["quantile"] = float(np.quantile(val_scores, cfg.quantile))
    out["fixed"] = None if cfg.value is None else float(cfg.value)
    return out


def _curve_thresholds(
    scores: np.ndarray, y: np.ndarray, cfg: ThresholdConfig
) -> dict[str, float]:
    """The methods read off the ROC and PR curves; needs both classes in ``y``."""
    distinct = np.unique(scores)  # ascending, for converting ">=" to ">"
    out = {}

    # ROC: thresholds descend from +inf (flag nothing); fpr and tpr rise along the array.
    fpr, tpr, roc_t = roc_curve(y, scores, drop_intermediate=False)
    out["youden"] = _strict(roc_t[_first_best(tpr - fpr)], distinct)
    # Lowest threshold with FPR <= target: the last admissible point (index 0 always is).
    ok = np.flatnonzero(fpr <= cfg.target_fpr)
    out["target_fpr"] = _strict(roc_t[ok[-1]], distinct)
    # Highest threshold with recall >= target: the first admissible point (the last always is).
    ok = np.flatnonzero(tpr >= cfg.target_recall)
    out["target_recall"] = _strict(roc_t[ok[0]], distinct)

    # PR: thresholds ascend; the final (precision 1, recall 0) point has no threshold and
    # flags nothing, so it is left out. Reverse so ties go to the highest threshold.
    precision, recall, pr_t = precision_recall_curve(y, scores)
    p, r, t = precision[:-1][::-1], recall[:-1][::-1], pr_t[::-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    out["max_f1"] = _strict(t[_first_best(f1)], distinct)
    distance = np.hypot(1.0 - p, 1.0 - r)
    out["pr_closest"] = _strict(t[_first_best(-distance)], distinct)
    return out


def _strict(t: float, distinct: np.ndarray) -> float:
    """Turn a ``score >= t`` threshold into a value ``v`` with ``score > v`` flagging the same.

    ``v`` is computed in the scores' own dtype so that it is exactly representable there:
    NumPy compares a float32 array with a Python float in float32, and a float64 value between
    two float32 scores could round onto one of them.

    Args:
        t: a threshold from an sklearn curve: +inf or one of the scores.
        distinct: the sorted distinct development scores (float32 or float64).
    """
    if not np.isfinite(t):  # +inf: flag nothing
        return float(distinct[-1])
    i = int(np.searchsorted(distinct, t))  # distinct[i] == t
    high = distinct[i]
    just_below = np.nextafter(high, distinct.dtype.type(-np.inf))
    if i == 0:  # the lowest score: flag everything
        return float(just_below)
    low = distinct[i - 1]
    mid = low + (high - low) / 2  # in the scores' dtype
    # Any v in [low, high) works; the midpoint can round onto high for adjacent floats.
    return float(mid if low <= mid < high else just_below)


def _first_best(values: np.ndarray) -> int:
    """Index of the first maximum, treating values within float round-off as tied."""
    return int(np.flatnonzero(values >= values.max() - 1e-12)[0])


def evaluate_sets(
    scores: Mapping[str, np.ndarray],
    splits: Splits,
    val_scores: np.ndarray,
    cfg: ThresholdConfig,
) -> tuple[dict[str, float | None], dict[str, dict]]:
    """Pick every threshold on the development set, then evaluate every set at them.

    The one place where "thresholds come from dev, metrics from every set" is done, for the
    pipeline and for any other scorer (benchmarks' baselines).

    Args:
        scores: (N,) scores of every set of ``splits.sets`` by name (higher = more anomalous).
        splits: the scenario's splits; ``splits.sets["dev"]`` picks the thresholds.
        val_scores: the normal validation images' scores; the ``quantile`` threshold uses
            ``splits.quantile_reference(dev scores, val_scores)``.
        cfg: the ``threshold`` config section.

    Returns:
        ``(thresholds, per_set)``: every method's value as :func:`compute_thresholds` gives it
        (None where it cannot be computed), and metrics.json's entry of each set (in
        ``splits.sets`` order) at the thresholds that could be computed.
    """
    dev = splits.sets["dev"]
    thresholds = compute_thresholds(
        scores["dev"], dev.is_anomaly, splits.quantile_reference(scores["dev"], val_scores), cfg)
    usable = {k: v for k, v in thresholds.items() if v is not None}
    per_set = {name: evaluate_set(scores[name], s.is_anomaly, s.group, usable)
               for name, s in splits.sets.items()}
    return thresholds, per_set
