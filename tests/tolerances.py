"""How close two computed floats must be to count as equal: stated once, used by every test.

Why not exact equality: reconad computes in float32. The same formula evaluated with another
summation order (another batch size, thread count, CPU vector width, BLAS kernel or torch
version) rounds differently. float32 has a unit roundoff of 2**-24 ≈ 6e-8, and a mean or a
matrix product over a few thousand terms accumulates error ~ sqrt(n) to n times that, so a
relative difference of ~1e-6 is ordinary and 1e-4 is a generous bound that still catches any
real change (a different model, a wrong formula or a dropped image moves scores by percents).
Scores near zero (a perfectly reconstructed image) need an absolute floor: ``FLOAT32_ATOL``.

Numbers that went through text keep ``%.8g`` (8 significant digits, the CSV writers' format),
so ``TEXT`` is 1e-7 relative. Numbers computed in float64 by numpy/scikit-learn from the same
inputs (metrics, thresholds) agree to ~1e-12; ``FLOAT64`` allows 1e-9.

Exact equality stays where it is genuinely exact: integers and counts, labels and flags, and
the same computation repeated in the same process (determinism tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """A relative and an absolute tolerance, as in :func:`numpy.testing.assert_allclose`."""

    rtol: float
    atol: float


FLOAT32 = Tolerance(rtol=1e-4, atol=1e-5)  # float32 scores, losses, weights
TEXT = Tolerance(rtol=1e-7, atol=0.0)  # a float written with %.8g and read back
FLOAT64 = Tolerance(rtol=1e-9, atol=1e-12)  # float64 statistics of the same inputs
# The same short training on another device (CPU vs GPU, no TF32): every step rounds
# differently and training compounds it over a few hundred steps; 1e-3 still catches a
# different model, loss or data order (they move losses and scores by percents).
DEVICE = Tolerance(rtol=1e-3, atol=1e-5)

FLOAT32_RTOL, FLOAT32_ATOL = FLOAT32.rtol, FLOAT32.atol


def assert_close(actual, expected, what: str = "value", tol: Tolerance = FLOAT32) -> None:
    """Assert ``actual`` ≈ ``expected`` elementwise (scalars, sequences or arrays; ``None``
    must match ``None``), naming ``what`` in the failure message."""
    if expected is None or actual is None:
        assert actual is expected, f"{what}: {actual!r} != {expected!r}"
        return
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64),
                               rtol=tol.rtol, atol=tol.atol, err_msg=what)


def approx(expected, tol: Tolerance = FLOAT32):
    """``pytest.approx`` with a named tolerance, for comparisons inside expressions."""
    import pytest

    return pytest.approx(expected, rel=tol.rtol, abs=tol.atol)
