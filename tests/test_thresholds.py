"""Every threshold method against a brute-force oracle that tries every operating point."""

from __future__ import annotations

import numpy as np
import pytest

from reconad.config import ThresholdConfig
from reconad.errors import ReconadError
from reconad.evaluation import METHODS, compute_thresholds

CFG = ThresholdConfig(quantile=0.9, target_fpr=0.2, target_recall=0.8, value=0.5)


def _counts(scores, y, value):
    flag = scores > value
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    return tp, fp, int(y.sum()) - tp, int((~y).sum()) - fp


def _point(scores, y, v):
    """The operating point of ``score > v`` (precision 1 when nothing is flagged)."""
    tp, fp, fn, tn = _counts(scores, y, v)
    precision = tp / (tp + fp) if tp + fp else 1.0
    tpr, fpr = tp / (tp + fn), fp / (fp + tn)
    return dict(j=tpr - fpr, f1=2 * tp / (2 * tp + fp + fn), tpr=tpr, fpr=fpr, flags=tp + fp,
                dist=np.hypot(1 - precision, 1 - tpr))


def _oracle(scores, y):
    """Every distinct operating point: one candidate value per gap, plus below the minimum."""
    candidates = np.concatenate([[scores.min() - 1.0], np.unique(scores)])
    return [_point(scores, y, v) for v in candidates]


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 60))
    y = rng.random(n) < rng.uniform(0.2, 0.6)
    y[:2] = [True, False]  # both classes present
    # Few distinct levels -> many ties, inside and across the classes.
    levels = int(rng.integers(2, 12))
    scores = (rng.integers(0, levels, n) + 2.0 * y * rng.random(n)).astype(np.float32) / levels
    return scores, y


@pytest.mark.parametrize("seed", range(40))
def test_every_method_matches_brute_force_oracle(seed):
    scores, y = _random_case(seed)
    val = np.random.default_rng(seed).random(50)
    got = compute_thresholds(scores, y, val, CFG)
    rows = _oracle(scores.astype(np.float64), y)
    at = {m: _point(scores, y, got[m]) for m in ("youden", "max_f1", "pr_closest",
                                                 "target_fpr", "target_recall")}

    assert at["youden"]["j"] == pytest.approx(max(r["j"] for r in rows))
    assert at["max_f1"]["f1"] == pytest.approx(max(r["f1"] for r in rows))
    flagging = [r for r in rows if r["flags"] > 0]
    assert at["pr_closest"]["dist"] == pytest.approx(min(r["dist"] for r in flagging))
    # target_fpr: the lowest threshold (most flags) whose FPR is within the target.
    assert at["target_fpr"]["fpr"] <= CFG.target_fpr
    assert at["target_fpr"]["flags"] == max(
        r["flags"] for r in rows if r["fpr"] <= CFG.target_fpr)
    # target_recall: the highest threshold (fewest flags) whose recall reaches the target.
    assert at["target_recall"]["tpr"] >= CFG.target_recall
    assert at["target_recall"]["flags"] == min(
        r["flags"] for r in rows if r["tpr"] >= CFG.target_recall)
    assert got["quantile"] == pytest.approx(np.quantile(val, 0.9))
    assert got["fixed"] == 0.5


@pytest.mark.parametrize("seed", range(10))
def test_values_fall_strictly_between_scores_so_new_data_sees_the_same_cut(seed):
    scores, y = _random_case(seed)
    got = compute_thresholds(scores, y, scores, CFG)
    distinct = np.unique(scores.astype(np.float64))
    for m in ("youden", "max_f1", "pr_closest", "target_fpr", "target_recall"):
        v = got[m]
        assert type(v) is float
        # Either the "flag nothing" point (the maximum) or strictly inside a gap.
        assert v == distinct[-1] or v not in set(distinct)
        i = np.searchsorted(distinct, v)
        if 0 < i < len(distinct) and v != distinct[-1]:
            assert v == pytest.approx((distinct[i - 1] + distinct[i]) / 2)


def test_hand_example():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([False, False, True, False, True, True])
    got = compute_thresholds(scores, y, np.array([0.0, 1.0]), CFG)
    # score > 0.25 flags 0.3, 0.6, 0.7, 0.9: TPR 1, FPR 1/3 -> J 2/3 (score > 0.65: J 2/3 - 0
    # ... also 2/3; the tie goes to the higher threshold).
    assert got["youden"] == pytest.approx(0.65)
    # F1 at 0.25: 2*3/(2*3+1) = 6/7, the best.
    assert got["max_f1"] == pytest.approx(0.25)
    assert got["target_fpr"] == pytest.approx(0.65)  # FPR 0 at 0.65, 1/3 > 0.2 at 0.25
    assert got["target_recall"] == pytest.approx(0.25)  # recall 0.8 needs all three
    assert got["quantile"] == pytest.approx(0.9)


def test_all_scores_equal():
    scores = np.full(6, 0.3, dtype=np.float32)
    y = np.array([True, False, True, False, False, True])
    got = compute_thresholds(scores, y, scores, CFG)
    # Only two operating points exist: flag everything (recall 1) or nothing (FPR 0).
    assert (scores > got["target_recall"]).all()
    assert not (scores > got["target_fpr"]).any()
    assert (scores > got["max_f1"]).all()  # F1 1/1.5 beats 0
    assert got["youden"] is not None and got["quantile"] == pytest.approx(0.3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adjacent_floats_still_reproduce_the_operating_point(dtype):
    lo = dtype(0.3)
    hi = np.nextafter(lo, dtype(1))
    scores = np.array([lo, lo, hi, hi], dtype=dtype)
    y = np.array([False, False, True, True])
    got = compute_thresholds(scores, y, scores, CFG)
    # NumPy compares float32 arrays with a Python float in float32: the value must survive that
    # rounding and the float64 comparison alike.
    assert ((scores > got["youden"]) == y).all()
    assert ((scores.astype(np.float64) > got["youden"]) == y).all()


@pytest.mark.parametrize("y", [np.zeros(5, bool), np.ones(5, bool)])
def test_curve_methods_are_none_without_both_classes(y):
    got = compute_thresholds(np.arange(5.0), y, np.arange(3.0), ThresholdConfig())
    assert list(got) == list(METHODS)
    for m in ("youden", "max_f1", "pr_closest", "target_fpr", "target_recall", "fixed"):
        assert got[m] is None
    assert got["quantile"] == pytest.approx(np.quantile(np.arange(3.0), 0.99))


def test_nan_scores_raise():
    with pytest.raises(ReconadError, match="development scores contain NaN.*lower train.lr"):
        compute_thresholds(np.array([0.1, np.nan]), np.array([True, False]), np.zeros(2), CFG)


def test_length_mismatch_raises():
    with pytest.raises(ReconadError, match="3 development scores but 2 anomaly labels"):
        compute_thresholds(np.zeros(3), np.array([True, False]), np.zeros(2), CFG)
