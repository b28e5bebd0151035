"""Quality floors: the least AUROC a detector must reach on a tiny case where it must work.

A floor is chosen from the values a few seeds of the case reach, with a margin below the lowest
(each test states what it observed). It must also lie well above chance: more than 4 standard
deviations of the AUROC of random scores above 0.5 for the set's sizes, so that a detector whose
scores are random, negated or given to the wrong images fails it (a random score passes with
probability below 1e-4). :func:`assert_auroc_floor` checks both.
"""

from __future__ import annotations

import math


def random_auroc_sd(n_normal: int, n_anomaly: int) -> float:
    """Standard deviation of the AUROC of random scores (the Mann-Whitney U under no effect)."""
    return math.sqrt((n_normal + n_anomaly + 1) / (12 * n_normal * n_anomaly))


def assert_auroc_floor(auroc: float, floor: float, n_normal: int, n_anomaly: int,
                       what: str) -> None:
    chance = 0.5 + 4 * random_auroc_sd(n_normal, n_anomaly)
    assert floor > chance, f"{what}: a floor of {floor} is within chance ({chance:.3f})"
    assert auroc >= floor, f"{what} AUROC {auroc:.4f} is below its floor {floor}"
