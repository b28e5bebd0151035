"""How well anomaly maps point at the defects: pixel AUROC and the PRO curve.

- **Pixel AUROC**: every pixel of every test image is a sample, its map value the score and its
  ground-truth mask the label (scikit-learn's ``roc_auc_score``; above ``max_pixels`` a seeded
  subsample keeping the defect/normal proportion bounds the memory).
- **PRO** (per-region overlap, Bergmann et al., MVTec AD, IJCV 2021): at a threshold ``t`` every
  connected defect region (8-connected, per image) scores the fraction of its pixels with map
  value ``>= t``; PRO(t) is the mean over all regions, so a small scratch counts as much as a
  large stain. The curve PRO(t) against the false positive rate on the normal pixels (all
  pixels outside the masks, of all images) is integrated (trapezoids, linearly interpolated at
  the limit) from FPR 0 to ``max_fpr`` = 0.3 and divided by 0.3: 1 is perfect, a map that
  knows nothing gives about ``max_fpr / 2`` = 0.15. This is the definition of MVTec's
  evaluation code and anomalib's AUPRO.

These functions take the whole ``(N, H, W)`` stack and are the exact reference: the PRO curve
is exact (every distinct map value a threshold) when there are at most ``n_thresholds``
pixels; otherwise the thresholds are quantiles of the normal pixels' values spaced evenly in
FPR over ``[0, max_fpr]``, so the integral is accurate to about ``max_fpr / n_thresholds``.
Each pixel is binned once (``searchsorted``) and the counts per threshold are cumulative sums:
``O(pixels * log(thresholds))``, chunked over images. Runs use
:mod:`reconad.evaluation._localization_batches` (``localization_metrics`` and the
``LocalizationAccumulator``), which counts maps batch by batch in memory independent of the
number of images.

>>> masks = np.zeros((2, 8, 8), bool); masks[1, 2:4, 2:5] = True
>>> maps = masks.astype(float)  # a perfect map
>>> round(pro_score(maps, masks), 6), pixel_auroc(maps, masks)
(1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reconad.errors import ReconadError

# 8-connectivity inside an image, none across images of a (N, H, W) stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def check_maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(maps, masks)`` as ``(N, H, W)`` arrays (one map may be ``(H, W)``), masks bool; a
    one-line error for shapes that differ and for NaN or infinite map values."""
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ReconadError(
            f"anomaly maps {maps.shape} and ground-truth masks {masks.shape} must both be "
            "(N, H, W) and equal; resize the maps to the mask size"
        )
    if not np.isfinite(maps).all():
        raise ReconadError("anomaly maps contain NaN or infinity: the model diverged; lower "
                           "train.lr")
    return maps, masks.astype(bool, copy=False)


def pixel_auroc(
    maps: np.ndarray, masks: np.ndarray, max_pixels: int = 4_000_000, seed: int = 0
) -> float | None:
    """Area under the ROC curve with every pixel a sample.

    Args:
        maps: ``(N, H, W)`` anomaly maps, higher = more anomalous.
        masks: ``(N, H, W)`` bool ground truth, True = defect pixel.
        max_pixels: Above this many pixels, a seeded subsample of this size with the same
            defect fraction (at least one pixel of each kind) is used.
        seed: Seed of that subsample.

    Returns:
        The AUROC, or None when every pixel is normal or every pixel is a defect.
    """
    from sklearn.metrics import roc_auc_score

    maps, masks = check_maps_and_masks(maps, masks)
    scores, labels = maps.ravel(), masks.ravel()
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        return None
    if labels.size > max_pixels:
        rng = np.random.default_rng(seed)
        keep_pos = min(max(round(max_pixels * n_pos / labels.size), 1), max_pixels - 1)
        pos = rng.choice(np.flatnonzero(labels), keep_pos, replace=False)
        neg = rng.choice(np.flatnonzero(~labels), max_pixels - keep_pos, replace=False)
        keep = np.concatenate([pos, neg])
        scores, labels = scores[keep], labels[keep]
    return float(roc_auc_score(labels, scores))


def pro_curve(
    maps: np.ndarray,
    masks: np.ndarray,
    max_fpr: float = 0.3,
    n_thresholds: int = 1000,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The PRO curve: per-region overlap against the false positive rate on normal pixels.

    Args:
        maps: ``(N, H, W)`` anomaly maps, higher = more anomalous.
        masks: ``(N, H, W)`` bool ground truth, True = defect pixel; needs at least one defect
            region and one normal pixel.
        max_fpr: The FPR range the quantile thresholds cover (the integration limit).
        n_thresholds: Number of thresholds (see the module docstring; exact below this many
            pixels).
        chunk: Images binned at once (bounds the memory).

    Returns:
        ``(fpr, pro)``, float64 ``(T + 1,)`` each, FPR increasing from the point (0, 0) at an
        infinite threshold to (1, 1) at the lowest map value.
    """
    maps, masks = check_maps_and_masks(maps, masks)
    normal_values = maps[~masks]
    if normal_values.size == 0 or not masks.any():
        raise ReconadError("the PRO curve needs defect regions and normal pixels; evaluate on "
                           "test images with and without defects")
    if maps.size <= n_thresholds:
        thresholds = np.unique(maps)  # exact: every distinct value
    else:
        levels = 1 - np.linspace(0, min(max_fpr, 1), n_thresholds)
        top = normal_values.max()
        thresholds = np.unique(np.concatenate([
            np.quantile(normal_values, levels), [np.nextafter(top, np.inf), maps.min()]]))
    thresholds = thresholds.astype(np.float64)  # ascending (T,)
    n_bins = len(thresholds) + 1
    fp_hist = np.zeros(n_bins)  # normal pixels by number of thresholds <= their value
    pro_hist = np.zeros(n_bins)  # the same, each region pixel weighted 1 / its region's size
    n_regions = 0
    from scipy.ndimage import label

    for start in range(0, len(maps), chunk):
        m, gt = maps[start:start + chunk], masks[start:start + chunk]
        regions, count = label(gt, structure=_STRUCTURE)  # (n, H, W), 0 = normal
        n_regions += count
        bins = np.searchsorted(thresholds, m.astype(np.float64), side="right")
        fp_hist += np.bincount(bins[~gt], minlength=n_bins)
        if count:
            sizes = np.bincount(regions.ravel(), minlength=count + 1).astype(np.float64)
            ids = regions[gt]
            pro_hist += np.bincount(bins[gt], weights=1.0 / sizes[ids], minlength=n_bins)
    # A pixel in bin j is >= thresholds[0..j-1]: counts at threshold k = sum of bins > k.
    fp = np.cumsum(fp_hist[::-1])[::-1][1:]  # (T,) ascending thresholds
    pro = np.cumsum(pro_hist[::-1])[::-1][1:]
    fpr = np.r_[0.0, fp[::-1] / normal_values.size]  # descending thresholds: FPR increasing
    pro = np.r_[0.0, pro[::-1] / n_regions]
    return np.clip(fpr, 0, 1), np.clip(pro, 0, 1)


def area_under(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under ``y(x)`` from ``x[0]`` to ``x_max``, ``y`` linearly interpolated at
    ``x_max``; ``x`` non-decreasing and reaching ``x_max``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x[-1] < x_max:
        raise ReconadError(f"the curve ends at {x[-1]:g} before the integration limit {x_max:g}")
    inside = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < x_max:  # close the area at x_max with the interpolated value
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.r_[xs, x_max]
        ys = np.r_[ys, y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)]
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def pro_score(
    maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, n_thresholds: int = 1000
) -> float | None:
    """Normalised area under the PRO curve up to ``max_fpr`` (1 = perfect, ~0.15 = chance).

    Returns:
        The AU-PRO in [0, 1], or None when there are no defect regions or no normal pixels.
    """
    if not 0 < max_fpr <= 1:
        raise ReconadError(f"PRO integration limit {max_fpr} must lie in (0, 1] (usually 0.3)")
    maps, masks = check_maps_and_masks(maps, masks)
    if not masks.any() or masks.all():
        return None
    fpr, pro = pro_curve(maps, masks, max_fpr, n_thresholds)
    return area_under(fpr, pro, max_fpr) / max_fpr
