"""Per-image losses and our SSIM, checked against skimage, torch.nn.functional and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.metrics import structural_similarity
from skimage.transform import resize
from tolerances import approx

from reconad.config import LossConfig
from reconad.errors import ReconadError
from reconad.losses import (
    error_map,
    loss_from_config,
    per_image_loss,
    robust_batch_loss,
    ssim,
    ssim_map,
)


def _skimage_ssim(a: np.ndarray, b: np.ndarray, full: bool = False):
    """Oracle on one (C, H, W) pair."""
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=0,
                                 full=full)


def _pairs(shape: tuple[int, int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random and real-looking image pairs of one shape, float32 in [0, 1]."""
    rng = np.random.default_rng(1)
    c, h, w = shape
    noise = rng.random((2, c, h, w))
    photo = skdata.astronaut() if c == 3 else skdata.camera()[..., None]
    photo = resize(photo[100:300, 150:350], (h, w), anti_aliasing=True)  # (h, w, c)
    clean = np.moveaxis(photo, -1, 0)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    darker = clean * 0.7
    shifted = np.roll(clean, 2, axis=-1)
    pairs = [(noise[0], noise[1]), (clean, noisy), (clean, darker), (clean, shifted),
             (clean, clean)]
    return [(a.astype(np.float32), b.astype(np.float32)) for a, b in pairs]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 17, 23), (3, 11, 14)])
def test_ssim_matches_skimage(shape):
    pairs = _pairs(shape)
    x = torch.from_numpy(np.stack([a for a, _ in pairs]))
    y = torch.from_numpy(np.stack([b for _, b in pairs]))
    expected = np.array([_skimage_ssim(a, b) for a, b in pairs])
    ours = ssim(x, y).numpy()
    assert ours.shape == (len(pairs),)
    np.testing.assert_allclose(ours, expected, atol=1e-3)
    assert ours[-1] == pytest.approx(1.0, abs=1e-5)  # identical images
    assert len(set(np.round(expected, 2))) >= 4  # the pairs really differ


def test_full_ssim_map_matches_skimage_full_map():
    a, b = _pairs((3, 17, 23))[1]
    _, expected = _skimage_ssim(a, b, full=True)  # (C, H, W)
    ours = ssim_map(torch.from_numpy(a[None]), torch.from_numpy(b[None]), full=True)[0]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-3)
    valid = ssim_map(torch.from_numpy(a[None]), torch.from_numpy(b[None]))
    assert valid.shape == (1, 3, 17 - 10, 23 - 10)
    np.testing.assert_allclose(valid[0].numpy(), expected[:, 5:-5, 5:-5], atol=1e-5)


def test_ssim_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 9, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 2, 9, 10, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y, window=5), (x,))


def test_mix_gradient_flows_into_the_reconstruction():
    x = torch.rand(2, 1, 12, 12)
    x_hat = torch.rand(2, 1, 12, 12, requires_grad=True)
    per_image_loss("mix", x_hat, x, ssim_window=7).sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


def _batch():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 12, 13, generator=gen)
    x_hat = torch.rand(4, 3, 12, 13, generator=gen)
    return x_hat, x


def test_mse_l1_bce_match_torch_and_numpy_oracles():
    x_hat, x = _batch()
    for i in range(4):
        assert per_image_loss("mse", x_hat, x)[i].item() == approx(
            F.mse_loss(x_hat[i], x[i]).item())
        assert per_image_loss("l1", x_hat, x)[i].item() == approx(
            np.abs(x_hat[i].numpy() - x[i].numpy()).mean())
        p, t = x_hat[i].double().numpy(), x[i].double().numpy()
        bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
        assert per_image_loss("bce", x_hat, x)[i].item() == pytest.approx(bce, rel=1e-4)


def test_ssim_and_mix_losses_are_built_from_ssim_and_mse():
    x_hat, x = _batch()
    s = ssim(x_hat, x, window=7, sigma=1.0)
    d = 1 - s
    torch.testing.assert_close(per_image_loss("ssim", x_hat, x, ssim_window=7, ssim_sigma=1.0), d)
    mse = per_image_loss("mse", x_hat, x)
    mixed = per_image_loss("mix", x_hat, x, ssim_weight=0.25, ssim_window=7, ssim_sigma=1.0)
    torch.testing.assert_close(mixed, 0.75 * mse + 0.25 * d)


def test_bce_is_finite_at_exact_zero_and_one():
    x = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2)
    x_hat = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2).requires_grad_()
    loss = per_image_loss("bce", x_hat, x)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x_hat.grad).all()
    # Two perfect pixels (~0) and two maximally wrong ones (-log(1e-6) each), averaged.
    assert loss.item() == pytest.approx(-np.log(1e-6) / 2, rel=1e-3)


@pytest.mark.parametrize("kind", ["mse", "l1", "bce", "ssim", "mix"])
def test_loss_from_config_equals_per_image_loss(kind):
    x_hat, x = _batch()
    cfg = LossConfig(kind=kind, ssim_weight=0.3, ssim_window=5, ssim_sigma=1.0)
    expected = per_image_loss(kind, x_hat, x, ssim_weight=0.3, ssim_window=5, ssim_sigma=1.0)
    got = loss_from_config(cfg)(x_hat, x)
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", ["mse", "l1", "bce", "ssim"])
def test_error_map_is_per_pixel_and_agrees_with_the_loss(kind):
    x_hat, x = _batch()
    emap = error_map(kind, x_hat, x, ssim_window=5, ssim_sigma=1.0)
    assert emap.shape == (4, 12, 13)
    if kind == "ssim":
        # Inside the border the full map is the valid map: its mean is 1 - ssim.
        inner = emap[:, 2:-2, 2:-2].mean(dim=(1, 2))
        torch.testing.assert_close(inner, 1 - ssim(x_hat, x, window=5, sigma=1.0))
    else:
        torch.testing.assert_close(emap.mean(dim=(1, 2)), per_image_loss(kind, x_hat, x))


def test_error_map_shows_where_the_images_differ():
    x = torch.zeros(1, 1, 16, 16)
    x_hat = x.clone()
    x_hat[0, 0, 2:5, 10:13] = 1.0
    emap = error_map("mse", x_hat, x)[0]
    assert emap[2:5, 10:13].min() == 1.0 and emap.sum() == 9.0


def test_unknown_kind_is_rejected():
    x_hat, x = _batch()
    with pytest.raises(ReconadError, match="unknown loss kind 'huber'; choose one of mse, l1"):
        per_image_loss("huber", x_hat, x)


def test_window_larger_than_image_is_rejected():
    x = torch.rand(1, 1, 8, 9)
    with pytest.raises(ReconadError, match=r"ssim window 11 is larger than the 8x9 images; "
                                           r"set loss.ssim_window to an odd number <= 8"):
        ssim(x, x)


def test_even_window_is_rejected():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ReconadError, match="ssim window 8 must be a positive odd number"):
        per_image_loss("ssim", x, x, ssim_window=8)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ReconadError, match=r"cannot compare images of shapes"):
        per_image_loss("mse", torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 9))


def test_l21_batch_loss_and_its_gradient_match_numpy():
    """l21: the mean over images of the root of each image's mse, i.e. of its residual L2 norm
    over sqrt(pixels); its gradient weights each image's residual by 1 / that norm."""
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, 5, 5))
    x_hat = x + rng.normal(0, [[[[0.01]]], [[[0.1]]], [[[0.3]]], [[[1.0]]]], x.shape)
    t = torch.tensor(x_hat, dtype=torch.float64, requires_grad=True)
    loss = robust_batch_loss(per_image_loss("mse", t, torch.tensor(x)), "l21")
    loss.backward()
    residual = (x_hat - x).reshape(4, -1)
    norms = np.linalg.norm(residual, axis=1) / np.sqrt(25)  # sqrt of each image's mse
    assert loss.item() == approx(norms.mean())
    grad = residual / (25 * norms[:, None]) / 4
    np.testing.assert_allclose(t.grad.numpy().reshape(4, -1), grad, rtol=1e-9)
    plain = robust_batch_loss(per_image_loss("mse", t, torch.tensor(x)), "none")
    assert plain.item() == approx((norms**2).mean())


def test_l21_is_finite_for_an_exact_reconstruction():
    x = torch.rand(2, 1, 4, 4)
    x_hat = x.clone().requires_grad_(True)
    robust_batch_loss(per_image_loss("mse", x_hat, x), "l21").backward()
    assert torch.isfinite(x_hat.grad).all()


def test_unknown_robust_batch_loss_is_rejected():
    with pytest.raises(ReconadError, match="unknown loss.robust 'huber'; choose none or l21"):
        robust_batch_loss(torch.ones(3), "huber")
