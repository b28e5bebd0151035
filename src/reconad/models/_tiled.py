"""Tiles: apply a model trained on crops (:func:`reconad.transforms.random_crops`) to any image
size.

An autoencoder for 64x64 patches can score a 512x512 image: :func:`sliding_window` cuts the
image into overlapping tiles (``stride < patch``), runs the function on batches of tiles and
averages every pixel over the tiles that cover it (:func:`coverage`). The last tile of each
axis is flush with the border, so a side that the stride does not divide is still covered.
Memory stays bounded by ``batch_size`` tiles plus one output of the image's size.

>>> images = torch.rand(2, 3, 100, 70)
>>> out = sliding_window(lambda t: t * 2, images, patch=32, stride=16)
>>> torch.allclose(out, images * 2)
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reconad.errors import ReconadError
from reconad.transforms import check_patch


def tile_starts(length: int, patch: int, stride: int) -> list[int]:
    """First index of each tile along an axis: ``0, stride, 2 stride, ...`` and a last tile flush
    with the end (``length - patch``) when the stride does not land there.

    >>> tile_starts(10, 4, 3)
    [0, 3, 6]
    >>> tile_starts(11, 4, 3)
    [0, 3, 6, 7]
    """
    if stride < 1:
        raise ReconadError(f"tile stride {stride} must be >= 1 pixel")
    if patch > length:
        raise ReconadError(f"patch {patch} is larger than the image side {length}; use a patch "
                           f"<= {length} or larger images")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def coverage(height: int, width: int, patch: int, stride: int) -> torch.Tensor:
    """How many tiles of :func:`sliding_window` cover each pixel, float32 ``(H, W)`` (>= 1)."""
    rows = torch.zeros(height)
    cols = torch.zeros(width)
    for top in tile_starts(height, patch, stride):
        rows[top:top + patch] += 1
    for left in tile_starts(width, patch, stride):
        cols[left:left + patch] += 1
    # Tiles form a grid, so the count at (i, j) is (row tiles over i) * (column tiles over j).
    return rows[:, None] * cols[None, :]


def sliding_window(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    patch: int,
    stride: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of each image and average the overlaps.

    Runs under ``torch.no_grad()`` (inference). The result equals ``fn(images)`` whenever
    ``fn`` acts on each pixel by itself (identity, a 1x1 convolution); for a model with a
    receptive field it is the tile-averaged output.

    Args:
        fn: Maps tiles ``(n, C, patch, patch)`` to ``(n, C', patch, patch)`` (e.g. a
            reconstruction) or to ``(n, patch, patch)`` (e.g. an anomaly map).
        images: ``(B, C, H, W)`` with ``H, W >= patch``.
        patch: Side of the square tiles (the size ``fn`` was trained on).
        stride: Step between tiles, ``1 <= stride <= patch``; None = ``patch // 2``.
        batch_size: Tiles per call of ``fn`` (bounds the memory).

    Returns:
        ``(B, C', H, W)`` or ``(B, H, W)``, the per-pixel mean over the covering tiles.
    """
    if images.dim() != 4:
        raise ReconadError(f"images must be (B, C, H, W), not {tuple(images.shape)}")
    b, _, h, w = images.shape
    check_patch(patch, h, w)
    stride = max(patch // 2, 1) if stride is None else stride
    if not 1 <= stride <= patch:
        raise ReconadError(f"tile stride {stride} must lie in 1..{patch} (the patch size) so "
                           "that the tiles cover every pixel")
    if batch_size < 1:
        raise ReconadError(f"batch_size {batch_size} must be >= 1")
    # Every (image, top, left) tile, in a fixed order: (n_tiles, 3).
    grid = [(i, top, left) for i in range(b) for top in tile_starts(h, patch, stride)
            for left in tile_starts(w, patch, stride)]
    total: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(grid), batch_size):
            chunk = grid[start:start + batch_size]
            tiles = torch.stack([images[i, :, t:t + patch, c:c + patch] for i, t, c in chunk])
            out = fn(tiles)  # (n, C', p, p) or (n, p, p)
            if out.shape[0] != len(chunk) or tuple(out.shape[-2:]) != (patch, patch) or \
                    out.dim() not in (3, 4):
                raise ReconadError(
                    f"the tile function returned shape {tuple(out.shape)} for {len(chunk)} tiles "
                    f"of {patch}x{patch}; it must return (n, C, {patch}, {patch}) or "
                    f"(n, {patch}, {patch})"
                )
            if total is None:
                total = out.new_zeros((b, *out.shape[1:-2], h, w))
            for (i, t, c), tile_out in zip(chunk, out, strict=True):
                total[i, ..., t:t + patch, c:c + patch] += tile_out
    assert total is not None  # the grid is never empty: H, W >= patch
    return total / coverage(h, w, patch, stride).to(total)


class TiledAutoencoder(nn.Module):
    """An autoencoder trained on ``patch x patch`` crops, applied to larger images by
    :func:`sliding_window` (stride ``patch // 2``): its reconstruction of an image is the
    tile-averaged reconstruction of the overlapping tiles.

    ``encode`` is the identity and ``decode`` the tiled reconstruction, so code that scores
    by ``decode(encode(x))`` (the ``recon`` part) works unchanged; a code-based score (latent
    kNN, class energy) has no meaning here and is refused by the config (``train.crop``).

    Args:
        model: an autoencoder whose ``input_shape`` is ``(C, patch, patch)``.
        stride: step between tiles; None = ``patch // 2``.
    """

    def __init__(self, model: nn.Module, stride: int | None = None) -> None:
        super().__init__()
        self.model = model
        _, self.patch, width = model.input_shape
        if width != self.patch:
            raise ReconadError(f"tiles are square; the model's input is {self.patch}x{width}")
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(B, C, H, W)`` of images at least ``patch`` on each side."""
        return sliding_window(self.model, x, self.patch, self.stride, batch_size=256)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The images themselves: a tiled model has no whole-image code."""
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The tiled reconstruction of the images ``z`` (see :meth:`encode`)."""
        return self.forward(z)
