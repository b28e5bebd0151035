"""Random crops and sliding-window inference: exact against whole-image results and counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reconad.errors import ReconadError
from reconad.models import coverage, sliding_window, tile_starts
from reconad.transforms import random_crops


def _images(b=2, c=3, h=37, w=50, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_random_crops_are_windows_of_their_own_image_and_seeded():
    images = _images()
    crops = random_crops(images, 16, torch.Generator().manual_seed(1))
    assert crops.shape == (2, 3, 16, 16)
    for b in range(2):  # each crop occurs in its own image at exactly one position
        windows = images[b].unfold(1, 16, 1).unfold(2, 16, 1)  # (C, H-15, W-15, 16, 16)
        hits = (windows == crops[b][:, None, None]).all(-1).all(-1).all(0)
        assert int(hits.sum()) == 1
    again = random_crops(images, 16, torch.Generator().manual_seed(1))
    other = random_crops(images, 16, torch.Generator().manual_seed(2))
    assert torch.equal(crops, again) and not torch.equal(crops, other)


def test_random_crops_reach_every_position():
    image = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6).expand(400, 1, 5, 6)
    corners = random_crops(image, 3, torch.Generator().manual_seed(0))[:, 0, 0, 0]
    # top-left values of all 3x4 = 12 possible positions
    assert set(corners.long().tolist()) == {r * 6 + c for r in range(3) for c in range(4)}


def test_tile_starts_put_the_last_tile_flush_with_the_border():
    assert tile_starts(64, 64, 32) == [0]
    assert tile_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert tile_starts(96, 32, 16) == [0, 16, 32, 48, 64]
    assert tile_starts(10, 3, 3) == [0, 3, 6, 7]


@pytest.mark.parametrize(("h", "w", "patch", "stride"), [(37, 50, 16, 8), (32, 32, 32, 16),
                                                         (20, 29, 7, 3), (9, 9, 4, 4)])
def test_coverage_counts_the_tiles_over_each_pixel(h, w, patch, stride):
    expected = np.zeros((h, w))
    for top in tile_starts(h, patch, stride):
        for left in tile_starts(w, patch, stride):
            expected[top:top + patch, left:left + patch] += 1
    np.testing.assert_array_equal(coverage(h, w, patch, stride).numpy(), expected)
    assert expected.min() >= 1


@pytest.mark.parametrize(("patch", "stride", "batch_size"), [(16, 8, 5), (16, 16, 64),
                                                             (10, 3, 1), (37, 20, 7)])
def test_sliding_window_equals_the_whole_image_for_a_pixelwise_function(patch, stride,
                                                                       batch_size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, kernel_size=1)  # translation-equivariant, no receptive field
    images = _images()
    expected = conv(images).detach()
    out = sliding_window(conv, images, patch, stride, batch_size)
    assert out.shape == (2, 2, 37, 50)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_sliding_window_of_an_image_exactly_one_tile_is_the_function_itself():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    images = _images(h=24, w=24)
    torch.testing.assert_close(sliding_window(model, images, 24, 8), model(images).detach())


def test_sliding_window_averages_overlapping_tiles_and_accepts_maps():
    images = torch.zeros(1, 1, 6, 6)
    # each tile returns a (n, p, p) map holding how many tiles came before it in its batch call
    calls = []

    def tile_index(tiles):
        calls.append(len(tiles))
        return torch.ones(len(tiles), 4, 4) * torch.arange(len(tiles)).view(-1, 1, 1)

    out = sliding_window(tile_index, images, patch=4, stride=2, batch_size=100)
    # tiles at (0,0)=0, (0,2)=1, (2,0)=2, (2,2)=3; pixel (2,2) is under all four: mean 1.5
    assert calls == [4] and out.shape == (1, 6, 6)
    assert float(out[0, 2, 2]) == pytest.approx(1.5)
    assert float(out[0, 0, 0]) == 0 and float(out[0, 5, 5]) == 3
    assert float(out[0, 0, 3]) == pytest.approx(0.5)


def test_sliding_window_errors_are_one_line():
    images = _images(h=10, w=10)
    with pytest.raises(ReconadError, match="does not fit"):
        sliding_window(lambda t: t, images, patch=12)
    with pytest.raises(ReconadError, match="stride"):
        sliding_window(lambda t: t, images, patch=4, stride=5)
    with pytest.raises(ReconadError, match="returned shape"):
        sliding_window(lambda t: t[:, :, :2], images, patch=4)
    with pytest.raises(ReconadError, match="does not fit"):
        random_crops(images, 11)
