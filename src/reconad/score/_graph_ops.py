"""Fixed-shape, export-friendly forms of the score's operations, for :class:`ScoreGraph`.

The scorer's own code (:mod:`reconad.losses`, :mod:`reconad.score._maps`,
:mod:`reconad.score._color`, :class:`reconad.models.TiledAutoencoder`) is written for eager
torch: kernels built per call, mirrored borders padded by slicing, ``log1p``, tiles gathered
in Python loops over the batch. ONNX has no ``Log1p`` and the exporters cannot keep a batch
axis symbolic through some of those, so each operation here is the same arithmetic for images
of one fixed size, with its kernels and border indices as buffers (constants in the graph).
``tests/test_onnx.py`` holds each to the eager code it mirrors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reconad.errors import ReconadError
from reconad.losses import EPS as BCE_EPS
from reconad.models import TiledAutoencoder, coverage, tile_starts
from reconad.score._color import LOG_STD_EPS


def _gaussian_1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """:func:`reconad.score.gaussian_smooth`'s kernel, (2r + 1,) float32."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _reflect_indices(n: int, radius: int) -> torch.Tensor:
    """scipy "reflect" source index of each padded position (as gaussian_smooth pads)."""
    i = torch.arange(-radius, n + radius) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


class Smooth(nn.Module):
    """:func:`reconad.score.gaussian_smooth` of ``(B, H, W)`` maps for one fixed size: the
    mirrored border as a Gather with constant indices, the blur as two Conv nodes."""

    def __init__(self, sigma: float, height: int, width: int) -> None:
        super().__init__()
        kernel = _gaussian_1d(sigma)
        radius = (len(kernel) - 1) // 2
        self.register_buffer("kw", kernel.view(1, 1, 1, -1).clone())
        self.register_buffer("kh", kernel.view(1, 1, -1, 1).clone())
        self.register_buffer("iw", _reflect_indices(width, radius))
        self.register_buffer("ih", _reflect_indices(height, radius))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        m = m.unsqueeze(1)  # (B, 1, H, W)
        m = F.conv2d(m.index_select(3, self.iw), self.kw)
        m = F.conv2d(m.index_select(2, self.ih), self.kh)
        return m.squeeze(1)


class SSIM(nn.Module):
    """:func:`reconad.losses.ssim_map` (Gaussian window, optional mirrored full map) for
    images of one fixed size; returns the per-channel map ``(B, C, H', W')``."""

    def __init__(self, channels: int, height: int, width: int, window: int = 11,
                 sigma: float = 1.5, data_range: float = 1.0, full: bool = False) -> None:
        super().__init__()
        if window % 2 == 0 or window > min(height, width):
            raise ReconadError(f"ssim window {window} does not fit {height}x{width} images")
        offsets = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
        g = torch.exp(-0.5 * (offsets / sigma) ** 2)
        g = g / g.sum()
        taps = 5 * channels
        self.channels, self.full = channels, full
        self.register_buffer("gw", g.view(1, 1, 1, window).expand(taps, 1, 1, window).clone())
        self.register_buffer("gh", g.view(1, 1, window, 1).expand(taps, 1, window, 1).clone())
        r = window // 2
        self.register_buffer("iw", _reflect_indices(width, r))
        self.register_buffer("ih", _reflect_indices(height, r))
        self.c1 = (0.01 * data_range) ** 2
        self.c2 = (0.03 * data_range) ** 2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.full:  # reconad.losses._pad_symmetric: the same mirror, as constant gathers
            x = x.index_select(2, self.ih).index_select(3, self.iw)
            y = y.index_select(2, self.ih).index_select(3, self.iw)
        c = self.channels
        stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        stats = F.conv2d(stats, self.gw, groups=5 * c)
        stats = F.conv2d(stats, self.gh, groups=5 * c)
        mu_x, mu_y, xx, yy, xy = stats.split(c, dim=1)
        var_x = xx - mu_x * mu_x
        var_y = yy - mu_y * mu_y
        cov = xy - mu_x * mu_y
        num = (2 * mu_x * mu_y + self.c1) * (2 * cov + self.c2)
        den = (mu_x * mu_x + mu_y * mu_y + self.c1) * (var_x + var_y + self.c2)
        return num / den


def _log1p(y: torch.Tensor) -> torch.Tensor:
    """log(1 + y) accurate for small y without a Log1p node (ONNX has none): Goldberg's
    ``log(u) * y / (u - 1)`` with ``u = 1 + y`` rounded (torch's BCE uses log1p)."""
    u = 1 + y
    d = u - 1
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where(d == 0, y, torch.log(u) * (y / safe))


def _bce(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`reconad.losses._bce` (torch's binary_cross_entropy on clamped input)."""
    p = x_hat.clamp(BCE_EPS, 1 - BCE_EPS)
    log_p = torch.log(p).clamp_min(-100.0)
    log_q = _log1p(-p).clamp_min(-100.0)
    return (x - 1) * log_q - x * log_p


class Losses(nn.Module):
    """Per-image losses and per-pixel error maps of :mod:`reconad.losses` (the kinds a
    score uses: mse, l1, bce, ssim) for images of one fixed shape."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.ssim_valid = SSIM(c, h, w, 11, 1.5) if min(h, w) >= 11 else None
        self.ssim_full = SSIM(c, h, w, 11, 1.5, full=True) if min(h, w) >= 11 else None

    def per_image(self, kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2, 3)
        if kind == "mse":
            return (x_hat - x).square().mean(dim=dims)
        if kind == "l1":
            return (x_hat - x).abs().mean(dim=dims)
        if kind == "bce":
            return _bce(x_hat, x).mean(dim=dims)
        if kind == "ssim":
            return 1 - self.ssim_valid(x_hat, x).mean(dim=dims)
        raise ReconadError(f"score.kind {kind!r} cannot be exported")

    def error_map(self, kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if kind == "mse":
            return (x_hat - x).square().mean(dim=1)
        if kind == "l1":
            return (x_hat - x).abs().mean(dim=1)
        if kind == "bce":
            return _bce(x_hat, x).mean(dim=1)
        if kind == "ssim":
            return 1 - self.ssim_full(x_hat, x).mean(dim=1)
        raise ReconadError(f"error map {kind!r} cannot be exported")


class ColorMap(nn.Module):
    """:meth:`reconad.score.ColorStats.map` with the fitted mean and precision as
    buffers, for images of one fixed size."""

    def __init__(self, stats: Any, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.smooth = nn.ModuleList(Smooth(s, height, width) for s in stats.sigmas)
        self.register_buffer("mean", stats.mean_.detach().float().cpu().view(1, -1, 1, 1).clone())
        self.register_buffer("precision", stats.precision_.detach().float().cpu().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.channels, self.height, self.width
        flat = x.reshape(-1, h, w)  # (B*C, H, W)
        out = []
        for smooth in self.smooth:
            mean = smooth(flat)
            var = smooth(flat * flat) - mean * mean
            log_std = (var.clamp_min(0).sqrt() + LOG_STD_EPS).log()
            out += [mean.reshape(-1, c, h, w), log_std.reshape(-1, c, h, w)]
        d = torch.cat(out, dim=1) - self.mean  # (B, D, H, W)
        pd = torch.einsum("ij,bjhw->bihw", self.precision, d)
        return (d * pd).sum(dim=1)


class Tiled(nn.Module):
    """:class:`reconad.models.TiledAutoencoder` with its fixed tile grid unrolled: every
    tile of every image in one batch, each tile's output padded back into place and summed
    in the reference's order, then divided by the coverage."""

    def __init__(self, tiled: TiledAutoencoder, height: int, width: int) -> None:
        super().__init__()
        self.model = tiled.model
        p = tiled.patch
        stride = max(p // 2, 1) if tiled.stride is None else tiled.stride
        self.patch, self.height, self.width = p, height, width
        self.grid = [(t, c) for t in tile_starts(height, p, stride)
                     for c in tile_starts(width, p, stride)]
        self.register_buffer("coverage", coverage(height, width, p, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, h, w = self.patch, self.height, self.width
        tiles = torch.cat([x[:, :, t:t + p, c:c + p] for t, c in self.grid], dim=0)
        out = self.model(tiles)  # (T*B, C', p, p)
        out = out.reshape(len(self.grid), -1, *out.shape[1:])
        total = None
        for i, (t, c) in enumerate(self.grid):
            placed = F.pad(out[i], (c, w - c - p, t, h - t - p))
            total = placed if total is None else total + placed
        return total / self.coverage
