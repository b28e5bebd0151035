"""Pixel AUROC and PRO against brute-force oracles and analytic cases; the batch-by-batch
accumulator against the exact functions and scikit-learn, and its memory against the number of
images."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, label
from sklearn.metrics import roc_auc_score

from reconad.errors import ReconadError
from reconad.evaluation import (
    LocalizationAccumulator,
    area_under,
    localization_metrics,
    localization_thresholds,
    pixel_auroc,
    pro_curve,
    pro_score,
)


def _brute_force_pro(maps, masks, max_fpr=0.3):
    """Straight from the definition: loop over every distinct value, every region."""
    regions = []
    for i, gt in enumerate(masks):
        labelled, n = label(gt, structure=np.ones((3, 3)))
        regions += [(i, labelled == k) for k in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        hit = maps >= t
        fprs.append((hit & normal).sum() / normal.sum())
        pros.append(np.mean([hit[i][r].mean() for i, r in regions]))
    area = 0.0
    for k in range(len(fprs) - 1):
        x0, y0, x1, y1 = fprs[k], pros[k], fprs[k + 1], pros[k + 1]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last trapezoid at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += 0.5 * (y0 + y1) * (x1 - x0)
    return np.array(fprs), np.array(pros), area / max_fpr


def _tiny_case(seed):
    """3 images of 8x8 with 0-3 rectangular regions, maps with ties and some signal."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 8, 8), bool)
    for i in range(3):
        for _ in range(rng.integers(0 if i == 0 else 1, 4)):
            top, left = rng.integers(0, 7, 2)
            h, w = rng.integers(1, 4, 2)
            masks[i, top:top + h, left:left + w] = True
    maps = np.round(rng.uniform(0, 1, masks.shape) + 0.6 * masks, 1)  # ties on purpose
    return maps, masks


@pytest.mark.parametrize("seed", range(6))
def test_pro_curve_and_score_equal_the_brute_force_definition(seed):
    maps, masks = _tiny_case(seed)
    fpr, pro = pro_curve(maps, masks)
    fpr_bf, pro_bf, score_bf = _brute_force_pro(maps, masks)
    np.testing.assert_allclose(fpr, fpr_bf, atol=1e-12)
    np.testing.assert_allclose(pro, pro_bf, atol=1e-12)
    assert pro_score(maps, masks) == pytest.approx(score_bf, abs=1e-12)
    assert fpr[-1] == 1 and pro[-1] == pytest.approx(1)


def test_a_perfect_map_has_pro_one_and_pixel_auroc_one():
    maps, masks = _tiny_case(0)
    perfect = masks + np.random.default_rng(1).uniform(0, 0.5, masks.shape)
    assert pro_score(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(perfect, masks) == 1.0


def test_a_map_independent_of_the_masks_scores_about_chance():
    rng = np.random.default_rng(2)
    masks = np.zeros((60, 32, 32), bool)
    for i in range(30, 60):
        top, left = rng.integers(0, 26, 2)
        masks[i, top:top + 6, left:left + 6] = True
    maps = rng.uniform(0, 1, masks.shape)
    assert pro_score(maps, masks) == pytest.approx(0.15, abs=0.02)  # PRO(fpr) ~ fpr
    assert pixel_auroc(maps, masks) == pytest.approx(0.5, abs=0.02)


def test_every_region_counts_the_same_whatever_its_size():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 0:10, 0:10] = True  # 100 pixels, found
    masks[1, 5, 5] = True  # 1 pixel, missed
    maps = np.where(masks, 0.0, 0.5)
    maps[0][masks[0]] = 1.0
    maps[1, 5, 5] = 0.0
    # PRO is 0.5 from FPR 0 up to the FPR where the missed pixel is reached (1.0)
    assert pro_score(maps, masks) == pytest.approx(0.5)
    assert pixel_auroc(maps, masks) > 0.99


def test_diagonal_pixels_are_one_region():
    masks = np.zeros((1, 5, 5), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # 8-connected
    masks[0, 4, 0] = True
    maps = masks.astype(float)
    assert localization_metrics(maps, masks)["n_regions"] == 2


def test_quantile_thresholds_approximate_the_exact_curve():
    rng = np.random.default_rng(3)
    masks = np.zeros((40, 32, 32), bool)
    for i in range(20, 40):
        top, left = rng.integers(0, 24, 2)
        masks[i, top:top + rng.integers(2, 8), left:left + rng.integers(2, 8)] = True
    maps = rng.normal(0, 1, masks.shape) + 1.5 * masks
    exact = pro_score(maps, masks, n_thresholds=10**6)
    fast = pro_score(maps, masks, n_thresholds=300)
    assert 0.3 < exact < 0.95
    assert fast == pytest.approx(exact, abs=2e-3)


def test_pixel_auroc_subsample_is_close_to_the_full_value_and_seeded():
    rng = np.random.default_rng(4)
    masks = rng.uniform(size=(10, 64, 64)) < 0.02
    maps = rng.normal(0, 1, masks.shape) + masks
    full = pixel_auroc(maps, masks)
    assert full == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    sub = pixel_auroc(maps, masks, max_pixels=20_000, seed=1)
    assert sub == pytest.approx(full, abs=0.02)
    assert sub == pixel_auroc(maps, masks, max_pixels=20_000, seed=1)


def test_undefined_metrics_are_none_and_bad_input_a_one_line_error():
    maps = np.random.default_rng(5).uniform(size=(2, 8, 8))
    no_defect = np.zeros((2, 8, 8), bool)
    result = localization_metrics(maps, no_defect)
    assert result["pixel_auroc"] is None and result["pro"] is None
    assert result["n_pixels"] == 128 and result["n_defect_pixels"] == 0
    with pytest.raises(ReconadError, match="must both be"):
        pixel_auroc(maps, no_defect[:, :4])
    with pytest.raises(ReconadError, match="NaN"):
        pro_score(np.full((1, 4, 4), np.nan), np.eye(4, dtype=bool)[None])
    with pytest.raises(ReconadError, match="integration limit"):
        pro_score(maps, no_defect, max_fpr=0)


def test_area_under_interpolates_at_the_limit():
    assert area_under([0, 0.2, 0.4], [0, 1, 1], 0.3) == pytest.approx(0.1 + 0.1)
    assert area_under([0, 0.3, 1], [1, 1, 1], 0.3) == pytest.approx(0.3)


def test_each_defect_kind_is_also_evaluated_with_the_normal_images():
    rng = np.random.default_rng(6)
    masks = np.zeros((9, 16, 16), bool)
    masks[3:6, 4:8, 4:8] = True  # "found"
    masks[6:9, 9:12, 2:6] = True  # "missed"
    groups = np.array(["good"] * 3 + ["found"] * 3 + ["missed"] * 3)
    maps = rng.uniform(0, 1, masks.shape)
    maps[3:6][masks[3:6]] += 2  # only the "found" defects light up
    result = localization_metrics(maps, masks, groups)
    assert set(result["groups"]) == {"found", "missed"}
    found, missed = result["groups"]["found"], result["groups"]["missed"]
    assert found["pro"] == pytest.approx(1.0) and found["pixel_auroc"] == 1.0
    assert found["n_images"] == 6 and found["n_regions"] == 3
    assert missed["pro"] < 0.5 and missed["pixel_auroc"] < 0.8
    assert found["pro"] > result["pro"] > missed["pro"]
    with pytest.raises(ReconadError, match="one group per image"):
        localization_metrics(maps, masks, groups[:4])


# ---------------------------------------------------------------------------------------------
# LocalizationAccumulator: binned counts, fed batch by batch

BINNED_TOLERANCE = 1e-4  # documented in evaluation/_localization_batches.py


def _structured(kind: str, n: int = 80, side: int = 48, seed: int = 0):
    """Half the images with a rectangular defect (1-11 pixels a side), float32 maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), bool)
    for i in range(n // 2, n):
        top, left = rng.integers(0, side - 12, 2)
        masks[i, top:top + rng.integers(1, 12), left:left + rng.integers(1, 12)] = True
    noise = rng.normal(0, 1, masks.shape)
    if kind == "random":
        maps = rng.uniform(0, 1, masks.shape)
    elif kind == "normal":
        maps = noise + masks
    elif kind == "smooth":  # spatially correlated, a clear signal
        maps = gaussian_filter(noise + 2 * masks, (0, 2, 2))
    elif kind == "drift":  # later images brighter: the first batch (stored order) misleads
        maps = np.exp(noise + 0.8 * masks + np.linspace(0, 2, n)[:, None, None])
    elif kind == "heavy":  # a long tail far beyond any one batch's range, as standardised maps
        maps = rng.standard_t(1.5, masks.shape) ** 3 + 20 * masks
    else:  # "ties": 101 distinct values
        maps = np.round(rng.uniform(0, 1, masks.shape) + 0.3 * masks, 2)
    return maps.astype(np.float32), masks


def _accumulate(maps, masks, batch: int, groups=None, shuffle: bool = True,
                **kwargs) -> LocalizationAccumulator:
    """Thresholds from the first batch (seeded random order, or stored order), then batches."""
    order = np.random.default_rng(7).permutation(len(maps)) if shuffle else np.arange(len(maps))
    acc = None
    for start in range(0, len(maps), batch):
        idx = np.sort(order[start:start + batch])
        if acc is None:
            acc = LocalizationAccumulator(localization_thresholds(maps[idx], masks[idx]), **kwargs)
        acc.add(maps[idx], masks[idx], None if groups is None else groups[idx])
    return acc


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("kind", ["random", "normal", "smooth", "drift", "heavy", "ties"])
def test_binned_metrics_equal_the_exact_ones_within_the_documented_tolerance(kind, shuffle):
    maps, masks = _structured(kind)
    exact_auroc = roc_auc_score(masks.ravel(), maps.ravel())
    exact_pro = pro_score(maps, masks, n_thresholds=maps.size)  # every distinct value
    acc = _accumulate(maps, masks, batch=2, shuffle=shuffle)  # the first 2 maps: the sample
    result, bounds = acc.result(), acc.error_bounds()
    auroc_error = abs(result["pixel_auroc"] - exact_auroc)
    pro_error = abs(result["pro"] - exact_pro)
    assert auroc_error <= BINNED_TOLERANCE and pro_error <= BINNED_TOLERANCE
    assert auroc_error <= bounds["pixel_auroc"] + 1e-12 and pro_error <= bounds["pro"] + 1e-12
    if kind == "ties":  # every value a threshold: exact
        assert auroc_error < 1e-12 and pro_error < 1e-12
    else:  # the bounds themselves are small when the bins split the normal pixels evenly
        assert bounds["pixel_auroc"] < 1e-3 and bounds["pro"] < 1e-3
    counts = {"n_images": 80, "n_pixels": maps.size, "n_defect_pixels": int(masks.sum()),
              "n_regions": 40, "pro_max_fpr": 0.3}
    assert {k: result[k] for k in counts} == counts


@pytest.mark.parametrize("seed", range(6))
def test_binned_metrics_of_few_distinct_values_equal_the_brute_force_definition(seed):
    maps, masks = _tiny_case(seed)
    _, _, score_bf = _brute_force_pro(maps, masks)
    for result in (localization_metrics(maps, masks), _accumulate(maps, masks, 1).result()):
        assert result["pro"] == pytest.approx(score_bf, abs=1e-12)
        assert result["pixel_auroc"] == pytest.approx(
            roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_constant_maps_score_chance_like_the_exact_functions():
    _, masks = _structured("random", n=10, side=16)
    maps = np.full(masks.shape, 0.25, np.float32)
    result = _accumulate(maps, masks, batch=3).result()
    assert result["pixel_auroc"] == pixel_auroc(maps, masks) == 0.5
    assert result["pro"] == pytest.approx(pro_score(maps, masks), abs=1e-12)
    assert result["pro"] == pytest.approx(0.15)


def test_images_without_defects_and_sets_of_all_defects():
    maps, masks = _structured("normal", n=12, side=16)
    acc = _accumulate(maps, masks, batch=2, shuffle=False)  # first batches: defect-free
    assert acc.result()["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks), abs=1e-4)
    clean = LocalizationAccumulator(localization_thresholds(maps[:6], masks[:6]))
    clean.add(maps[:6], masks[:6])
    assert clean.result()["pixel_auroc"] is None and clean.result()["pro"] is None
    assert clean.error_bounds() == {"pixel_auroc": None, "pro": None}
    full = np.ones((2, 8, 8), bool)  # every pixel a defect: thresholds from all pixels
    everything = LocalizationAccumulator(localization_thresholds(maps[:2, :8, :8], full))
    everything.add(maps[:2, :8, :8], full)
    result = everything.result()
    assert result["pixel_auroc"] is None and result["pro"] is None
    assert result["n_regions"] == 2 and result["n_defect_pixels"] == 128
    assert localization_metrics(maps[:2, :8, :8], full) == result


def test_groups_are_each_evaluated_with_the_normal_images_in_batches():
    maps, masks = _structured("smooth", n=30, side=24)
    groups = np.array(["good"] * 15 + ["scratch", "stain"] * 7 + ["scratch"])
    result = _accumulate(maps, masks, batch=4, groups=groups).result()
    for kind in ("scratch", "stain"):
        keep = (groups == "good") | (groups == kind)
        got = result["groups"][kind]
        assert got["pixel_auroc"] == pytest.approx(
            roc_auc_score(masks[keep].ravel(), maps[keep].ravel()), abs=BINNED_TOLERANCE)
        assert got["pro"] == pytest.approx(
            pro_score(maps[keep], masks[keep], n_thresholds=maps.size), abs=BINNED_TOLERANCE)
        assert got["n_images"] == keep.sum()
    assert set(result) - {"groups"} == set(result["groups"]["stain"])
    whole = localization_metrics(maps, masks, groups)  # thresholds from all maps
    for kind in ("scratch", "stain"):
        for key in ("pixel_auroc", "pro"):
            assert whole["groups"][kind][key] == pytest.approx(result["groups"][kind][key],
                                                               abs=2 * BINNED_TOLERANCE)


def test_bad_batches_and_thresholds_are_one_line_errors():
    maps, masks = _structured("normal", n=4, side=16)
    acc = LocalizationAccumulator(localization_thresholds(maps, masks))
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    for call, pattern in [
        (lambda: acc.add(bad, masks), "NaN"),
        (lambda: acc.add(maps, masks[:, :4]), "must both be"),
        (lambda: LocalizationAccumulator([0.0, 0.0]), "strictly increasing"),
        (lambda: LocalizationAccumulator([0.0, np.inf]), "strictly increasing"),
        (lambda: LocalizationAccumulator([0.0], max_fpr=0), "integration limit"),
        (lambda: localization_thresholds(bad, masks), "NaN"),
    ]:
        with pytest.raises(ReconadError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
    acc.add(maps, masks)
    with pytest.raises(ReconadError, match="every batch"):
        acc.add(maps, masks, ["good"] * 4)
    with pytest.raises(ReconadError, match="one group per image"):
        LocalizationAccumulator([0.0]).add(maps, masks, ["good"] * 3)


def _peak_bytes(n_batches: int, per_batch: int = 4, side: int = 256) -> int:
    """tracemalloc peak of accumulating ``n_batches`` synthetic map batches made on the fly."""
    tracemalloc.start()
    try:
        acc = None
        for b in range(n_batches):
            rng = np.random.default_rng(b)
            masks = np.zeros((per_batch, side, side), bool)
            masks[1::2, 40:90, 100:130] = True
            maps = (rng.normal(0, 1, masks.shape) + masks).astype(np.float32)
            if acc is None:
                acc = LocalizationAccumulator(localization_thresholds(maps, masks))
            acc.add(maps, masks, np.where(np.arange(per_batch) % 2, "defect", "good"))
        assert acc.result()["n_images"] == n_batches * per_batch
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_accumulator_memory_is_flat_in_the_number_of_images():
    small, large = _peak_bytes(3), _peak_bytes(12)
    assert large <= 1.2 * small, (small, large)
