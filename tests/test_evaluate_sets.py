"""thresholds.evaluate_sets: thresholds picked on dev only, every set evaluated at them."""

from __future__ import annotations

import numpy as np
import pytest

from reconad.config import ThresholdConfig
from reconad.evaluation import compute_thresholds, evaluate_set, evaluate_sets
from reconad.scenarios import EvalSet, Splits


def _set(normal: int, anomalous: int) -> EvalSet:
    n = normal + anomalous
    is_anomaly = np.arange(n) >= normal
    return EvalSet(x=np.zeros((n, 1, 2, 2), np.float32), is_anomaly=is_anomaly,
                   group=np.where(is_anomaly, "class 8", "normal"),
                   label=np.where(is_anomaly, 8, 0).astype(np.int64),
                   ids=np.array([f"test:{i}" for i in range(n)]))


def _splits(dev_is_pool: bool = False, dev_anomalies: int = 5) -> Splits:
    sets = {"dev": _set(20, dev_anomalies), "eval": _set(30, 10), "final": _set(15, 10)}
    empty = np.zeros((0, 1, 2, 2), np.float32)
    return Splits(empty, empty, sets, "normal", dev_is_pool=dev_is_pool)


def _scores(splits: Splits, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.random(len(s.is_anomaly)) + 0.8 * s.is_anomaly
            for name, s in splits.sets.items()}


def test_thresholds_come_from_dev_and_every_set_is_evaluated_at_them():
    splits, cfg = _splits(), ThresholdConfig(value=0.9)
    scores, val = _scores(splits), np.linspace(0.0, 1.0, 11)
    thresholds, per_set = evaluate_sets(scores, splits, val, cfg)
    assert thresholds == compute_thresholds(scores["dev"], splits.sets["dev"].is_anomaly, val, cfg)
    assert list(per_set) == ["dev", "eval", "final"]
    for name, s in splits.sets.items():
        assert per_set[name] == evaluate_set(scores[name], s.is_anomaly, s.group, thresholds)
    # Changing the eval scores changes no threshold: they are picked on dev only.
    other = dict(scores, eval=scores["eval"] * 0.5)
    assert evaluate_sets(other, splits, val, cfg)[0] == thresholds
    assert thresholds["quantile"] == pytest.approx(np.quantile(val, cfg.quantile))


def test_methods_that_cannot_be_computed_are_none_and_left_out_of_the_metrics():
    splits = _splits(dev_anomalies=0)  # a dev set without anomalies: no curve thresholds
    thresholds, per_set = evaluate_sets(_scores(splits), splits, np.linspace(0, 1, 11),
                                        ThresholdConfig())
    assert thresholds["youden"] is None and thresholds["fixed"] is None
    assert thresholds["quantile"] is not None
    assert set(per_set["eval"]["thresholds"]) == {"quantile"}


def test_an_unlabelled_pool_takes_its_quantile_over_all_dev_scores():
    splits = _splits(dev_is_pool=True)
    scores = _scores(splits)
    thresholds, _ = evaluate_sets(scores, splits, np.zeros(3), ThresholdConfig(quantile=0.9))
    assert thresholds["quantile"] == pytest.approx(np.quantile(scores["dev"], 0.9))
