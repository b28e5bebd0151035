"""The one seeded stratified sample (dataset subsets, user splits and every scenario draw)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from reconad.data import stratified_sample

TRAIN_COUNTS = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
LABELS = np.repeat(np.arange(10), TRAIN_COUNTS)  # MNIST's training class sizes


def test_keeps_proportions_and_order():
    keep = stratified_sample(len(LABELS), LABELS, 1000, seed=[0, 1])
    assert len(keep) == 1000 and np.all(np.diff(keep) > 0) and keep.dtype == np.int64
    counts = np.bincount(LABELS[keep], minlength=10)
    assert np.all(np.abs(counts - 1000 * TRAIN_COUNTS / TRAIN_COUNTS.sum()) < 1)
    np.testing.assert_array_equal(keep, stratified_sample(len(LABELS), LABELS, 1000, [0, 1]))
    assert not np.array_equal(keep, stratified_sample(len(LABELS), LABELS, 1000, [1, 1]))
    # A class of one and fewer items than classes: no refusal, exact size.
    assert len(stratified_sample(6, np.array([0, 1, 1, 2, 2, 2]), 2, 0)) == 2
    assert len(stratified_sample(50, None, 7, 0)) == 7


def test_a_pool_of_indices_keeps_its_own_class_shares():
    pool = np.flatnonzero(np.isin(LABELS, [2, 7]))
    picked = stratified_sample(pool, LABELS, 101, seed=4)
    assert set(picked.tolist()) <= set(pool.tolist()) and len(set(picked.tolist())) == 101
    share_2 = TRAIN_COUNTS[2] / (TRAIN_COUNTS[2] + TRAIN_COUNTS[7])
    assert abs(int(np.sum(LABELS[picked] == 2)) - 101 * share_2) < 1
    assert np.all(np.diff(picked) > 0)


def test_largest_remainder_ties_go_to_the_first_class():
    labels = np.array([0, 0, 1, 1, 2, 2])  # 3 classes of equal share, 4 items: one extra
    counts = np.bincount(labels[stratified_sample(6, labels, 4, seed=0)], minlength=3)
    assert counts.tolist() == [2, 1, 1]


def test_a_generator_is_drawn_from_and_a_count_equals_its_range():
    a = stratified_sample(np.arange(40), LABELS[::1500][:40], 9, np.random.default_rng(5))
    b = stratified_sample(40, LABELS[::1500][:40], 9, seed=5)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(5)
    first, second = stratified_sample(40, None, 9, rng), stratified_sample(40, None, 9, rng)
    assert not np.array_equal(first, second)  # the generator advanced


@pytest.mark.parametrize(("pool", "labels", "size", "seed", "head", "total"), [
    # load_dataset's max_train subset (seed [seed, 1]) of MNIST-sized training labels
    (len(LABELS), LABELS, 1000, [0, 1], [1, 14, 23, 47, 60, 84, 195, 226], 30081075),
    (500, None, 7, [3, 2], [12, 53, 121, 280, 369, 405, 417], 1657),
    # scenarios' draws: a sub-pool with a per-stream generator
    (np.flatnonzero(LABELS % 3 == 1), LABELS, 50, "dev anomalies",
     [5997, 6164, 6569, 6579, 6753, 7290, 8704, 8850], 1333000),
    (np.flatnonzero(LABELS % 3 == 1), None, 5, "val", [8071, 8273, 9498, 29029, 29145], 84016),
])
def test_picks_the_same_images_as_before_the_merge(pool, labels, size, seed, head, total):
    """Regression: data.stratified_subset and scenarios._stratified_sample picked these, so
    preset subsets and scenario draws (and the benchmark numbers) do not shift."""
    if isinstance(seed, str):  # scenarios.py seeds each stream [seed, crc32(stream)]
        seed = np.random.default_rng([0, zlib.crc32(seed.encode())])
    picked = stratified_sample(pool, labels, size, seed)
    assert picked[:8].tolist() == head and int(picked.sum()) == total
