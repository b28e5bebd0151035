"""Noise that turns clean images into anomalies, or into inputs for denoising training.

``corrupt`` takes a batch ``(B, C, H, W)`` in [0, 1] as a NumPy array or a torch Tensor and
returns the same type, shape and dtype, clipped to [0, 1]. The random numbers come from the
generator given (``np.random.Generator`` or ``torch.Generator``), so a seeded generator gives
the same corruption every time. All work is batched: no Python loop over images.

Kinds and what ``level`` means:

- ``gaussian``: x + N(0, level^2) per pixel.
- ``salt-pepper``: each pixel position (all channels together) becomes 0 with probability
  level / 2 and 1 with probability level / 2.
- ``blur``: Gaussian blur with sigma = level pixels (kernel radius round(4 sigma), border
  pixels repeated), like ``scipy.ndimage.gaussian_filter(mode="nearest")``.
- ``patch``: one square per image, of side round(level * min(H, W)) (at least 1 pixel) at a
  uniformly random position, filled per channel with 1 - that image's channel mean, so it
  always contrasts with the image's average brightness (bright on MNIST's black background).
- ``speckle``: x + x * N(0, level^2) (multiplicative noise).

>>> x = np.zeros((2, 1, 8, 8), dtype=np.float32)
>>> int((corrupt(x, "patch", 0.5, np.random.default_rng(0)) == 1).sum())  # two 4x4 patches
32
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from reconad.errors import ReconadError

KINDS = ("gaussian", "salt-pepper", "blur", "patch", "speckle")

Array = np.ndarray | torch.Tensor
Generator = np.random.Generator | torch.Generator


class _Draw:
    """Random numbers as float tensors of x's dtype/device, from either generator type."""

    def __init__(self, generator: Generator | None, like: torch.Tensor) -> None:
        self.gen = generator
        self.like = like

    def _to(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(values, np.ndarray):
            values = torch.from_numpy(values)
        return values.to(device=self.like.device, dtype=self.like.dtype)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(self.gen, np.random.Generator):
            return self._to(self.gen.standard_normal(shape))
        device = self.gen.device if self.gen is not None else self.like.device
        return self._to(torch.randn(shape, generator=self.gen, device=device,
                                    dtype=self.like.dtype))

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(self.gen, np.random.Generator):
            return self._to(self.gen.random(shape))
        device = self.gen.device if self.gen is not None else self.like.device
        return self._to(torch.rand(shape, generator=self.gen, device=device,
                                   dtype=self.like.dtype))

    def integers(self, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(self.gen, np.random.Generator):
            return torch.from_numpy(self.gen.integers(0, high, size=shape)).to(self.like.device)
        device = self.gen.device if self.gen is not None else self.like.device
        return torch.randint(0, high, shape, generator=self.gen,
                             device=device).to(self.like.device)


def corrupt(x: Array, kind: str, level: float, generator: Generator | None = None) -> Array:
    """Corrupt a batch of images with noise of the given kind and strength.

    Args:
        x: Images ``(B, C, H, W)`` in [0, 1], float NumPy array or torch Tensor.
        kind: ``gaussian``, ``salt-pepper``, ``blur``, ``patch`` or ``speckle``.
        level: Strength (see the module docstring); 0 returns an unchanged copy.
        generator: ``np.random.Generator`` or ``torch.Generator`` (either works with either
            input type); None: torch's global generator for tensors, a fresh unseeded NumPy
            generator for arrays.

    Returns:
        The corrupted images, same type, shape and dtype as ``x``, clipped to [0, 1].

    Raises:
        ReconadError: For an unknown kind, an out-of-range level or a bad input array.
    """
    _check(x, kind, level)
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x.detach()
    if isinstance(generator, torch.Generator) or generator is None and not is_numpy:
        draw = _Draw(generator, t)
    else:
        draw = _Draw(generator if generator is not None else np.random.default_rng(), t)
    with torch.no_grad():
        if level == 0:
            out = t.clone()
        else:
            out = _CORRUPTIONS[kind](t, float(level), draw).clamp_(0.0, 1.0)
    return out.numpy() if is_numpy else out


def _gaussian(x: torch.Tensor, sigma: float, draw: _Draw) -> torch.Tensor:
    return x + sigma * draw.normal(tuple(x.shape))


def _speckle(x: torch.Tensor, sigma: float, draw: _Draw) -> torch.Tensor:
    return x + x * sigma * draw.normal(tuple(x.shape))


def _salt_pepper(x: torch.Tensor, p: float, draw: _Draw) -> torch.Tensor:
    b, _, h, w = x.shape
    u = draw.uniform((b, 1, h, w))  # one draw per pixel position, shared by the channels
    out = x.masked_fill(u < p / 2, 0.0)
    return out.masked_fill((u >= p / 2) & (u < p), 1.0)


def _blur(x: torch.Tensor, sigma: float, draw: _Draw) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)  # scipy.ndimage's default truncate=4
    if radius == 0:
        return x.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g = g / g.sum()
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)  # blur every channel alike
    k = 2 * radius + 1
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, k))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, k, 1))
    return flat.reshape(b, c, h, w)


def _patch(x: torch.Tensor, fraction: float, draw: _Draw) -> torch.Tensor:
    b, _, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    top = draw.integers(h - side + 1, (b,))  # (B,)
    left = draw.integers(w - side + 1, (b,))
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
    fill = 1.0 - x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return torch.where(mask, fill, x)


_CORRUPTIONS = {
    "gaussian": _gaussian,
    "salt-pepper": _salt_pepper,
    "blur": _blur,
    "patch": _patch,
    "speckle": _speckle,
}


def _check(x: Array, kind: str, level: float) -> None:
    if kind not in _CORRUPTIONS:
        raise ReconadError(f"unknown corruption {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise ReconadError(f"corrupt() needs a NumPy array or torch Tensor, got "
                           f"{type(x).__name__}; convert the images first")
    floating = (np.issubdtype(x.dtype, np.floating) if isinstance(x, np.ndarray)
                else x.dtype.is_floating_point)
    if x.ndim != 4 or not floating:
        raise ReconadError(f"corrupt() needs float images (B, C, H, W) in [0, 1], got shape "
                           f"{tuple(x.shape)} and dtype {x.dtype}; scale the images to float")
    if not math.isfinite(level) or level < 0:
        raise ReconadError(f"noise level {level} must be a finite number >= 0; "
                           f"set scenario.noise_level / train.denoise_level accordingly")
    if kind in ("salt-pepper", "patch") and level > 1:
        raise ReconadError(f"{kind} level {level} is a fraction and must be <= 1; "
                           f"set scenario.noise_level / train.denoise_level to a value in (0, 1]")
