"""evaluate_set and group_stats against hand-computed examples and independent oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tolerances import approx

from reconad.errors import ReconadError
from reconad.evaluation import evaluate_set, group_stats

SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], dtype=np.float32)
Y = np.array([False, False, False, True, False, True, True, True])
GROUP = np.array(["normal"] * 3 + ["class 8", "normal", "class 8", "class 4", "class 4"])


def test_hand_computed_example():
    r = evaluate_set(SCORES, Y, GROUP, {"youden": 0.45, "fixed": None, "all": 0.0})
    assert r["n_normal"] == 4 and r["n_anomaly"] == 4
    # Pairs (anomaly, normal) ranked correctly: 0.4 beats 3 of 4 normals, the rest beat all 4.
    assert r["auroc"] == pytest.approx(15 / 16)
    # AP = mean over anomalies of precision at their rank: 0.8 1/1, 0.7 2/2, 0.6 3/3, 0.4 4/5.
    assert r["average_precision"] == pytest.approx((1 + 1 + 1 + 0.8) / 4)
    assert list(r["thresholds"]) == ["youden", "all"]  # None values are left out
    t = r["thresholds"]["youden"]  # flags 0.5, 0.6, 0.7, 0.8
    assert (t["tp"], t["fp"], t["tn"], t["fn"]) == (3, 1, 3, 1)
    assert t["value"] == 0.45
    assert t["tpr"] == t["recall"] == pytest.approx(0.75)
    assert t["fpr"] == pytest.approx(0.25)
    assert t["precision"] == pytest.approx(0.75)
    assert t["f1"] == pytest.approx(0.75)
    assert t["accuracy"] == pytest.approx(0.75)
    assert t["balanced_accuracy"] == pytest.approx(0.75)
    a = r["thresholds"]["all"]
    assert (a["tp"], a["fp"], a["tn"], a["fn"]) == (4, 4, 0, 0)
    assert a["fpr"] == 1.0 and a["precision"] == 0.5


def test_groups_in_order_of_first_appearance_with_population_std():
    r = evaluate_set(SCORES, Y, GROUP, {})
    assert list(r["groups"]) == ["normal", "class 8", "class 4"]
    normal = np.array([0.1, 0.2, 0.3, 0.5], dtype=np.float32)
    assert r["groups"]["normal"]["n"] == 4
    # float32 scores: the statistics may be accumulated in float32 or float64
    assert r["groups"]["normal"]["mean"] == approx(float(normal.mean()))
    assert r["groups"]["normal"]["std"] == approx(float(np.sqrt(np.mean(
        (normal - normal.mean()) ** 2))))
    assert r["groups"]["class 4"] == approx({"n": 2, "mean": 0.75, "std": 0.05})


@pytest.mark.parametrize("seed", range(5))
def test_random_sets_against_an_independent_oracle(seed):
    rng = np.random.default_rng(seed)
    n = 200
    y = rng.random(n) < 0.3
    scores = rng.normal(size=n) + y  # anomalies score higher on average
    value = float(np.median(scores))
    r = evaluate_set(scores, y, np.where(y, "odd", "normal"), {"q": value})
    # AUROC as the Mann-Whitney probability that an anomaly outscores a normal (no ties).
    pos, neg = scores[y], scores[~y]
    assert r["auroc"] == pytest.approx((pos[:, None] > neg[None, :]).mean())
    # AP as the mean precision at each anomaly's rank.
    order = np.argsort(-scores)
    hits = y[order]
    precision_at = np.cumsum(hits) / np.arange(1, n + 1)
    assert r["average_precision"] == pytest.approx(precision_at[hits].mean())
    t = r["thresholds"]["q"]
    flag = scores > value
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int(y.sum()) - tp, int((~y).sum()) - fp
    assert (t["tp"], t["fp"], t["fn"], t["tn"]) == (tp, fp, fn, tn)
    assert t["precision"] == pytest.approx(tp / (tp + fp))
    assert t["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert t["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert r["groups"]["odd"]["n"] == int(y.sum())


def test_flag_is_strictly_greater_than_the_value():
    r = evaluate_set(np.array([0.5, 0.5, 0.7]), np.array([False, True, True]),
                     np.array(["normal", "a", "a"]), {"at": 0.5})
    t = r["thresholds"]["at"]
    assert (t["tp"], t["fp"]) == (1, 0)


def test_only_normals_gives_none_for_undefined_metrics():
    r = evaluate_set(np.array([0.1, 0.9]), np.array([False, False]),
                     np.array(["normal", "normal"]), {"t": 0.5})
    assert r["auroc"] is None and r["average_precision"] is None
    t = r["thresholds"]["t"]
    assert t["tpr"] is None and t["recall"] is None and t["f1"] is None
    assert t["balanced_accuracy"] is None
    assert t["fpr"] == 0.5 and t["accuracy"] == 0.5 and t["precision"] == 0.0


def test_only_anomalies_and_nothing_flagged():
    r = evaluate_set(np.array([0.1, 0.2]), np.array([True, True]), np.array(["a", "a"]),
                     {"t": 1.0})
    t = r["thresholds"]["t"]
    assert t["fpr"] is None and t["precision"] == 0.0 and t["recall"] == 0.0
    assert t["f1"] == 0.0 and r["auroc"] is None


def test_result_is_plain_json():
    r = evaluate_set(SCORES, Y, GROUP, {"youden": np.float32(0.45)})
    assert json.loads(json.dumps(r)) == r

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        else:
            assert node is None or type(node) in (int, float), (node, type(node))

    walk(r)


def test_group_stats_with_one_name_for_all():
    out = group_stats(np.array([1.0, 3.0]), "unlabelled pool")
    assert out == {"unlabelled pool": {"n": 2, "mean": 2.0, "std": 1.0}}
    assert json.dumps(out)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_diverged_scores_raise(bad, word):
    scores = np.array([0.1, bad, 0.3])
    with pytest.raises(ReconadError, match=f"scores contain {word} \\(1 of 3 images\\).*"
                                           "lower train.lr"):
        evaluate_set(scores, np.array([False, True, True]), np.array(["n", "a", "a"]), {})
    with pytest.raises(ReconadError, match="model diverged"):
        group_stats(scores, "normal")


def test_mismatched_lengths_and_empty_set_raise():
    with pytest.raises(ReconadError, match="3 scores but 2 anomaly labels"):
        evaluate_set(np.zeros(3), np.zeros(2, bool), np.full(3, "n"), {})
    with pytest.raises(ReconadError, match="3 scores but 2 group names"):
        group_stats(np.zeros(3), np.full(2, "n"))
    with pytest.raises(ReconadError, match="empty set"):
        evaluate_set(np.zeros(0), np.zeros(0, bool), np.zeros(0, str), {})
