"""Pixel AUROC and PRO against brute-force oracles and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

from reconad.errors import ReconadError
from reconad.evaluation import area_under, localization_metrics, pixel_auroc, pro_curve, pro_score


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
