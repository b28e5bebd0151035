"""The one seeded stratified sample every subset, split and anomaly draw of reconad is made with.

>>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
>>> stratified_sample(10, labels, 5, seed=0).tolist()  # 2 of class 0, 3 of class 1, sorted
[2, 3, 4, 5, 8]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Seed = int | Sequence[int] | np.random.Generator


def stratified_sample(
    pool: int | np.ndarray, labels: np.ndarray | None, size: int, seed: Seed
) -> np.ndarray:
    """A seeded random sample of ``size`` items of ``pool`` keeping its class proportions.

    Each class of the pool gets ``floor(size * share)`` items and the remaining ones go to the
    classes with the largest fractional parts, first class first on ties (largest-remainder
    apportionment), so the total is exactly ``size``. We allocate ourselves rather than use
    scikit-learn's stratified splitters because those refuse classes with a single member and
    sizes below the number of classes. Without labels the sample is a plain random draw.

    Args:
        pool: the items to draw from: ascending int indices ``(M,)``, or a count ``n`` for
            ``0..n-1``.
        labels: class of every item the indices in ``pool`` point at (so ``labels[pool]`` are
            the pool's classes), or None.
        size: how many items to draw, ``0 <= size <= M``.
        seed: an int or int sequence seeding a fresh generator, or a ``np.random.Generator``
            to draw from (it advances). The same seed and pool give the same sample.

    Returns:
        The chosen items of ``pool``, int64 ``(size,)``, ascending (the original order).
    """
    rng = np.random.default_rng(seed)  # a Generator is passed through as it is
    idx = np.arange(pool) if isinstance(pool, int | np.integer) else np.asarray(pool)
    if labels is None:
        return np.sort(rng.choice(idx, size=size, replace=False)).astype(np.int64)
    classes, inverse, counts = np.unique(np.asarray(labels)[idx], return_inverse=True,
                                         return_counts=True)
    exact = size * counts / len(idx)
    quota = np.floor(exact).astype(np.int64)
    leftover = size - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    chosen = [rng.choice(idx[inverse == k], size=int(quota[k]), replace=False)
              for k in range(len(classes))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
