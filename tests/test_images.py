"""The one image rule (reconad.data.as_images) and that the detector and loaders share it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconad.data import as_images, load_images
from reconad.detector import Detector
from reconad.errors import ReconadError


def grey_levels(shape=(3, 2, 4, 5), seed=0) -> np.ndarray:
    """uint8 images holding 0 and 255 and values between."""
    x = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    x.flat[0], x.flat[1] = 0, 255
    return x


def test_uint8_is_divided_by_255():
    x = grey_levels()
    out = as_images(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x.astype(np.float32) / np.float32(255))
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.int8, np.uint16, np.uint64])
def test_other_integers_in_0_255_read_like_uint8(dtype):
    x = grey_levels() if np.iinfo(dtype).max >= 255 else grey_levels() // 2  # int8: 0..127
    np.testing.assert_array_equal(as_images(x.astype(dtype)), as_images(x))


def test_integer_zeros_and_ones_are_grey_levels_not_unit_floats():
    # 1 means grey level 1/255 for every integer type, never "white" as in a float image.
    out = as_images(np.ones((1, 2, 2), dtype=np.int64))
    np.testing.assert_allclose(out, 1 / 255, rtol=1e-7)


def test_floats_are_kept_and_bools_become_0_and_1():
    x = np.random.default_rng(1).random((2, 3, 4, 4))  # float64 in [0, 1)
    x[0, 0, 0, 0] = 1.0
    out = as_images(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x.astype(np.float32))
    np.testing.assert_array_equal(as_images(x.astype(np.float16)), x.astype(np.float16))
    mask = np.array([[[True, False]]])
    np.testing.assert_array_equal(as_images(mask), [[[[1.0, 0.0]]]])


def test_three_axes_get_one_channel_and_tensors_and_lists_are_read():
    x = grey_levels((2, 3, 4))
    assert as_images(x).shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(as_images(torch.from_numpy(x)), as_images(x))
    np.testing.assert_array_equal(as_images(x.tolist()), as_images(x))  # int64 from a list


@pytest.mark.parametrize(("x", "message"), [
    (np.full((2, 1, 4, 4), 256, np.int64), r"^32 pixel values of pics lie outside 0\.\.255 "
     r"\(min 256, max 256\); .*store floats in \[0, 1\]$"),
    (np.full((2, 1, 4, 4), -1, np.int8), r"^32 pixel values of pics lie outside 0\.\.255"),
    (np.array([np.nan, np.inf, -np.inf, 0.5] * 8).reshape(2, 4, 4),
     r"^24 pixel values of pics are NaN or infinite; fix or drop those images$"),
    (np.linspace(0, 255, 32).reshape(2, 4, 4),
     r"^31 pixel values of pics lie outside \[0, 1\] \(min 0, max 255\); .*divide 8-bit "
     r"images by 255$"),
    (np.full((1, 1, 2, 2), -0.5), r"^4 pixel values of pics lie outside \[0, 1\] \(min -0\.5"),
    (np.zeros((0, 1, 4, 4)), r"^pics must be a non-empty array of shape \(N, H, W\) or "
     r"\(N, C, H, W\); got shape \(0, 1, 4, 4\)$"),
    (np.zeros((2, 0, 4)), r"non-empty array .* got shape \(2, 0, 4\)"),
    (np.zeros((4, 4)), r"got shape \(4, 4\)"),
    (np.zeros((1, 1, 1, 4, 4)), r"got shape \(1, 1, 1, 4, 4\)"),
    (np.zeros((1, 4, 4), dtype=complex), r"^pics holds complex128 values; images must be numbers"),
    (np.full((1, 2, 2), "a"), r"^pics holds <U1 values"),
    (np.array([[[None]]], dtype=object), r"^pics holds object values"),
])
def test_bad_images_raise_one_line_naming_the_fix(x, message):
    for to_float in (True, False):
        with pytest.raises(ReconadError, match=message) as caught:
            as_images(x, "pics", to_float=to_float)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("x", [grey_levels(), grey_levels().astype(np.int64),
                               np.linspace(0, 1, 24).reshape(1, 2, 3, 4), np.ones((1, 2, 2), bool)])
def test_to_float_false_keeps_the_stored_dtype(x):
    kept = as_images(x, to_float=False)
    assert kept.dtype == x.dtype and kept.ndim == 4 and kept.size == x.size
    assert np.shares_memory(kept, x)  # validated, not copied
    np.testing.assert_array_equal(as_images(kept), as_images(x))  # a batch converts later


def test_detector_and_file_loader_read_int64_grey_levels_alike(tmp_path):
    """Regression: int64 0..255 pixels loaded from a file, but Detector.fit refused them."""
    x = grey_levels((24, 1, 8, 8), seed=2)
    np.save(tmp_path / "x.npy", x.astype(np.int64))
    loaded, _ = load_images(tmp_path / "x.npy")
    np.testing.assert_array_equal(loaded, as_images(x))

    def fit(images):
        return Detector(model={"kind": "dense", "hidden": [8], "latent": 2},
                        train={"epochs": 1, "batch_size": 8}).fit(images)

    from_int64, from_uint8 = fit(x.astype(np.int64)), fit(x)
    np.testing.assert_allclose(from_int64.val_scores_, from_uint8.val_scores_, rtol=1e-6)
    np.testing.assert_allclose(from_int64.anomaly_score(x.astype(np.int64)),
                               from_uint8.anomaly_score(loaded), rtol=1e-5)
