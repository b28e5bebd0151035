"""Anomaly maps, smoothing, standardisation and reductions against numpy/scipy/skimage oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from reconad.errors import ReconadError
from reconad.score import MapNormalizer, anomaly_map, gaussian_smooth, reduce_map


def _pair(seed: int = 0, shape=(3, 3, 20, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape)
    x_hat = np.clip(x + rng.normal(0, 0.1, shape), 0, 1)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(x_hat, dtype=torch.float64)


def test_squared_and_absolute_maps_are_channel_means_of_the_pixel_errors():
    x, x_hat = _pair()
    diff = x.numpy() - x_hat.numpy()
    np.testing.assert_allclose(anomaly_map(x, x_hat, "squared").numpy(),
                               (diff**2).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(anomaly_map(x, x_hat, "absolute").numpy(),
                               np.abs(diff).mean(axis=1), rtol=1e-12)


# skimage's Gaussian SSIM filters with 2 * int(3.5 sigma + 0.5) + 1 taps whatever win_size says,
# so each window goes with a sigma that gives skimage the same number of taps.
@pytest.mark.parametrize(("window", "sigma"), [(7, 0.8), (11, 1.5)])
def test_ssim_map_is_one_minus_skimage_full_map_on_interior_pixels(window, sigma):
    from skimage.metrics import structural_similarity

    x, x_hat = _pair(1, (2, 3, 32, 32))
    ours = anomaly_map(x.float(), x_hat.float(), "ssim", ssim_window=window,
                       ssim_sigma=sigma).numpy()
    r = window // 2
    for b in range(2):
        per_channel = [
            structural_similarity(x[b, c].numpy(), x_hat[b, c].numpy(), win_size=window,
                                  gaussian_weights=True, sigma=sigma,
                                  use_sample_covariance=False, data_range=1.0, full=True)[1]
            for c in range(3)
        ]
        expected = 1 - np.mean(per_channel, axis=0)
        np.testing.assert_allclose(ours[b, r:-r, r:-r], expected[r:-r, r:-r], atol=1e-3)


def test_ssim_map_is_zero_for_a_perfect_reconstruction_and_positive_where_wrong():
    x, _ = _pair(2, (1, 1, 24, 24))
    x_hat = x.clone()
    np.testing.assert_allclose(anomaly_map(x, x_hat, "ssim", ssim_window=7).numpy(), 0,
                               atol=1e-9)
    x_hat[0, 0, 10:14, 10:14] = 0.5
    m = anomaly_map(x, x_hat, "ssim", ssim_window=7)[0]
    assert m[12, 12] > 0.1 and abs(float(m[0, 0])) < 1e-9


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
def test_smoothing_matches_scipy_gaussian_filter_reflect(sigma):
    maps = np.random.default_rng(3).uniform(0, 1, (2, 13, 9))  # sigma 4: radius 16 > 13
    ours = gaussian_smooth(torch.tensor(maps), sigma).numpy()
    expected = np.stack([gaussian_filter(m, sigma, mode="reflect") for m in maps])
    np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_smoothing_of_float32_maps_and_of_a_single_map():
    m = np.random.default_rng(4).uniform(0, 1, (16, 16)).astype(np.float32)
    ours = gaussian_smooth(torch.tensor(m), 1.5)
    assert ours.shape == (16, 16) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), gaussian_filter(m.astype(np.float64), 1.5,
                                                             mode="reflect"), atol=1e-5)


def test_anomaly_map_smooth_sigma_is_the_smoothed_map():
    x, x_hat = _pair(5)
    raw = anomaly_map(x, x_hat, "absolute")
    np.testing.assert_allclose(anomaly_map(x, x_hat, "absolute", smooth_sigma=2).numpy(),
                               gaussian_smooth(raw, 2).numpy(), rtol=1e-12)


def test_reductions_against_numpy():
    maps = np.random.default_rng(6).uniform(0, 1, (4, 10, 20))  # 200 pixels per map
    t = torch.tensor(maps)
    flat = maps.reshape(4, -1)
    np.testing.assert_allclose(reduce_map(t, "mean").numpy(), flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(reduce_map(t, "max").numpy(), flat.max(1), rtol=1e-12)
    for fraction, k in [(0.01, 2), (0.05, 10), (0.07, 14), (0.001, 1), (1.0, 200)]:
        expected = np.sort(flat, axis=1)[:, -k:].mean(axis=1)
        np.testing.assert_allclose(reduce_map(t, "topk", fraction).numpy(), expected,
                                   rtol=1e-12)


def test_topk_finds_a_small_defect_that_the_mean_misses():
    rng = np.random.default_rng(7)
    # Images differ in overall difficulty (scale 0.7..1.3) far more than a defect moves the mean.
    scale = rng.uniform(0.7, 1.3, (20, 1, 1))
    maps = torch.tensor(rng.uniform(0, 0.1, (20, 64, 64)) * scale)
    maps[10:, 30:36, 30:36] += 0.2  # 36 pixels of 4096 (< 1 %) in the last ten
    labels = np.r_[np.zeros(10), np.ones(10)]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, reduce_map(maps, "topk", 0.005).numpy()) == 1.0
    assert roc_auc_score(labels, reduce_map(maps, "mean").numpy()) < 0.8


def test_normalizer_standardises_each_position_and_floors_the_std():
    rng = np.random.default_rng(8)
    normal = rng.normal(0, 1, (200, 6, 6)) * np.linspace(0.5, 3, 36).reshape(6, 6) + 2
    normal[:, 0, 0] = 5.0  # a position that never varies
    norm = MapNormalizer(min_std_fraction=0.1).fit(torch.tensor(normal))
    np.testing.assert_allclose(norm.mean_.numpy(), normal.mean(0), rtol=1e-12)
    std = normal.std(0)
    floor = 0.1 * std.mean()
    np.testing.assert_allclose(norm.std_.numpy(), np.maximum(std, floor), rtol=1e-12)
    z = norm.transform(torch.tensor(normal)).numpy()
    np.testing.assert_allclose(z[:, 1:, 1:].std(0), 1, rtol=1e-9)
    assert np.abs(z[:, 0, 0]).max() == 0
    restored = MapNormalizer.from_state_dict(norm.state_dict())
    np.testing.assert_allclose(restored.transform(torch.tensor(normal)).numpy(), z)


def test_normalizer_refuses_unfitted_use_wrong_sizes_and_a_single_map():
    with pytest.raises(ReconadError, match="not fitted"):
        MapNormalizer().transform(torch.zeros(1, 4, 4))
    with pytest.raises(ReconadError, match="at least 2"):
        MapNormalizer().fit(torch.zeros(1, 4, 4))
    norm = MapNormalizer().fit(torch.rand(5, 4, 4))
    with pytest.raises(ReconadError, match="fitted on"):
        norm.transform(torch.zeros(1, 5, 4))


def test_bad_arguments_are_one_line_errors():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ReconadError, match="unknown anomaly map"):
        anomaly_map(x, x, "psnr")
    with pytest.raises(ReconadError, match="both must be"):
        anomaly_map(x, torch.zeros(1, 1, 8, 9))
    with pytest.raises(ReconadError, match="unknown map reduction"):
        reduce_map(x[:, 0], "median")
    with pytest.raises(ReconadError, match="topk fraction"):
        reduce_map(x[:, 0], "topk", 0)
    with pytest.raises(ReconadError, match="sigma"):
        gaussian_smooth(x[:, 0], -1)
    with pytest.raises(ReconadError, match="window"):
        anomaly_map(x, x, "ssim", ssim_window=9)
    assert math.isclose(float(reduce_map(x[:, 0] + 1, "topk", 0.5)[0]), 1.0)
