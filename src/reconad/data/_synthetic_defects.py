"""A generated defect benchmark: texture patches with drawn defects and their exact masks.

The textures are the 512x512 grey photographs bundled with scikit-image (``skimage.data``
``brick``, ``grass``, ``gravel``; nothing is downloaded). Each is made RGB by mapping its grey
level onto a two-colour ramp (dark colour -> light colour, per texture), so that a colour
defect is a colour the normal patches never have. Patches are random crops; training patches
come from the top 70 % of the texture, test patches from the bottom 30 %, so no test patch
overlaps a training patch.

Defects (sizes for 64x64 patches, scaled with the patch side; about 1-3 % of the pixels):

- ``scratch``: a straight line 1-3 px thick and 12-28 px long, dark or light;
- ``blot``: a disc 3-8 px across of one random colour;
- ``missing``: a 6-11 px square replaced by the patch's mean colour or by another texture;
- ``color``: a disc 8-14 px across whose hue (channels rotated) or intensity changes.

Masks are exact: for ``scratch`` and ``blot`` the mask is exactly the set of changed pixels
(the colour is chosen to differ from every pixel it covers); for ``missing`` and ``color`` it is
the defect's region, at least half of whose pixels change (a pixel there may keep its value by
chance; on a flat patch, where the mean colour or a hue rotation of grey would change nothing,
the region's values are shifted instead).

The dataset is written in the MVTec AD layout read by :func:`reconad.data
.read_defect_dataset`, plus ``dataset.json`` (what was generated, with which seed).

>>> make_defect_dataset("defects/brick", "brick", 1000, 500, 200, size=64, seed=0)
... # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconad.data._mvtec import write_defect_dataset
from reconad.errors import ReconadError

DEFECT_KINDS = ("scratch", "blot", "missing", "color")
# Texture -> (dark colour, light colour) of its grey ramp.
TEXTURES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "brick": ((70, 25, 20), (235, 160, 125)),
    "grass": ((15, 45, 10), (175, 225, 110)),
    "gravel": ((45, 45, 50), (215, 210, 195)),
}
TRAIN_ROWS = 0.7  # training crops from the top 70 % of a texture, test crops from the rest


def texture_image(name: str) -> np.ndarray:
    """A bundled scikit-image texture as RGB uint8 ``(3, 512, 512)`` (grey mapped on a ramp)."""
    if name not in TEXTURES:
        raise ReconadError(f"unknown texture {name!r}; choose one of {', '.join(TEXTURES)}")
    try:
        import skimage.data
    except ImportError:
        raise ReconadError("the defect benchmark needs scikit-image for its textures; install "
                           "it with pip install 'reconad[bench]'") from None
    grey = getattr(skimage.data, name)().astype(np.float64) / 255.0  # (H, W) in [0, 1]
    dark, light = (np.array(c, np.float64).reshape(3, 1, 1) for c in TEXTURES[name])
    return np.round(dark + (light - dark) * grey[None]).astype(np.uint8)


def random_patches(
    texture: np.ndarray, n: int, size: int, rows: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """``n`` random ``size x size`` crops lying within ``rows`` (start, stop) of a texture.

    Returns:
        uint8 ``(n, C, size, size)``.
    """
    lo, hi = rows
    tops = rng.integers(lo, hi - size + 1, n)
    lefts = rng.integers(0, texture.shape[2] - size + 1, n)
    return np.stack([texture[:, t:t + size, c:c + size] for t, c in zip(tops, lefts, strict=True)]
                    ) if n else np.zeros((0, texture.shape[0], size, size), np.uint8)


def add_defect(
    patch: np.ndarray, kind: str, rng: np.random.Generator, other: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect on a copy of ``patch``.

    Args:
        patch: uint8 ``(C, S, S)``.
        kind: One of :data:`DEFECT_KINDS`.
        rng: Source of the defect's place, size and colour.
        other: uint8 ``(C, S, S)`` of another texture, for half of the ``missing`` defects.

    Returns:
        The defective patch (uint8 ``(C, S, S)``) and its mask (bool ``(S, S)``).
    """
    if kind not in DEFECT_KINDS:
        raise ReconadError(f"unknown defect kind {kind!r}; choose from {', '.join(DEFECT_KINDS)}")
    size = patch.shape[-1]
    scale = size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # pixel centres (S, S)
    out = patch.copy()
    if kind == "scratch":
        half = rng.uniform(6, 14) * scale
        angle = rng.uniform(0, np.pi)
        dy, dx = half * np.sin(angle), half * np.cos(angle)
        cy, cx = (rng.uniform(abs(d) + 1, size - abs(d) - 1) for d in (dy, dx))
        width = rng.integers(1, 4)  # pixels within width / 2 of the line: width px on average
        mask = _segment_distance(yy, xx, cy - dy, cx - dx, cy + dy, cx + dx) <= width / 2
        _paint(out, mask, _far_colour(patch, mask, rng, dark=bool(rng.integers(2))))
    elif kind == "blot":
        radius = rng.uniform(1.5, 4) * scale
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        _paint(out, mask, _far_colour(patch, mask, rng, dark=None))
    elif kind == "missing":
        side = max(2, round(rng.integers(6, 12) * scale))
        top, left = rng.integers(1, size - side, 2)
        mask = np.zeros((size, size), bool)
        mask[top:top + side, left:left + side] = True
        if other is not None and rng.integers(2):
            out[:, mask] = other[:, mask]
        else:
            out[:, mask] = np.round(patch.reshape(patch.shape[0], -1).mean(1))[:, None]
    else:  # color
        radius = rng.uniform(4, 7) * scale
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        region = patch[:, mask].astype(np.float64)  # (C, n)
        if patch.shape[0] == 3 and rng.integers(2):
            region = np.roll(region, int(rng.integers(1, 3)), axis=0)  # hue: rotate channels
        else:
            darker = bool(rng.integers(2))
            region = region * (rng.uniform(0.45, 0.65) if darker else rng.uniform(1.4, 1.7))
        out[:, mask] = np.clip(np.round(region), 0, 255).astype(np.uint8)
    if kind in ("missing", "color") and (out[:, mask] == patch[:, mask]).all(axis=0).mean() > 0.5:
        # A flat patch: its mean colour (missing), a channel rotation of grey or a scaled black
        # or white (color) is what the region already holds. A defect must be there to find.
        out[:, mask] = _shifted(patch[:, mask])
    return out, mask


def _shifted(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``pixels`` moved 96 grey levels, up where dark and down where light: every value
    changes and stays in 0..255."""
    values = pixels.astype(np.int16)
    return np.where(values < 128, values + 96, values - 96).astype(np.uint8)


def _segment_distance(yy, xx, y0, x0, y1, x1) -> np.ndarray:
    """Distance of each pixel centre to the segment (y0, x0)-(y1, x1), ``(S, S)``."""
    vy, vx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / (vy * vy + vx * vx), 0, 1)
    return np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))


def _far_colour(patch: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                dark: bool | None) -> np.ndarray:
    """A colour ``(C,)`` (dark, light or any) that no masked pixel of ``patch`` already has."""
    channels = patch.shape[0]
    if dark is None:
        colour = rng.integers(0, 256, channels)
    else:
        colour = rng.integers(0, 41, channels) if dark else rng.integers(215, 256, channels)
    covered = patch[:, mask].T  # (n, C)
    while (covered == colour).all(axis=1).any():  # rare: nudge until every pixel changes
        colour[0] = (colour[0] + 1) % 256
    return colour.astype(np.uint8)


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    image[:, mask] = colour[:, None]


def make_defect_dataset(
    root: str | Path,
    texture: str = "brick",
    n_train: int = 1000,
    n_test_good: int = 500,
    n_test_defect: int = 200,
    size: int = 64,
    seed: int = 0,
    kinds: tuple[str, ...] = DEFECT_KINDS,
    overwrite: bool = False,
) -> Path:
    """Generate a defect benchmark in the MVTec AD layout (see the module docstring).

    ``ROOT/train/good``, ``ROOT/test/good``, ``ROOT/test/<kind>`` and
    ``ROOT/ground_truth/<kind>/<name>_mask.png`` (0/255), plus ``ROOT/dataset.json``. Defective
    test patches cycle through ``kinds``. The same arguments give the same files, byte for byte.

    Args:
        root: Output folder (written atomically; must be empty or absent unless ``overwrite``).
        texture: ``brick``, ``grass`` or ``gravel``.
        n_train: Normal training patches.
        n_test_good: Normal test patches.
        n_test_defect: Defective test patches.
        size: Patch side in pixels, 16..150.
        seed: Seed of every random choice.
        kinds: Defect kinds to draw (a subset of :data:`DEFECT_KINDS`).
        overwrite: Replace an existing non-empty ``root``.

    Returns:
        ``root`` as a Path.
    """
    base = texture_image(texture)  # (3, 512, 512)
    split = round(TRAIN_ROWS * base.shape[1])
    if not 16 <= size <= base.shape[1] - split:
        raise ReconadError(f"patch size {size} must lie in 16..{base.shape[1] - split} for the "
                           f"{base.shape[1]}x{base.shape[2]} textures")
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1:
        raise ReconadError("image counts must be >= 0, with at least one training image")
    bad = [k for k in kinds if k not in DEFECT_KINDS]
    if bad or (n_test_defect and not kinds):
        raise ReconadError(f"unknown defect kinds {bad or '(none)'}; choose from "
                           f"{', '.join(DEFECT_KINDS)}")
    other_name = next(t for t in TEXTURES if t != texture)
    train = random_patches(base, n_train, size, (0, split), np.random.default_rng([seed, 0]))
    test_rng, defect_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    rows = (split, base.shape[1])
    test_good = random_patches(base, n_test_good, size, rows, test_rng)
    clean = random_patches(base, n_test_defect, size, rows, test_rng)
    others = random_patches(texture_image(other_name), n_test_defect, size, rows, defect_rng)
    defects = []
    for i, (patch, other) in enumerate(zip(clean, others, strict=True)):
        kind = kinds[i % len(kinds)]
        defects.append((kind, *add_defect(patch, kind, defect_rng, other)))
    counts = {k: sum(kind == k for kind, _, _ in defects) for k in kinds}
    info = {"generator": "reconad.data.make_defect_dataset",
            "texture": texture, "other_texture": other_name, "size": size, "seed": seed,
            "n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect,
            "defects": {k: v for k, v in counts.items() if v},
            "channels": "RGB: the grey skimage texture mapped on a dark-to-light colour ramp",
            "train_rows": f"top {TRAIN_ROWS:.0%} of the texture; test from the rest"}
    return write_defect_dataset(root, train, test_good, defects, info, overwrite)
