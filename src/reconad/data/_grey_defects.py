"""The generated defect benchmark's second family: procedural grey textures, for testing only.

Family 1 (:mod:`reconad.data._synthetic_defects`) was used to choose the ``defects-ssim``
recipe; this family was designed apart from it and is never used to choose anything, so its
numbers say how the chosen settings carry over. Nothing is shared with family 1 but the
MVTec-layout writer: other textures (generated here, not photographs), one grey channel,
other defect kinds drawn by other code.

Textures (one channel, uint8 ``(1, S, S)``; each patch generated on its own from the seed, so
no test patch repeats a training patch):

- ``wood``: grain stripes 5-9 px apart, bent by smooth noise, near-horizontal;
- ``metal``: brushed metal, streaks that run the width of the patch;
- ``grain``: fine granular noise over a medium blotchy noise.

Like photographs of real parts, every patch has its own lighting: a brightness offset, a
contrast gain, a linear gradient and a slow shading. This normal variation is larger than the
subtle defects' intensity change (a stain changes its region by 4-8 grey levels; the patch
means of normal images spread by about 14): a detector must find the defect by its shape and
texture, not by the brightness of the image.

Defects (sizes for 64x64 patches, scaled with the patch side; about 1-4 % of the pixels):

- ``stain``: a region shaped by thresholded fractal noise, 4-8 grey levels lighter or darker;
- ``cut``: a polyline crack of 3-5 segments, 1.5-3 px wide, darker (x 0.4-0.65, at least 12
  levels);
- ``swap``: an ellipse filled with another of the three textures, shifted to the same mean
  brightness;
- ``dent``: a smooth bump lit from one side (one half darker, the other lighter, up to 8-14
  levels).

Masks are exact: no pixel outside the mask changes, and the mask is the set of pixels a
``stain``, ``cut`` or ``dent`` changes (a pixel already at 0 or 255 may keep its value); for
``swap`` it is the ellipse (a pixel there may keep its value by chance).

>>> patches = grey_patches("wood", 2, 32, np.random.default_rng(0))
>>> patches.shape, patches.dtype
((2, 1, 32, 32), dtype('uint8'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconad.data._mvtec import write_defect_dataset
from reconad.errors import ReconadError

GREY_TEXTURES = ("wood", "metal", "grain")
GREY_DEFECT_KINDS = ("stain", "cut", "swap", "dent")
BASE_LEVEL = 128.0  # grey level of a patch before its lighting
# Per-patch lighting, in grey levels: offset (std), gain (range), gradient (peak-to-peak
# range), slow shading (amplitude). The patch means spread by ~14 levels across images.
LIGHTING = {"offset_std": 14.0, "gain": (0.8, 1.2), "gradient": (0.0, 24.0), "shading": 6.0}
STAIN_LEVELS = (4, 8)  # |intensity change| of a stain, grey levels


def grey_patches(texture: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` normal patches of a grey texture, each with its own lighting.

    Returns:
        uint8 ``(n, 1, size, size)``.
    """
    if texture not in GREY_TEXTURES:
        raise ReconadError(f"unknown grey texture {texture!r}; choose one of "
                           f"{', '.join(GREY_TEXTURES)}")
    out = np.empty((n, 1, size, size), np.uint8)
    for i in range(n):
        level = BASE_LEVEL + _lighting(size, rng) + rng.uniform(*LIGHTING["gain"]) * _texture(
            texture, size, rng)
        out[i, 0] = np.clip(np.round(level), 0, 255)
    return out


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean texture deviation in grey levels, float ``(S, S)``."""
    scale = size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if name == "wood":
        angle = rng.uniform(-0.3, 0.3)
        across = yy * np.cos(angle) - xx * np.sin(angle)  # distance across the grain
        warp = 6 * scale * _fractal(rng, size, 3)
        period = rng.uniform(5, 9) * scale
        value = 20 * np.sin(2 * np.pi * (across + warp) / period)
        value += 5 * _fractal(rng, size, 16) + rng.normal(0, 2, (size, size))
    elif name == "metal":
        streaks = _value_noise(rng, size, (size, 2)) + 0.5 * _value_noise(rng, size, (size, 1))
        value = 30 * (streaks - streaks.mean()) + rng.normal(0, 3, (size, size))
    else:  # grain: white noise blurred by a 3x3 binomial kernel, over medium blotches
        noise = rng.normal(0, 1, (size + 2, size + 2))
        noise = (noise[:-2] + 2 * noise[1:-1] + noise[2:]) / 4  # (S, S + 2), along y
        noise = (noise[:, :-2] + 2 * noise[:, 1:-1] + noise[:, 2:]) / 4  # (S, S), along x
        value = 16 / 0.375 * noise + 8 * _fractal(rng, size, max(2, size // 8))
    return value - value.mean()


def _lighting(size: int, rng: np.random.Generator) -> np.ndarray:
    """One patch's illumination in grey levels, float ``(S, S)``: offset, gradient, shading."""
    t = np.linspace(-0.5, 0.5, size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]  # peak-to-peak <= sqrt(2)
    shading = LIGHTING["shading"] * _fractal(rng, size, 2)
    return rng.normal(0, LIGHTING["offset_std"]) + rng.uniform(*LIGHTING["gradient"]) * ramp \
        + shading


def _value_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1], float ``(S, S)``: random values on a ``(cells_y + 1, cells_x +
    1)`` grid over the patch, interpolated with smoothstep weights (no seams, no blocks)."""
    grid = rng.random((cells[0] + 1, cells[1] + 1))

    def weights(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(size) * n / size  # grid coordinate of each pixel
        i = np.minimum(t.astype(int), n - 1)
        f = t - i
        return i, f * f * (3 - 2 * f)

    iy, fy = weights(cells[0])
    ix, fx = weights(cells[1])
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # (S, cells_x + 1)
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fractal(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Zero-mean fractal value noise (octaves of halving amplitude), about [-0.5, 0.5]."""
    total = sum(0.5**o * _value_noise(rng, size, (cells * 2**o, cells * 2**o))
                for o in range(octaves))
    total = total / sum(0.5**o for o in range(octaves))
    return total - total.mean()


def add_grey_defect(
    patch: np.ndarray, kind: str, rng: np.random.Generator, texture: str = "wood"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of :data:`GREY_DEFECT_KINDS` on a copy of a grey patch.

    Args:
        patch: uint8 ``(1, S, S)``.
        kind: ``stain``, ``cut``, ``swap`` or ``dent``.
        rng: Source of the defect's place, shape and strength.
        texture: The patch's texture; a ``swap`` fills its region with another one.

    Returns:
        The defective patch (uint8 ``(1, S, S)``) and its mask (bool ``(S, S)``).
    """
    if kind not in GREY_DEFECT_KINDS:
        raise ReconadError(f"unknown grey defect kind {kind!r}; choose from "
                           f"{', '.join(GREY_DEFECT_KINDS)}")
    size = patch.shape[-1]
    scale = size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # pixel centres (S, S)
    clean = patch[0].astype(np.float64)
    if kind == "stain":
        radius = rng.uniform(5, 8) * scale
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        inside = 1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2  # > 0 in the disc
        noise = _fractal(rng, size, max(2, round(size / 8)))
        # noise of unit spread moves the edge by about half the radius, in or out; the region
        # stays within 1.2 radii of the centre
        mask = (inside + 0.6 * noise / noise.std() > 0.5) & (inside > -0.44)
        if mask.sum() < 0.2 * np.pi * radius**2:  # the noise ate most of it: add its core
            mask |= inside > 0.5
        sign = 1 if rng.integers(2) else -1
        values = clean + sign * rng.integers(STAIN_LEVELS[0], STAIN_LEVELS[1] + 1)
    elif kind == "cut":
        crack = _crack(rng, size)
        half_width = max(0.75, rng.uniform(0.75, 1.5) * scale)  # >= 0.75: some pixel is hit
        mask = _polyline_distance(crack, yy, xx) <= half_width
        values = np.minimum(np.round(clean * rng.uniform(0.4, 0.65)), clean - 12)
    elif kind == "swap":
        a, b = rng.uniform(4, 7) * scale, rng.uniform(3, 5) * scale
        cy, cx = rng.uniform(a + 1, size - a - 1, 2)
        angle = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        others = [t for t in GREY_TEXTURES if t != texture]
        fill = rng.uniform(*LIGHTING["gain"]) * _texture(others[rng.integers(len(others))],
                                                         size, rng)
        values = clean[mask].mean() + fill - fill[mask].mean()  # the same mean brightness
    else:  # dent: d/dn of a Gaussian bump, n the light's direction; peak |shading| = depth
        sigma = rng.uniform(2, 3) * scale
        cy, cx = rng.uniform(3 * sigma + 1, size - 3 * sigma - 1, 2)
        light = rng.uniform(0, 2 * np.pi)
        along = ((yy - cy) * np.sin(light) + (xx - cx) * np.cos(light)) / sigma
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        shading = np.round(rng.uniform(8, 14) * np.sqrt(np.e) * along * bump)
        mask = shading != 0
        values = clean + shading
    out = patch.copy()
    out[0][mask] = np.clip(np.round(values[mask]), 0, 255)
    return out, mask


def _crack(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vertices ``(K, 2)`` (y, x) of a random crack: a walk of 3-5 steps 4-7 px long (at 64 px)
    that turns a little at each vertex, kept inside the patch."""
    scale = size / 64
    point = rng.uniform(0.25 * size, 0.75 * size, 2)
    heading = rng.uniform(0, 2 * np.pi)
    points = [point]
    for _ in range(rng.integers(3, 6)):
        heading += rng.normal(0, 0.5)
        step = rng.uniform(4, 7) * scale
        point = np.clip(point + step * np.array([np.sin(heading), np.cos(heading)]), 1, size - 2)
        points.append(point)
    return np.array(points)


def _polyline_distance(points: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Distance of each pixel centre to the polyline through ``points`` ``(K, 2)``, ``(S, S)``."""
    best = np.full(yy.shape, np.inf)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:], strict=True):
        length2 = max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1e-12)
        t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / length2, 0, 1)
        best = np.minimum(best, np.hypot(yy - y0 - t * (y1 - y0), xx - x0 - t * (x1 - x0)))
    return best


def make_grey_defect_dataset(
    root: str | Path,
    texture: str = "wood",
    n_train: int = 1000,
    n_test_good: int = 500,
    n_test_defect: int = 200,
    size: int = 64,
    seed: int = 0,
    kinds: tuple[str, ...] = GREY_DEFECT_KINDS,
    overwrite: bool = False,
) -> Path:
    """Generate family 2 of the defect benchmark in the MVTec AD layout (module docstring).

    The layout and arguments are those of :func:`reconad.data.make_defect_dataset`; images
    are one-channel (grey) PNGs, read back as ``(N, 1, S, S)``. Defective test patches cycle
    through ``kinds``. The same arguments give the same files, byte for byte.

    Args:
        root: Output folder (written atomically; must be empty or absent unless ``overwrite``).
        texture: ``wood``, ``metal`` or ``grain``.
        n_train: Normal training patches.
        n_test_good: Normal test patches.
        n_test_defect: Defective test patches.
        size: Patch side in pixels, 16..256.
        seed: Seed of every random choice.
        kinds: Defect kinds to draw (a subset of :data:`GREY_DEFECT_KINDS`).
        overwrite: Replace an existing non-empty ``root``.

    Returns:
        ``root`` as a Path.
    """
    if texture not in GREY_TEXTURES:
        raise ReconadError(f"unknown grey texture {texture!r}; choose one of "
                           f"{', '.join(GREY_TEXTURES)}")
    if not 16 <= size <= 256:
        raise ReconadError(f"patch size {size} must lie in 16..256")
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1:
        raise ReconadError("image counts must be >= 0, with at least one training image")
    bad = [k for k in kinds if k not in GREY_DEFECT_KINDS]
    if bad or (n_test_defect and not kinds):
        raise ReconadError(f"unknown grey defect kinds {bad or '(none)'}; choose from "
                           f"{', '.join(GREY_DEFECT_KINDS)}")
    # One stream per part, so that more test images never change the training images.
    train = grey_patches(texture, n_train, size, np.random.default_rng([seed, 2, 0]))
    test_good = grey_patches(texture, n_test_good, size, np.random.default_rng([seed, 2, 1]))
    clean = grey_patches(texture, n_test_defect, size, np.random.default_rng([seed, 2, 2]))
    defect_rng = np.random.default_rng([seed, 2, 3])
    defects = []
    for i, patch in enumerate(clean):
        kind = kinds[i % len(kinds)]
        defects.append((kind, *add_grey_defect(patch, kind, defect_rng, texture)))
    counts = {k: sum(kind == k for kind, _, _ in defects) for k in kinds}
    info = {"generator": "reconad.data.make_grey_defect_dataset", "family": 2,
            "use": "testing only: never used to choose settings",
            "texture": texture, "size": size, "seed": seed, "n_train": n_train,
            "n_test_good": n_test_good, "n_test_defect": n_test_defect,
            "defects": {k: v for k, v in counts.items() if v},
            "channels": "1: grey, procedural texture with per-patch lighting",
            "lighting": LIGHTING, "stain_levels": list(STAIN_LEVELS)}
    return write_defect_dataset(root, train, test_good, defects, info, overwrite)
