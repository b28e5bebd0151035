"""Scenarios: set composition against the labels, disjointness, stratification, MNIST counts."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from reconad.config import ScenarioConfig
from reconad.data import Dataset
from reconad.errors import ReconadError
from reconad.scenarios import EvalSet, Splits, make_splits


def _toy(train_sizes=(200, 150, 120, 90), test_sizes=(60, 50, 40, 30), labelled=True):
    """Images whose first pixel encodes their own index (i / 1000), classes interleaved."""
    rng = np.random.default_rng(1)

    def part(sizes):
        y = rng.permutation(np.repeat(np.arange(len(sizes)), sizes)).astype(np.int64)
        x = rng.uniform(0.2, 0.8, size=(len(y), 1, 3, 3)).astype(np.float32)
        x[:, 0, 0, 0] = np.arange(len(y)) / 1000
        return x, y

    (train_x, train_y), (test_x, test_y) = part(train_sizes), part(test_sizes)
    if not labelled:
        train_y = test_y = None
    return Dataset("toy", train_x, train_y, test_x, test_y)


def _index_of(x: np.ndarray) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0] * 1000).astype(int)


def _parse(ids):
    origin, idx, suffix = [], [], []
    for i in ids:
        head, _, noise = i.partition("+")
        o, _, k = head.partition(":")
        origin.append(o), idx.append(int(k)), suffix.append(noise)
    return np.array(origin), np.array(idx), np.array(suffix)


def _check_consistent(s: EvalSet, data: Dataset) -> None:
    """Every row's image and label are those its id names; anomaly flag follows the group."""
    n = len(s.x)
    assert s.x.dtype == np.float32 and s.x.shape[1:] == data.train_x.shape[1:]
    for arr in (s.is_anomaly, s.group, s.label, s.ids):
        assert arr.shape == (n,)
    assert s.is_anomaly.dtype == bool and s.label.dtype == np.int64
    assert (s.is_anomaly == (s.group != "normal")).all()
    assert len(set(s.ids.tolist())) == n  # ids are unique
    origin, idx, suffix = _parse(s.ids)
    for name, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        mine = origin == name
        clean = mine & (suffix == "")
        np.testing.assert_array_equal(s.x[clean], x[idx[clean]])
        expected = y[idx[mine]] if y is not None else -1
        np.testing.assert_array_equal(s.label[mine], expected)


def _ids_of(s: EvalSet, group: str) -> set[str]:
    return set(s.ids[s.group == group].tolist())


def _test_ids(y: np.ndarray, classes) -> set[str]:
    return {f"test:{i}" for i in np.flatnonzero(np.isin(y, classes))}


def _check_train_val(splits: Splits, labels: np.ndarray, pool: np.ndarray, fraction: float,
                     stratified: bool = True) -> None:
    train, val = _index_of(splits.train), _index_of(splits.val)
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val])) == sorted(pool)
    assert len(val) == int(fraction * len(pool) + 0.5)
    if stratified:
        share = Counter(labels[pool].tolist())
        for c, count in Counter(labels[val].tolist()).items():
            assert abs(count - fraction * share[c]) < 1


def test_holdout_sets_follow_the_labels():
    data = _toy()
    cfg = ScenarioConfig(dev_anomaly=[1], eval_anomaly=[3])
    splits = make_splits(data, cfg, seed=0)
    normal_train = np.flatnonzero(np.isin(data.train_y, [0, 2]))
    _check_train_val(splits, data.train_y, normal_train, 0.1)
    dev, ev = splits.sets["dev"], splits.sets["eval"]
    for s in (dev, ev):
        _check_consistent(s, data)
    assert _ids_of(dev, "normal") == _ids_of(ev, "normal") == _test_ids(data.test_y, [0, 2])
    assert _ids_of(dev, "class 1") == _test_ids(data.test_y, [1])
    assert _ids_of(ev, "class 3") == _test_ids(data.test_y, [3])
    assert list(splits.sets) == ["dev", "eval"] and splits.train_group == "normal"
    assert splits.sizes() == {"train": 288, "val": 32, "dev": {"normal": 100, "class 1": 50},
                              "eval": {"normal": 100, "class 3": 30}}


def test_holdout_explicit_normal_ignores_unnamed_classes():
    data = _toy()
    splits = make_splits(data, ScenarioConfig(normal=[0], dev_anomaly=[1], eval_anomaly=[1, 3]),
                         seed=0)
    assert len(splits.train) + len(splits.val) == 200
    assert splits.sets["eval"].sizes() == {"normal": 60, "class 1": 50, "class 3": 30}


def test_holdout_split_final_keeps_final_normals_unseen():
    data = _toy()
    cfg = ScenarioConfig(dev_anomaly=[1], eval_anomaly=[3], split_final=True, final_fraction=0.3)
    splits = make_splits(data, cfg, seed=0)
    dev, ev, final = (splits.sets[k] for k in ("dev", "eval", "final"))
    _check_consistent(final, data)
    dev_normal, final_normal = _ids_of(dev, "normal"), _ids_of(final, "normal")
    assert _ids_of(ev, "normal") == dev_normal
    assert not dev_normal & final_normal
    assert dev_normal | final_normal == _test_ids(data.test_y, [0, 2])
    assert len(final_normal) == 30
    # Stratified: classes 0 and 2 (60 and 40 test images) give 18 and 12 final normals.
    assert Counter(final.label[final.group == "normal"].tolist()) == {0: 18, 2: 12}
    assert _ids_of(final, "class 3") == _ids_of(ev, "class 3") == _test_ids(data.test_y, [3])


def test_one_class_dev_anomalies_come_from_training_images():
    data = _toy()
    cfg = ScenarioConfig(kind="one-class", normal=[0], dev_anomaly_fraction=0.3)
    splits = make_splits(data, cfg, seed=0)
    _check_train_val(splits, data.train_y, np.flatnonzero(data.train_y == 0), 0.1)
    dev, ev = splits.sets["dev"], splits.sets["eval"]
    _check_consistent(dev, data)
    _check_consistent(ev, data)
    assert _ids_of(dev, "normal") == {f"train:{i}" for i in _index_of(splits.val)}
    anomalies = dev.ids[dev.is_anomaly]
    assert all(i.startswith("train:") for i in anomalies)
    assert len(anomalies) == 6  # round(0.3 * 20 validation normals)
    # Stratified over the other classes (150, 120, 90 images): 2.5, 2, 1.5 -> 3, 2, 1 or 2, 2, 2.
    per_class = Counter(dev.label[dev.is_anomaly].tolist())
    assert set(per_class) <= {1, 2, 3} and all(1 <= v <= 3 for v in per_class.values())
    assert sum(per_class.values()) == 6
    # The evaluation set is the whole test set, every other class anomalous.
    assert sorted(ev.ids.tolist()) == sorted(f"test:{i}" for i in range(180))
    assert ev.sizes() == {"normal": 60, "class 1": 50, "class 2": 40, "class 3": 30}


def test_corruption_sets_hold_clean_images_and_corrupted_copies():
    data = _toy()
    cfg = ScenarioConfig(kind="corruption", dev_anomaly_fraction=0.25, corrupt_fraction=0.2,
                         noise="gaussian", noise_level=0.3)
    splits = make_splits(data, cfg, seed=0)
    _check_train_val(splits, data.train_y, np.arange(560), 0.1)
    dev, ev = splits.sets["dev"], splits.sets["eval"]
    assert dev.sizes() == {"normal": 56, "gaussian 0.3": 14}
    assert ev.sizes() == {"normal": 180, "gaussian 0.3": 36}
    for s, x in ((dev, data.train_x), (ev, data.test_x)):
        _check_consistent(s, data)
        origin, idx, suffix = _parse(s.ids)
        copies = s.is_anomaly
        assert (suffix[copies] == "gaussian").all() and (suffix[~copies] == "").all()
        # Copies of images that are in the set, changed by the noise, still in [0, 1].
        assert set(idx[copies]) <= set(idx[~copies])
        assert np.abs(s.x[copies] - x[idx[copies]]).mean() > 0.05
        assert s.x.min() >= 0 and s.x.max() <= 1


def test_corruption_works_without_labels():
    data = _toy(labelled=False)
    splits = make_splits(data, ScenarioConfig(kind="corruption", noise="salt-pepper"), seed=3)
    for s in splits.sets.values():
        _check_consistent(s, data)
        assert (s.label == -1).all()
    assert splits.sets["eval"].sizes() == {"normal": 180, "salt-pepper 0.2": 18}


def test_corruption_with_normal_classes_uses_only_them():
    data = _toy()
    splits = make_splits(data, ScenarioConfig(kind="corruption", normal=[2]), seed=0)
    assert len(splits.train) + len(splits.val) == 120
    assert set(splits.sets["eval"].label.tolist()) == {2}


def test_contamination_dev_is_the_whole_pool_with_planted_images_marked():
    data = _toy()
    cfg = ScenarioConfig(kind="contamination", normal=[0], contaminant=[2], contamination=0.05)
    splits = make_splits(data, cfg, seed=0)
    dev, ev = splits.sets["dev"], splits.sets["eval"]
    _check_consistent(dev, data)
    _check_consistent(ev, data)
    pool = np.concatenate([_index_of(splits.train), _index_of(splits.val)])
    assert {f"train:{i}" for i in pool} == set(dev.ids.tolist())
    assert _ids_of(dev, "normal") == {f"train:{i}" for i in np.flatnonzero(data.train_y == 0)}
    assert dev.sizes() == {"normal": 200, "planted class 2": 10}  # round(0.05 * 200)
    assert (dev.label[dev.is_anomaly] == 2).all()
    # Validation: a plain random tenth of the pool (the hidden labels are not used).
    assert len(splits.val) == 21 and splits.train_group == "unlabelled pool"
    assert ev.sizes() == {"normal": 60, "class 2": 3}  # round(0.05 * 60)


def test_same_seed_same_splits_other_seed_other_splits():
    data = _toy()
    for kind in ("holdout", "one-class", "corruption", "contamination"):
        cfg = ScenarioConfig(kind=kind, normal=[0] if kind != "holdout" else None,
                             dev_anomaly=[1], eval_anomaly=[3], contaminant=[2],
                             contamination=0.05)
        a, b, c = (make_splits(data, cfg, seed) for seed in (0, 0, 1))
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.val, b.val)
        for name in a.sets:
            np.testing.assert_array_equal(a.sets[name].ids, b.sets[name].ids)
            np.testing.assert_array_equal(a.sets[name].x, b.sets[name].x)
        assert set(_index_of(a.val)) != set(_index_of(c.val))


@pytest.mark.parametrize("cfg, match", [
    (ScenarioConfig(kind="one-class"), r"scenario.normal must list .*scenario.normal=\[0\]"),
    (ScenarioConfig(kind="one-class", normal=[0, 1, 2, 3]), "no anomalies"),
    (ScenarioConfig(kind="holdout", normal=[7]), r"scenario.normal lists class\(es\) \[7\]"),
    (ScenarioConfig(dev_anomaly=[11]), r"scenario.dev_anomaly .*\[11\] with no test images"),
    (ScenarioConfig(dev_anomaly=[0, 1], eval_anomaly=[2, 3]), "no normal class left"),
    (ScenarioConfig(kind="contamination", normal=[0], contaminant=[9]),
     r"scenario.contaminant lists class\(es\) \[9\]"),
    (ScenarioConfig(kind="contamination", normal=[0], contaminant=[3], contamination=0.9),
     "needs 180 training images .* there are 90; lower scenario.contamination"),
])
def test_bad_class_selections_raise(cfg, match):
    with pytest.raises(ReconadError, match=match):
        make_splits(_toy(), cfg, seed=0)


def test_one_class_with_too_few_other_training_images_raises():
    data = _toy(train_sizes=(200, 150, 120, 5))
    cfg = ScenarioConfig(kind="one-class", normal=[0, 1, 2], dev_anomaly_fraction=0.5)
    with pytest.raises(ReconadError, match=r"dev_anomaly_fraction=0.5 needs 24 training images "
                                           r"of the other classes .* there are 5; lower "):
        make_splits(data, cfg, seed=0)


@pytest.mark.parametrize("kind", ["holdout", "one-class", "contamination"])
def test_unlabelled_data_needs_the_corruption_scenario(kind):
    cfg = ScenarioConfig(kind=kind, normal=[0], dev_anomaly=[1], eval_anomaly=[2])
    with pytest.raises(ReconadError, match=f"scenario.kind={kind} needs class labels.*"
                                           "scenario.kind=corruption"):
        make_splits(_toy(labelled=False), cfg, seed=0)


def test_val_split_that_empties_a_part_raises():
    data = _toy(train_sizes=(3, 2), test_sizes=(2, 2))
    with pytest.raises(ReconadError, match=r"val_fraction=0.1 of 3 normal training images "
                                           "leaves no held-out images.*raise"):
        make_splits(data, ScenarioConfig(dev_anomaly=[1], eval_anomaly=[1]), seed=0)
    with pytest.raises(ReconadError, match=r"val_fraction=0.9 .* leaves no remaining"):
        make_splits(data, ScenarioConfig(dev_anomaly=[1], eval_anomaly=[1], val_fraction=0.9),
                    seed=0)


# ------------------------------------------------------------------ the real MNIST labels


def _read_labels(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2049  # IDX magic for unsigned-byte vectors
    return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)


@pytest.fixture(scope="module")
def mnist_labels_only(mnist_dir) -> Dataset:
    """MNIST's real labels with 1-pixel placeholder images: the counts are what matters."""
    train_y = _read_labels(mnist_dir / "train-labels-idx1-ubyte.gz")
    test_y = _read_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    return Dataset("mnist", np.zeros((len(train_y), 1, 1, 1), np.float32), train_y,
                   np.zeros((len(test_y), 1, 1, 1), np.float32), test_y)


def test_mnist_holdout_default_counts(mnist_labels_only):
    sizes = make_splits(mnist_labels_only, ScenarioConfig(), seed=0).sizes()
    assert sizes["train"] + sizes["val"] == 48_307
    assert sizes["val"] == 4_831
    assert sizes["dev"] == {"normal": 8_044, "class 8": 974}
    assert sizes["eval"] == {"normal": 8_044, "class 4": 982}


def test_mnist_holdout_split_final_counts(mnist_labels_only):
    splits = make_splits(mnist_labels_only, ScenarioConfig(split_final=True), seed=0)
    sizes = splits.sizes()
    assert sizes["dev"] == {"normal": 4_022, "class 8": 974}
    assert sizes["final"] == {"normal": 4_022, "class 4": 982}
    assert not _ids_of(splits.sets["dev"], "normal") & _ids_of(splits.sets["final"], "normal")


def test_mnist_other_scenarios_counts(mnist_labels_only):
    one = make_splits(mnist_labels_only, ScenarioConfig(kind="one-class", normal=[0]), 0).sizes()
    assert one["train"] + one["val"] == 5_923  # the zeros of the training set
    assert sum(one["dev"].values()) - one["dev"]["normal"] == round(0.1 * one["val"])
    assert sum(one["eval"].values()) == 10_000 and one["eval"]["normal"] == 980
    con = make_splits(mnist_labels_only, ScenarioConfig(kind="contamination", normal=[1]),
                      0).sizes()
    assert con["dev"] == {"normal": 6_742, "planted class 3": 67}
    assert con["eval"] == {"normal": 1_135, "class 3": 11}


def test_one_class_good_on_unlabelled_images_takes_every_image_as_normal():
    """A folder of normal images under the defects preset (normal: [good]): every image is
    normal, the dev and eval sets hold the held-out normals alone."""
    data = _toy(labelled=False)
    splits = make_splits(data, ScenarioConfig(kind="one-class", normal=["good"]), seed=0)
    assert len(splits.train) + len(splits.val) == len(data.train_x)
    assert not splits.sets["dev"].is_anomaly.any() and not splits.sets["eval"].is_anomaly.any()
    assert len(splits.sets["eval"].x) == len(data.test_x)
    with pytest.raises(ReconadError, match="needs class labels"):
        make_splits(data, ScenarioConfig(kind="one-class", normal=[0]), seed=0)
