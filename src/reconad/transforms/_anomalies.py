"""Simulated anomalies for training a segmenting detector (``model.kind=draem``): a region of
a normal image replaced by something it is not, with the exact mask of that region.

The region is DRAEM's Perlin mask (gradient noise on a lattice of 2^[0, 6) cells per axis,
maybe transposed, thresholded at 0.5: blobs, streaks and speckles of every size). It is
filled from one of :data:`FILLS`, chosen uniformly:

- ``other``: another training image, flipped/rotated/zoomed/rolled, with 1-3 photometric
  operations (gamma, contrast and shift, invert, posterize, solarize, equalize, brightness);
- ``self``: the image's own content moved and flipped (photometric operations half the time);
- ``intensity``: the image under a gain of 0.4-1.6 and an offset of +-0.03-0.3;
- ``smooth``: the image plus a smooth Perlin blotch of amplitude 0.1-0.5;
- ``blur``: Gaussian blur, sigma 1-4 pixels; ``sharpen``: unsharp masking, amount 1.5-5;
- ``texture``: a procedural texture, octaves of Perlin noise.

Inside the mask the result is ``(1 - b) * fill + b * image`` with ``b ~ U(0, 0.8)``; outside
it is the image, bit for bit. Images are NumPy float32 ``(C, H, W)`` in [0, 1]; everything
is drawn from one ``numpy.random.Generator``, so a seed gives the same anomalies.

>>> rng = np.random.default_rng(0)
>>> images = rng.uniform(0, 1, (4, 1, 32, 32)).astype(np.float32)
>>> out, masks = simulate_anomalies(images, images, rng, probability=1.0)
>>> out.shape, masks.shape               # (B, C, H, W) images, (B, H, W) masks
((4, 1, 32, 32), (4, 32, 32))
>>> unchanged = (out == images).all(axis=1)  # (B, H, W)
>>> bool(unchanged[masks == 0].all()), sorted(np.unique(masks).tolist())
(True, [0.0, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

FILLS = ("other", "self", "intensity", "smooth", "blur", "sharpen", "texture")
BLEND_MAX = 0.8  # the image's share in the filled region is drawn from U(0, BLEND_MAX)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin(h: int, w: int, ry: int, rx: int, rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise over an ``h x w`` grid with ``ry x rx`` lattice cells, (h, w)
    float32, values about [-1, 1]."""
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    ys = np.linspace(0, ry, h, endpoint=False)
    xs = np.linspace(0, rx, w, endpoint=False)
    yi, xi = ys.astype(int), xs.astype(int)
    yf, xf = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[yi + dy][:, xi + dx] * (yf - dy) + gx[yi + dy][:, xi + dx] * (xf - dx)

    u, v = _fade(yf), _fade(xf)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (math.sqrt(2) * (top * (1 - u) + bottom * u)).astype(np.float32)


def perlin_mask(h: int, w: int, rng: np.random.Generator, threshold: float = 0.5
                ) -> np.ndarray:
    """DRAEM's mask: Perlin noise of a random lattice (2^[0, 6) cells per axis), transposed
    half the time when square, thresholded; redrawn (up to 20 times) until it covers at least
    ``h * w / 2000`` pixels (and 4). (h, w) bool."""
    least = max(4, h * w // 2000)
    for _ in range(20):
        ry, rx = (int(2 ** rng.integers(0, 6)) for _ in range(2))
        noise = perlin(h, w, ry, rx, rng)
        if h == w and rng.random() < 0.5:
            noise = noise.T
        mask = noise > threshold
        if mask.sum() >= least:
            break
    return mask


def _photometric(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 random photometric operations of a (C, H, W) fill, clipped to [0, 1]."""
    t = np.clip(t, 0, 1)
    for op in rng.choice(7, size=int(rng.integers(1, 4)), replace=False):
        if op == 0:
            t = t ** rng.uniform(0.5, 2.0)
        elif op == 1:
            m = t.mean()
            t = (t - m) * rng.uniform(0.5, 2.0) + m + rng.uniform(-0.2, 0.2)
        elif op == 2:
            t = 1 - t
        elif op == 3:
            levels = int(rng.integers(3, 9))
            t = np.floor(t * levels) / levels
        elif op == 4:
            t = np.where(t > rng.uniform(0.3, 0.9), 1 - t, t)
        elif op == 5:  # equalize: each value replaced by its rank
            flat = t.ravel()
            ranks = np.empty_like(flat)
            ranks[np.argsort(flat, kind="stable")] = np.linspace(0, 1, flat.size,
                                                                 dtype=np.float32)
            t = ranks.reshape(t.shape)
        else:
            t = t + rng.uniform(-0.25, 0.25)
        t = np.clip(t, 0, 1)
    return t.astype(np.float32)


def _moved(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (C, H, W) image flipped, rotated (square images), zoomed 1-3x and rolled."""
    if rng.random() < 0.5:
        t = t[:, :, ::-1]
    if rng.random() < 0.5:
        t = t[:, ::-1, :]
    _, h, w = t.shape
    if h == w and rng.random() < 0.5:
        t = np.rot90(t, k=int(rng.integers(1, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        f = rng.uniform(1.0, 3.0)
        ch, cw = max(2, int(h / f)), max(2, int(w / f))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        t = zoom(t[:, y0:y0 + ch, x0:x0 + cw], (1, h / ch, w / cw), order=1)[:, :h, :w]
        t = np.pad(t, ((0, 0), (0, h - t.shape[1]), (0, w - t.shape[2])), mode="edge")
    t = np.roll(t, (int(rng.integers(0, h)), int(rng.integers(0, w))), axis=(1, 2))
    return np.ascontiguousarray(t, dtype=np.float32)


def make_fill(x: np.ndarray, other: np.ndarray, kind: str,
              rng: np.random.Generator) -> np.ndarray:
    """What replaces the masked region of ``x`` (C, H, W): see :data:`FILLS`; ``other`` is
    another training image of the same shape (used by ``other`` only)."""
    c, h, w = x.shape
    if kind == "other":
        return _photometric(_moved(other, rng), rng)
    if kind == "self":
        t = _moved(x, rng)
        return _photometric(t, rng) if rng.random() < 0.5 else t
    if kind == "intensity":
        offset = rng.choice([-1, 1]) * rng.uniform(0.03, 0.3)
        return np.clip(x * rng.uniform(0.4, 1.6) + offset, 0, 1).astype(np.float32)
    if kind == "smooth":
        cells = int(2 ** rng.integers(1, 4))
        f = perlin(h, w, cells, cells, rng)
        f = f / (np.abs(f).max() + 1e-6)
        amplitude = rng.uniform(0.1, 0.5) * rng.choice([-1, 1])
        return np.clip(x + amplitude * f[None], 0, 1).astype(np.float32)
    if kind == "blur":
        return gaussian_filter(x, (0, rng.uniform(1, 4), rng.uniform(1, 4))).astype(np.float32)
    if kind == "sharpen":
        blurred = gaussian_filter(x, (0, rng.uniform(1, 3), rng.uniform(1, 3)))
        return np.clip(x + rng.uniform(1.5, 5) * (x - blurred), 0, 1).astype(np.float32)
    if kind == "texture":  # octaves of Perlin noise around a random grey level
        t = np.zeros((h, w), np.float32)
        for octave in range(int(rng.integers(1, 4))):
            ry, rx = (int(2 ** rng.integers(2, 7)) for _ in range(2))
            t += perlin(h, w, ry, rx, rng) / (octave + 1)
        t = (t - t.mean()) / (t.std() + 1e-6)
        t = np.clip(rng.uniform(0.1, 0.9) + rng.uniform(0.05, 0.3) * t, 0, 1)
        return np.repeat(t[None], c, 0).astype(np.float32)
    raise ValueError(f"unknown fill {kind!r}; choose from {', '.join(FILLS)}")


def paste_anomaly(x: np.ndarray, other: np.ndarray, rng: np.random.Generator,
                  fill: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One simulated anomaly on ``x`` (C, H, W): (the image with it, its (H, W) bool mask).
    ``fill`` picks the fill (default: one of :data:`FILLS` at random)."""
    _, h, w = x.shape
    mask = perlin_mask(h, w, rng)
    kind = fill if fill is not None else FILLS[int(rng.integers(len(FILLS)))]
    content = make_fill(x, other, kind, rng)
    b = np.float32(rng.uniform(0, BLEND_MAX))
    blended = (1 - b) * content + b * x
    return np.where(mask[None], blended, x).astype(np.float32), mask


def simulate_anomalies(images: np.ndarray, pool: Sequence[np.ndarray] | np.ndarray,
                       rng: np.random.Generator, probability: float = 0.5,
                       fills: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulated anomalies on a batch ``(B, C, H, W)`` float32 in [0, 1]: each image gets one
    with ``probability`` (the others are returned unchanged with an empty mask).

    Args:
        images: the batch.
        pool: normal images of the same shape the ``other`` fill takes content from (float32
            (C, H, W) each; the training images).
        rng: every random choice.
        probability: the share of images that get an anomaly.
        fills: draw the fill from these (default :data:`FILLS`).

    Returns:
        ``(images with anomalies (B, C, H, W) float32, masks (B, H, W) float32 of 0 and 1)``.
    """
    kinds = tuple(fills) if fills is not None else FILLS
    out = np.array(images, dtype=np.float32, copy=True)
    masks = np.zeros((len(out), *out.shape[2:]), dtype=np.float32)
    for i in range(len(out)):
        if rng.random() >= probability:
            continue
        other = np.asarray(pool[int(rng.integers(len(pool)))], dtype=np.float32)
        fill = kinds[int(rng.integers(len(kinds)))]
        out[i], mask = paste_anomaly(out[i], other, rng, fill)
        masks[i] = mask
    return out, masks
