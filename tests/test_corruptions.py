"""Corruptions: noise statistics, determinism, types, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from tolerances import assert_close

from reconad.errors import ReconadError
from reconad.transforms import KINDS, corrupt


def _grey(n: int = 8, h: int = 16, w: int = 16) -> np.ndarray:
    return np.full((n, 1, h, w), 0.5, dtype=np.float32)


def test_gaussian_residual_has_the_requested_std():
    x = _grey()
    out = corrupt(x, "gaussian", 0.1, np.random.default_rng(0))
    residual = out - x  # sigma 0.1 around 0.5: clipping is 5 sigma away
    assert abs(residual.mean()) < 0.005
    assert residual.std() == pytest.approx(0.1, rel=0.05)


def test_speckle_noise_scales_with_the_pixel_value():
    x = np.concatenate([np.full((8, 1, 16, 16), 0.2), np.full((8, 1, 16, 16), 0.4)])
    out = corrupt(x.astype(np.float32), "speckle", 0.25, np.random.default_rng(0))
    residual = out - x
    assert residual[:8].std() == pytest.approx(0.2 * 0.25, rel=0.07)
    assert residual[8:].std() == pytest.approx(0.4 * 0.25, rel=0.07)
    assert np.all(corrupt(np.zeros((2, 1, 4, 4), np.float32), "speckle", 0.5) == 0)


def test_salt_pepper_hits_the_requested_fraction_half_each():
    x = _grey(n=16, h=32, w=32)
    out = corrupt(x, "salt-pepper", 0.2, np.random.default_rng(0))
    salt, pepper = (out == 1).mean(), (out == 0).mean()
    assert salt + pepper == pytest.approx(0.2, abs=0.01)
    assert salt == pytest.approx(0.1, abs=0.01) and pepper == pytest.approx(0.1, abs=0.01)
    assert np.all((out == 0.5) | (out == 0) | (out == 1))


def test_salt_pepper_hits_all_channels_of_a_pixel_together():
    x = np.full((4, 3, 16, 16), 0.5, dtype=np.float32)
    out = corrupt(x, "salt-pepper", 0.3, np.random.default_rng(0))
    assert np.all(out.min(axis=1) == out.max(axis=1))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_blur_matches_scipy_gaussian_filter(sigma):
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 17, 23)).astype(np.float32)
    out = corrupt(x, "blur", sigma, np.random.default_rng(0))
    expected = np.stack([[gaussian_filter(ch.astype(np.float64), sigma, mode="nearest")
                          for ch in img] for img in x])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_patch_is_one_square_of_the_requested_side_filled_with_one_minus_mean():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.2, size=(50, 2, 20, 20)).astype(np.float32)
    out = corrupt(x, "patch", 0.25, np.random.default_rng(1))  # side 5
    changed = (out != x).any(axis=1)  # (B, H, W)
    tops = []
    for img, orig, mask in zip(out, x, changed, strict=True):
        rows, cols = np.nonzero(mask)
        assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4
        assert mask.sum() == 25  # the values (~0.9) never equal the originals (<= 0.2)
        fill = 1 - orig.mean(axis=(1, 2))  # (C,)
        assert_close(img[:, mask], np.repeat(fill[:, None], 25, 1), what="patch fill")
        tops.append(rows.min())
    assert min(tops) == 0 and max(tops) == 15  # every position 0..H-side is reachable


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_for_numpy_and_torch(kind):
    x = np.random.default_rng(0).random((4, 1, 12, 12)).astype(np.float32)
    a = corrupt(x, kind, 0.3, np.random.default_rng(5))
    b = corrupt(x, kind, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    t = torch.from_numpy(x)
    c = corrupt(t, kind, 0.3, torch.Generator().manual_seed(5))
    d = corrupt(t, kind, 0.3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(c, d, rtol=0, atol=0)
    if kind != "blur":  # blur draws nothing; every other kind must differ for another seed
        assert not np.array_equal(a, corrupt(x, kind, 0.3, np.random.default_rng(6)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_type_shape_dtype_and_range_are_preserved(kind, dtype):
    x = np.random.default_rng(0).random((3, 3, 9, 11)).astype(dtype)
    before = x.copy()
    out = corrupt(x, kind, 0.6, np.random.default_rng(0))
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == dtype
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(x, before)  # input untouched
    t = torch.from_numpy(x)
    out_t = corrupt(t, kind, 0.6, torch.Generator().manual_seed(0))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == t.shape and out_t.dtype == t.dtype
    assert out_t.min() >= 0 and out_t.max() <= 1


def test_a_numpy_generator_also_drives_a_tensor():
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    from_array = corrupt(x, "gaussian", 0.1, np.random.default_rng(3))
    from_tensor = corrupt(torch.from_numpy(x), "gaussian", 0.1, np.random.default_rng(3))
    assert_close(from_tensor.numpy(), from_array, what="tensor vs array")


def test_level_zero_returns_an_unchanged_copy():
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    out = corrupt(x, "patch", 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_unknown_kind_is_rejected():
    with pytest.raises(ReconadError, match="unknown corruption 'fog'; choose one of gaussian"):
        corrupt(_grey(), "fog", 0.1, np.random.default_rng(0))


@pytest.mark.parametrize("kind,level,match", [
    ("gaussian", -0.1, "noise level -0.1 must be a finite number >= 0"),
    ("salt-pepper", 1.5, "salt-pepper level 1.5 is a fraction and must be <= 1"),
    ("blur", float("nan"), "noise level nan must be a finite number"),
])
def test_bad_levels_are_rejected(kind, level, match):
    with pytest.raises(ReconadError, match=match):
        corrupt(_grey(), kind, level, np.random.default_rng(0))


def test_integer_or_flat_images_are_rejected():
    with pytest.raises(ReconadError, match=r"needs float images \(B, C, H, W\).*dtype uint8"):
        corrupt(np.zeros((2, 1, 4, 4), np.uint8), "gaussian", 0.1)
    with pytest.raises(ReconadError, match=r"got shape \(4, 4\)"):
        corrupt(np.zeros((4, 4), np.float32), "gaussian", 0.1)
