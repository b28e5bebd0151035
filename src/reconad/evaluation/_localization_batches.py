"""Pixel AUROC and AU-PRO fed batch by batch: memory independent of the number of images.

The metrics (defined in :mod:`reconad.evaluation._localization`, whose exact functions are the
reference) only need, for every threshold, how many normal pixels, defect pixels and how much
of each defect region lie at or above it. :class:`LocalizationAccumulator` keeps exactly that
for a fixed ascending set of thresholds ``t_0 < ... < t_{T-1}``: per bin ``b`` (the pixels with
``t_{b-1} <= value < t_b``, bin 0 below ``t_0`` and bin T from ``t_{T-1}`` up) the count of
normal pixels, of defect pixels, and the sum over defect pixels of 1 / the size of their region
(connected, 8-connected, labelled per image, so a region never spans two batches). That is
``3 (T + 1)`` numbers per defect group, whatever the number of images. The ROC and PRO curves
are then exact at every threshold and joined by straight lines (trapezoids):

- **Pixel AUROC** differs from the exact value only by pairs (defect pixel, normal pixel) in the
  same bin, counted as ties (1/2) instead of by their order: ``|binned - exact| <=
  1/2 sum_b defect_b normal_b / (defects * normals)`` — at most half the largest share of the
  normal pixels in one bin.
- **PRO**: between two thresholds the exact curve is a monotone path inside the box the binned
  chord spans, so ``|binned - exact| <= sum_cells dFPR dPRO / 2 / max_fpr`` (the cell cut at
  ``max_fpr`` counted whole) — at most the largest FPR step over ``0.6`` (``2 max_fpr``).

:meth:`LocalizationAccumulator.error_bounds` computes both bounds from the counts. The bins
therefore should split the *normal* pixels evenly: :func:`localization_thresholds` takes
them from a sample of maps (the first batch, drawn at random from the set): every distinct
value of the sample when there are at most ``n_quantiles`` of them (then maps made of those
values are scored exactly: each bin holds one value), else ``n_quantiles`` equal-count order
statistics of the sample's normal pixels (interpolated, so a small sample still gives as many);
plus a grid uniform in ``asinh(value / scale)`` (``scale`` the sample's normal interquartile
range: even steps near the bulk, even relative steps in long tails) of ``n_uniform`` steps over
the sample's range widened by that range on each side, continued with relative steps of at most
1.1 % out to float32's largest value, so values the sample did not foresee (a long tail of
standardised maps) still land in narrow bins. With the defaults (about 50,000 thresholds,
1.2 MB per group) and a sample that represents the set, both errors stay below 1e-4
(tests/test_localization.py measures them against the exact functions and scikit-learn on
random, structured, heavy-tailed and tied maps).

>>> masks = np.zeros((2, 8, 8), bool); masks[1, 2:4, 2:5] = True
>>> maps = masks.astype(np.float32)  # a perfect map
>>> acc = LocalizationAccumulator(localization_thresholds(maps, masks))
>>> for i in range(2):  # one image per batch
...     acc.add(maps[i:i + 1], masks[i:i + 1])
>>> result = acc.result()
>>> round(result["pro"], 6), result["pixel_auroc"], result["n_regions"], result["n_images"]
(1.0, 1.0, 1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import label

from reconad.errors import ReconadError
from reconad.evaluation._localization import area_under, check_maps_and_masks

# 8-connectivity inside an image, none across images of a (N, H, W) stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True
# At most this many sample values are sorted to choose the thresholds (a seeded subsample
# above it: 32 MB of float64).
MAX_SAMPLE = 2**22


def localization_thresholds(
    maps: Any,
    masks: Any,
    n_quantiles: int = 2**14,
    n_uniform: int = 2**14,
    seed: int = 0,
) -> np.ndarray:
    """Ascending float64 thresholds for :class:`LocalizationAccumulator`, chosen on a sample.

    Args:
        maps: ``(N, H, W)`` sample anomaly maps (e.g. the first batch, drawn at random).
        masks: ``(N, H, W)`` their bool ground truth; the thresholds follow the normal pixels
            (all pixels when the sample has none).
        n_quantiles: Equal-count order statistics of the sample's normal values; all the
            sample's distinct values (normal and defect) when it has no more than this many.
        n_uniform: Steps of the grid over the sample's range widened on both sides (uniform in
            ``asinh(value / the normal values' interquartile range)``; coarser, 1.1 % relative
            steps, beyond).
        seed: Seed of the subsample when the sample has more than :data:`MAX_SAMPLE` values.

    Returns:
        ``(T,)`` strictly increasing finite thresholds.
    """
    maps, masks = check_maps_and_masks(maps, masks)
    if maps.size == 0:
        raise ReconadError("no anomaly maps to choose the thresholds from; give at least one map")
    rng = np.random.default_rng(seed)

    def sample(values: np.ndarray) -> np.ndarray:  # sorted float64, at most MAX_SAMPLE
        if values.size > MAX_SAMPLE:
            values = values[rng.integers(0, values.size, MAX_SAMPLE)]
        return np.sort(values.astype(np.float64))

    distinct = np.unique(sample(maps.ravel()))
    normal = sample(maps[~masks] if not masks.all() else maps.ravel())
    # equal-count quantiles, interpolated between sample values: a small sample still gets
    # n_quantiles edges, spread where its normal values are dense
    core = np.interp(np.linspace(0, len(normal) - 1, n_quantiles + 1), np.arange(len(normal)),
                     normal)
    if len(distinct) <= n_quantiles:  # every value a threshold: exact on maps made of them
        core = np.concatenate([core, distinct])
    # the grid: uniform in asinh(value / scale), scale the normal values' interquartile range
    # (even steps near the bulk, even relative steps in long tails), n_uniform steps over the
    # sample's range widened by that range on both sides; beyond, relative steps of 2^(1/64)
    # (1.1 %; the grid's own where coarser) out to float32's largest value, one unbounded bin
    # past it at each end
    lo, hi = float(maps.min()), float(maps.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    scale = float(np.subtract(*np.quantile(normal, [0.75, 0.25]))) or span
    a_lo, a_hi = np.arcsinh((lo - span) / scale), np.arcsinh((hi + span) / scale)
    step = max((a_hi - a_lo) / n_uniform, np.log(2) / 64)
    a_max = np.arcsinh(float(np.finfo(np.float32).max) / scale)
    grid = np.concatenate([np.linspace(a_lo, a_hi, n_uniform + 1),
                           np.arange(a_hi + step, a_max, step),
                           np.arange(a_lo - step, -a_max, -step)])
    edges = np.concatenate([core, scale * np.sinh(grid)])
    return np.unique(edges[np.isfinite(edges)])


@dataclass
class _Counts:
    """One group's pixels per bin; ``overlap`` sums 1 / region size over defect pixels."""

    n_bins: int
    normal: np.ndarray = field(init=False)  # (T + 1,) int64
    defect: np.ndarray = field(init=False)  # (T + 1,) int64
    overlap: np.ndarray = field(init=False)  # (T + 1,) float64
    n_images: int = 0
    n_regions: int = 0

    def __post_init__(self) -> None:
        self.normal = np.zeros(self.n_bins, np.int64)
        self.defect = np.zeros(self.n_bins, np.int64)
        self.overlap = np.zeros(self.n_bins, np.float64)

    def __add__(self, other: _Counts) -> _Counts:
        total = _Counts(self.n_bins)
        for name in ("normal", "defect", "overlap"):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        total.n_images = self.n_images + other.n_images
        total.n_regions = self.n_regions + other.n_regions
        return total

    def add(self, bins: np.ndarray, masks: np.ndarray) -> None:
        """Count a batch: ``bins`` (n, H, W) int64 bin of each pixel, ``masks`` (n, H, W)."""
        regions, count = label(masks, structure=_STRUCTURE)  # (n, H, W), 0 = normal
        self.normal += np.bincount(bins[~masks], minlength=self.n_bins)
        if count:
            self.defect += np.bincount(bins[masks], minlength=self.n_bins)
            sizes = np.bincount(regions.ravel(), minlength=count + 1).astype(np.float64)
            self.overlap += np.bincount(bins[masks], weights=1.0 / sizes[regions[masks]],
                                        minlength=self.n_bins)
        self.n_images += len(bins)
        self.n_regions += int(count)

    def curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FPR, TPR, PRO), each ``(T + 2,)``, from the highest threshold down: (0, 0, 0) to
        (1, 1, 1)."""
        def rate(counts: np.ndarray, total: float) -> np.ndarray:
            return np.clip(np.r_[0.0, np.cumsum(counts[::-1], dtype=np.float64)] / total, 0, 1)

        return (rate(self.normal, self.normal.sum()), rate(self.defect, self.defect.sum()),
                rate(self.overlap, self.n_regions))

    def metrics(self, max_fpr: float) -> dict[str, Any]:
        n_normal, n_defect = int(self.normal.sum()), int(self.defect.sum())
        defined = n_normal > 0 and n_defect > 0
        auroc = pro = None
        if defined:
            # trapezoids of the ROC curve in whole pixel counts (Python integers: no rounding,
            # so a perfect map scores exactly 1.0)
            normal = self.normal[::-1]  # from the highest bin down
            tp = np.r_[0, np.cumsum(self.defect[::-1])]
            steps = np.flatnonzero(normal)  # the bins where the FPR moves
            area = sum(n * (a + b) for n, a, b in zip(
                normal[steps].tolist(), tp[steps].tolist(), tp[steps + 1].tolist(), strict=True))
            auroc = area / (2 * n_normal * n_defect)
            fpr, _, overlap = self.curves()
            pro = area_under(fpr, overlap, max_fpr) / max_fpr
        return {"pixel_auroc": auroc, "pro": pro, "pro_max_fpr": max_fpr,
                "n_images": self.n_images, "n_pixels": n_normal + n_defect,
                "n_defect_pixels": n_defect, "n_regions": self.n_regions}

    def error_bounds(self, max_fpr: float) -> dict[str, float | None]:
        """Upper bounds of ``|binned - exact|`` (module docstring); None where undefined."""
        n_normal, n_defect = self.normal.sum(), self.defect.sum()
        if not (n_normal and n_defect):
            return {"pixel_auroc": None, "pro": None}
        auroc = 0.5 * float(np.sum(self.defect / n_defect * (self.normal / n_normal)))
        fpr, _, overlap = self.curves()
        cells = np.diff(fpr) * np.diff(overlap)  # (T + 1,) box of each bin on the PRO curve
        start = fpr[:-1]
        whole = fpr[1:] <= max_fpr
        cut = (start < max_fpr) & ~whole
        pro = (0.5 * cells[whole].sum() + cells[cut].sum()) / max_fpr
        return {"pixel_auroc": auroc, "pro": float(pro)}


class LocalizationAccumulator:
    """Pixel AUROC, AU-PRO and counts of maps added batch by batch, in ``O(thresholds)`` memory
    per defect group (module docstring: how, and how accurate).

    Args:
        thresholds: Ascending finite thresholds, fixed before the first batch
            (:func:`localization_thresholds` of a sample).
        normal_group: The group name of the normal images when batches come with groups.
        max_fpr: PRO integration limit in (0, 1].

    :meth:`result` is :func:`localization_metrics`'s dict: with groups given to :meth:`add`,
    every other group is also evaluated alone, on the normal images plus its own.
    """

    def __init__(self, thresholds: Any, normal_group: str = "good", max_fpr: float = 0.3) -> None:
        edges = np.asarray(thresholds, dtype=np.float64)
        if edges.ndim != 1 or edges.size == 0 or not np.isfinite(edges).all() or (
                np.diff(edges) <= 0).any():
            raise ReconadError("localisation thresholds must be a non-empty, strictly increasing "
                               "list of finite numbers (see localization_thresholds)")
        if not 0 < max_fpr <= 1:
            raise ReconadError(f"PRO integration limit {max_fpr} must lie in (0, 1] (usually 0.3)")
        self.thresholds = edges
        self.normal_group = normal_group
        self.max_fpr = max_fpr
        self._groups: dict[str | None, _Counts] = {}  # None: the batches came without groups
        self._grouped: bool | None = None  # unknown before the first batch

    def add(self, maps: Any, masks: Any, groups: Any = None) -> None:
        """Count one batch: ``maps`` ``(n, H, W)`` (higher = more anomalous), ``masks`` their
        bool ground truth, ``groups`` ``(n,)`` each image's defect kind (give them with every
        batch or with none)."""
        maps, masks = check_maps_and_masks(maps, masks)
        grouped = groups is not None
        if self._grouped is not None and self._grouped != grouped:
            raise ReconadError("give groups with every batch of anomaly maps or with none")
        self._grouped = grouped
        # bin b holds thresholds[b - 1] <= value < thresholds[b]: (n, H, W) int64
        bins = np.searchsorted(self.thresholds, maps, side="right")
        if not grouped:
            self._counts(None).add(bins, masks)
            return
        groups = np.asarray(groups).astype(str)
        if groups.shape != (len(maps),):
            raise ReconadError(f"{groups.shape[0] if groups.ndim else 1} group names for "
                               f"{len(maps)} anomaly maps; give one group per image")
        for kind in dict.fromkeys(groups.tolist()):
            keep = groups == kind
            self._counts(kind).add(bins[keep], masks[keep])

    def _counts(self, kind: str | None) -> _Counts:
        if kind not in self._groups:
            self._groups[kind] = _Counts(len(self.thresholds) + 1)
        return self._groups[kind]

    def _totals(self) -> tuple[_Counts, dict[str, _Counts]]:
        """All images' counts, and each defect kind's with the normal images'."""
        total = _Counts(len(self.thresholds) + 1)
        for counts in self._groups.values():
            total = total + counts
        if not self._grouped:
            return total, {}
        normal = self._groups.get(self.normal_group, _Counts(len(self.thresholds) + 1))
        return total, {kind: normal + counts for kind, counts in sorted(self._groups.items())
                       if kind != self.normal_group}

    def result(self) -> dict[str, Any]:
        """``{"pixel_auroc", "pro", "pro_max_fpr", "n_images", "n_pixels", "n_defect_pixels",
        "n_regions"}`` (None where undefined), plus ``"groups": {kind: the same keys}`` when the
        batches came with groups."""
        total, kinds = self._totals()
        result = total.metrics(self.max_fpr)
        if self._grouped:
            result["groups"] = {kind: c.metrics(self.max_fpr) for kind, c in kinds.items()}
        return result

    def error_bounds(self) -> dict[str, Any]:
        """Upper bounds of ``|binned - exact|`` of ``pixel_auroc`` and ``pro`` for these counts
        (None where the metric is), with ``"groups"`` as in :meth:`result`."""
        total, kinds = self._totals()
        bounds = total.error_bounds(self.max_fpr)
        if self._grouped:
            bounds["groups"] = {kind: c.error_bounds(self.max_fpr) for kind, c in kinds.items()}
        return bounds


def localization_metrics(
    maps: np.ndarray,
    masks: np.ndarray,
    groups: np.ndarray | None = None,
    normal_group: str = "good",
    max_fpr: float = 0.3,
    chunk: int = 64,
) -> dict[str, Any]:
    """Pixel AUROC, AU-PRO and counts, JSON-ready (None where undefined), for ``metrics.json``.

    The :class:`LocalizationAccumulator` with thresholds chosen on all of ``maps``: exact when
    the maps take at most 2^14 distinct values, else within the module docstring's
    bounds (below 1e-4 for maps of any size; :func:`pixel_auroc` and :func:`pro_score` are
    the exact functions).

    Args:
        maps: ``(N, H, W)`` anomaly maps of the test images (normal and defective).
        masks: ``(N, H, W)`` bool ground truth (all False for normal images).
        groups: ``(N,)`` defect kind of each image (``normal_group`` for normal ones); if
            given, every other kind is also evaluated alone, on the normal images plus its own.
        normal_group: The group name of the normal images.
        max_fpr: PRO integration limit.
        chunk: Images counted at once (bounds the memory besides ``maps``).

    Returns:
        ``{"pixel_auroc", "pro", "pro_max_fpr", "n_images", "n_pixels", "n_defect_pixels",
        "n_regions"}``, plus ``"groups": {kind: the same keys}`` when ``groups`` is given.
    """
    maps, masks = check_maps_and_masks(maps, masks)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        if groups.shape != (len(maps),):
            raise ReconadError(f"{groups.shape[0] if groups.ndim else 1} group names for "
                               f"{len(maps)} anomaly maps; give one group per image")
    thresholds = localization_thresholds(maps, masks) if maps.size else np.zeros(1)
    acc = LocalizationAccumulator(thresholds, normal_group, max_fpr)
    for start in range(0, len(maps), chunk):
        part = slice(start, start + chunk)
        acc.add(maps[part], masks[part], None if groups is None else groups[part])
    return acc.result()
