"""Batched augmentation on tensors: random rotation, zoom, shift, flips and crops for training,
and the fixed copies of test-time augmentation (:func:`tta_views`).

One random affine transform per image, applied to the whole batch at once with
``F.affine_grid`` / ``F.grid_sample`` (bilinear, zeros outside the image). Conventions, in the
picture as displayed (rows downwards):

- ``angles``: degrees, positive = counter-clockwise (``torch.rot90(x, 1, dims=(-2, -1))`` is 90);
- ``scales``: > 1 enlarges the content about the centre;
- ``shifts_x`` / ``shifts_y``: fractions of the width / height, positive = right / down.

Rotation happens in pixel space, so non-square images are rotated without shearing.

>>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 0, 0] = 1
>>> moved = warp(x, affine_matrices(torch.zeros(1), torch.ones(1), torch.tensor([0.2]),
...                                  torch.zeros(1), 5, 5))
>>> moved[0, 0, 0, 1].item()
1.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reconad.errors import ReconadError


def affine_matrices(
    angles: torch.Tensor,
    scales: torch.Tensor,
    shifts_x: torch.Tensor,
    shifts_y: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """The ``(B, 2, 3)`` matrices for ``F.affine_grid`` that realise the given transforms.

    Args:
        angles: ``(B,)`` rotation in degrees, counter-clockwise.
        scales: ``(B,)`` zoom factors (> 1 enlarges).
        shifts_x: ``(B,)`` horizontal shift as a fraction of the width (positive = right).
        shifts_y: ``(B,)`` vertical shift as a fraction of the height (positive = down).
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``theta`` mapping each output position (normalised coordinates) to where it samples the
        input, i.e. the inverse of the transform applied to the content.
    """
    rad = angles * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Inverse rotation in pixel coordinates (x right, y down), divided by the zoom:
    # content rotated counter-clockwise by a means sampling at R(-a) applied the other way.
    aspect = height / width
    m00, m01 = cos / scales, -sin / scales * aspect  # pixel -> normalised: D^-1 R D
    m10, m11 = sin / scales / aspect, cos / scales
    # Normalised coordinates span 2 units per image side, so a shift of f sides is 2f units.
    tx, ty = 2 * shifts_x, 2 * shifts_y
    theta = torch.stack([
        torch.stack([m00, m01, -(m00 * tx + m01 * ty)], dim=-1),
        torch.stack([m10, m11, -(m10 * tx + m11 * ty)], dim=-1),
    ], dim=1)  # (B, 2, 3)
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-image affine matrices ``(B, 2, 3)`` to images ``(B, C, H, W)`` (zero padding)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(
    x: torch.Tensor,
    rotation: float = 0.0,
    zoom: float = 0.0,
    shift: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly rotate, zoom and shift every image of a batch, one transform per image.

    Args:
        x: Images ``(B, C, H, W)``.
        rotation: Maximum rotation in degrees, drawn uniformly in [-rotation, rotation].
        zoom: Zoom factor drawn uniformly in [1 - zoom, 1 + zoom].
        shift: Horizontal and vertical shifts drawn uniformly in [-shift, shift] (fractions
            of the image size).
        generator: Source of randomness (None = torch's global generator).

    Returns:
        The transformed batch; ``x`` itself when all three amounts are 0.
    """
    if rotation < 0 or not 0 <= zoom < 1 or not 0 <= shift < 1:
        raise ReconadError(
            f"augmentation amounts rotation={rotation}, zoom={zoom}, shift={shift} are out of "
            f"range; use rotation >= 0 degrees and zoom, shift in [0, 1)"
        )
    if rotation == 0 and zoom == 0 and shift == 0:
        return x
    if x.dim() != 4:
        raise ReconadError(f"augment_batch needs images (B, C, H, W), got shape "
                           f"{tuple(x.shape)}; add the channel axis")
    b, _, h, w = x.shape
    device = generator.device if generator is not None else x.device
    u = torch.rand((4, b), generator=generator, device=device).to(x.device) * 2 - 1  # [-1, 1)
    theta = affine_matrices(u[0] * rotation, 1 + u[1] * zoom, u[2] * shift, u[3] * shift, h, w)
    return warp(x, theta)


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of a batch left-right with probability 1/2 and, independently,
    upside down with probability 1/2 (for textures, whose defects have no orientation).

    Args:
        x: Images ``(B, C, H, W)``.
        generator: Source of randomness (None = torch's global generator).

    Returns:
        A new batch of the same shape; two draws per image, left-right first.
    """
    if x.dim() != 4:
        raise ReconadError(f"random_flips needs images (B, C, H, W), got shape "
                           f"{tuple(x.shape)}; add the channel axis")
    device = generator.device if generator is not None else x.device
    u = torch.rand((2, x.shape[0]), generator=generator, device=device).to(x.device)
    flip_w, flip_h = (u < 0.5)[:, :, None, None, None]  # each (B, 1, 1, 1)
    x = torch.where(flip_w, x.flip(-1), x)
    return torch.where(flip_h, x.flip(-2), x)


def tta_pixels(shift: float, height: int, width: int) -> int:
    """The whole pixels a test-time copy is moved by: ``shift`` (a fraction of the shorter
    side, ``score.tta_shift``) times that side, rounded half up; 0 = no shifted copies.

    >>> [tta_pixels(0.036, side, side) for side in (8, 14, 28, 56)]
    [0, 1, 1, 2]
    """
    return math.floor(shift * min(height, width) + 0.5)


def tta_moves(shift: int = 0, rotation: float = 0.0,
              zoom: float = 0.0) -> list[tuple[float, float, float, float]]:
    """The fixed copies of :func:`tta_views` as ``(angle in degrees, scale, shift x in
    pixels, shift y in pixels)``, in the order the copies are made (the exported score graph,
    :class:`reconad.score.ScoreGraph`, builds the same copies from them)."""
    moves = []
    if shift:
        moves += [(0.0, 1.0, dx * shift, dy * shift) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if dx or dy]
    if rotation:
        moves += [(-rotation, 1.0, 0, 0), (rotation, 1.0, 0, 0)]
    if zoom:
        moves += [(0.0, 1 - zoom, 0, 0), (0.0, 1 + zoom, 0, 0)]
    return moves


def tta_views(x: torch.Tensor, shift: float = 0.0, rotation: float = 0.0,
              zoom: float = 0.0) -> list[torch.Tensor]:
    """The fixed copies of a batch that test-time augmentation scores (``score.tta_*``).

    Args:
        x: Images ``(B, C, H, W)``.
        shift: Fraction of the shorter side: copies moved by :func:`tta_pixels` whole pixels
            to the 8 neighbouring positions (left, right, up, down and the diagonals); none
            when that is 0 pixels (a small image, or ``shift`` 0).
        rotation: Degrees: copies rotated by -rotation and +rotation; 0 = none.
        zoom: Copies zoomed by 1 - zoom and 1 + zoom; 0 = none.

    Returns:
        ``x`` itself first, then the copies (bilinear, zeros outside the image; a whole-pixel
        shift moves pixels exactly).
    """
    if shift < 0 or rotation < 0 or not 0 <= zoom < 1:
        raise ReconadError(f"test-time augmentation shift={shift}, rotation={rotation}, "
                           f"zoom={zoom} is out of range; use shift, rotation >= 0 and zoom in "
                           "[0, 1)")
    b, _, h, w = x.shape
    moves = tta_moves(tta_pixels(shift, h, w), rotation, zoom)
    views = [x]
    for angle, scale, dx, dy in moves:
        full = [torch.full((b,), float(v), device=x.device) for v in (angle, scale, dx / w, dy / h)]
        views.append(warp(x, affine_matrices(*full, h, w)))
    return views


def random_crops(
    images: torch.Tensor, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random ``size x size`` crop of each image, every position equally likely.

    Args:
        images: ``(B, C, H, W)`` with ``H, W >= size``.
        size: Side of the square crops.
        generator: Source of the positions (seed it for reproducible crops); None = torch's
            global generator.

    Returns:
        Crops ``(B, C, size, size)`` (a copy).

    >>> g = torch.Generator().manual_seed(0)
    >>> random_crops(torch.rand(4, 1, 28, 28), 16, g).shape
    torch.Size([4, 1, 16, 16])
    """
    if images.dim() != 4:
        raise ReconadError(f"images must be (B, C, H, W), not {tuple(images.shape)}")
    b, _, h, w = images.shape
    check_patch(size, h, w)
    top = torch.randint(0, h - size + 1, (b,), generator=generator)
    left = torch.randint(0, w - size + 1, (b,), generator=generator)
    offsets = torch.arange(size)
    rows = (top[:, None] + offsets)[:, :, None].to(images.device)  # (B, size, 1)
    cols = (left[:, None] + offsets)[:, None, :].to(images.device)  # (B, 1, size)
    batch = torch.arange(b, device=images.device)[:, None, None]  # (B, 1, 1)
    # Advanced indices around a slice: the indexed dims come first, (B, size, size, C).
    return images[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def check_patch(size: int, height: int, width: int) -> None:
    """Refuse a square patch (crop or tile) of side ``size`` that does not fit the images."""
    if size < 1 or size > min(height, width):
        raise ReconadError(
            f"patch size {size} does not fit the {height}x{width} images; use a patch between 1 "
            f"and {min(height, width)}"
        )
