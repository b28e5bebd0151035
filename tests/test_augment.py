"""Batched affine augmentation: identity, exact rotations, shifts, zoom, determinism."""

from __future__ import annotations

import pytest
import torch

from reconad.errors import ReconadError
from reconad.transforms import (
    affine_matrices,
    augment_batch,
    random_flips,
    tta_pixels,
    tta_views,
    warp,
)


def _centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) mass-weighted (row, col) of images (B, 1, H, W)."""
    _, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype).view(1, 1, w)
    m = x[:, 0]
    total = m.sum(dim=(1, 2))
    return torch.stack([(m * rows).sum(dim=(1, 2)) / total,
                        (m * cols).sum(dim=(1, 2)) / total], dim=1)


def _blobs(n: int = 4, h: int = 28, w: int = 28) -> torch.Tensor:
    """A bright 5x5 block near the centre of each image (1, H, W), away from the borders."""
    x = torch.zeros(n, 1, h, w)
    x[:, :, h // 2 - 3:h // 2 + 2, w // 2 - 1:w // 2 + 4] = 1.0
    return x


def _transform(x, angle=0.0, scale=1.0, sx=0.0, sy=0.0):
    b, _, h, w = x.shape
    full = lambda v: torch.full((b,), float(v))  # noqa: E731
    return warp(x, affine_matrices(full(angle), full(scale), full(sx), full(sy), h, w))


def test_all_zero_amounts_return_the_batch_itself():
    x = torch.rand(3, 1, 8, 8)
    assert augment_batch(x) is x


def test_identity_matrix_reproduces_the_images():
    x = torch.rand(3, 2, 9, 13)
    torch.testing.assert_close(_transform(x), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_multiples_of_90_degrees_match_rot90(k):
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_transform(x, angle=90 * k), torch.rot90(x, k, dims=(-2, -1)),
                               atol=1e-5, rtol=0)


def test_rotation_of_a_non_square_image_is_not_sheared():
    x = torch.zeros(1, 1, 9, 15)
    x[0, 0, 4, 10] = 1.0  # 3 pixels right of the centre pixel (4, 7)
    out = _transform(x, angle=90)
    assert out[0, 0, 1, 7].item() == pytest.approx(1.0, abs=1e-5)  # now 3 pixels above it
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_shift_moves_the_centre_of_mass_by_the_fraction_of_the_size():
    x = _blobs(h=28, w=20)
    out = _transform(x, sx=0.25, sy=-0.125)  # 5 pixels right, 3.5 pixels up
    moved = _centre_of_mass(out) - _centre_of_mass(x)
    torch.testing.assert_close(moved, torch.tensor([[-3.5, 5.0]]).expand(4, 2), atol=1e-4,
                               rtol=0)


def test_zoom_scales_the_spread_about_the_centre():
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, [10, 22]] = 1.0  # two dots 6 pixels either side of the centre
    out = _transform(x, scale=1.5)
    com = _centre_of_mass(out)[0]
    cols = torch.arange(33.0)
    spread = ((out[0, 0].sum(0) * (cols - com[1]).abs()).sum() / out.sum()).item()
    assert com[1].item() == pytest.approx(16.0, abs=1e-4)
    assert spread == pytest.approx(9.0, abs=0.1)


def test_random_transforms_are_reproducible_and_differ_per_image():
    x = _blobs(n=6)
    kw = dict(rotation=30.0, zoom=0.2, shift=0.1)
    a = augment_batch(x, **kw, generator=torch.Generator().manual_seed(1))
    b = augment_batch(x, **kw, generator=torch.Generator().manual_seed(1))
    c = augment_batch(x, **kw, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert a.shape == x.shape
    assert len({tuple(img.flatten()[::7].tolist()) for img in a}) == 6  # one transform each


def test_random_shift_stays_within_its_bound():
    x = _blobs(n=64)
    out = augment_batch(x, shift=0.1, generator=torch.Generator().manual_seed(0))
    moved = _centre_of_mass(out) - _centre_of_mass(x)  # (B, 2) in pixels, bound 2.8
    assert moved.abs().max() <= 2.8 + 1e-4
    assert moved.abs().max() > 2.0  # and really uses the range
    assert moved.mean(dim=0).abs().max() < 0.6  # both directions


def test_random_rotation_preserves_mass_of_a_central_blob():
    x = _blobs(n=16)
    out = augment_batch(x, rotation=180.0, generator=torch.Generator().manual_seed(0))
    # Bilinear resampling keeps the mass of a block to within about 1 %.
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), atol=0, rtol=0.02)
    assert not torch.allclose(out, x)


def test_negative_or_too_large_amounts_are_rejected():
    with pytest.raises(ReconadError, match="augmentation amounts .* out of range"):
        augment_batch(torch.rand(2, 1, 8, 8), zoom=1.5)
    with pytest.raises(ReconadError, match="augmentation amounts rotation=-5"):
        augment_batch(torch.rand(2, 1, 8, 8), rotation=-5)


def test_random_flips_mirror_each_image_one_of_four_ways_and_are_seeded():
    x = torch.arange(64 * 2 * 3 * 4, dtype=torch.float32).reshape(64, 2, 3, 4)
    out = random_flips(x, torch.Generator().manual_seed(0))
    options = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    seen = set()
    for i in range(len(x)):
        which = [j for j, o in enumerate(options) if torch.equal(out[i], o[i])]
        assert len(which) == 1  # exactly one of the four mirror images
        seen.add(which[0])
    assert seen == {0, 1, 2, 3}  # 64 images: every way occurs
    assert torch.equal(out, random_flips(x, torch.Generator().manual_seed(0)))
    with pytest.raises(ReconadError, match="random_flips needs images"):
        random_flips(torch.rand(3, 4, 4))


def test_tta_views_are_the_batch_then_its_fixed_copies():
    x = torch.zeros(2, 1, 9, 9)
    x[:, 0, 3:6, 3:6] = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(0))
    views = tta_views(x, shift=1 / 9, rotation=8, zoom=0.1)  # a ninth of 9 pixels: 1 pixel
    assert len(views) == 1 + 8 + 2 + 2
    assert views[0] is x
    # The 8 whole-pixel shifts move the pixels exactly (the content has an empty border).
    expected = [torch.roll(x, (dy, dx), (2, 3)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if dx or dy]
    for view, want in zip(views[1:9], expected, strict=True):
        torch.testing.assert_close(view, want, atol=1e-5, rtol=0)
    # Rotations and zooms keep a blob's centre and change the picture.
    for view in views[9:]:
        assert not torch.allclose(view, x, atol=1e-3)
        assert abs(float(view.sum() - x.sum())) < 0.35 * float(x.sum())
    assert tta_views(x) == [x]  # nothing asked: the batch alone


def test_tta_shift_is_a_fraction_of_the_side_in_whole_pixels():
    """score.tta_shift scales with the image: 0.036 is 1 pixel of 28, 2 of 56, none of 8."""
    assert [tta_pixels(0.036, s, s) for s in (8, 14, 28, 32, 56, 64)] == [0, 1, 1, 1, 2, 2]
    assert tta_pixels(0.036, 28, 100) == 1  # the shorter side
    assert tta_pixels(1 / 28, 28, 28) == 1  # a pre-version-6 detector's 1 pixel, exactly
    big = torch.zeros(1, 1, 56, 56)
    big[0, 0, 20:30, 20:30] = 1.0
    views = tta_views(big, shift=0.036)
    assert len(views) == 9
    torch.testing.assert_close(views[1], torch.roll(big, (-2, -2), (2, 3)), atol=1e-5, rtol=0)
    small = torch.rand(3, 1, 8, 8)
    assert tta_views(small, shift=0.036) == [small]  # under half a pixel: no shifted copies
    assert len(tta_views(small, shift=0.036, rotation=8)) == 3


def test_tta_views_reject_negative_amounts():
    with pytest.raises(ReconadError, match="test-time augmentation"):
        tta_views(torch.zeros(1, 1, 4, 4), shift=-1)
