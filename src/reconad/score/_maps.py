"""Anomaly maps: where in an image the reconstruction fails, and how a map becomes a score.

A small defect (1 % of the pixels) barely moves the *mean* error of an image, so the image
score of a defect detector must come from a per-pixel map: compute the map
(:func:`anomaly_map`: squared, absolute or SSIM residual), optionally smooth it
(:func:`gaussian_smooth`, as ``scipy.ndimage.gaussian_filter(mode="reflect")``), optionally
standardise every pixel position against normal validation maps (:class:`MapNormalizer`),
then reduce it to one number per image (:func:`reduce_map`: ``mean``, ``max`` or ``topk``,
the mean of the top k % pixels). Higher = more anomalous, everywhere.

Maps are torch tensors ``(B, H, W)``; nothing here trains or holds a model.

>>> x = torch.zeros(2, 3, 16, 16)
>>> x_hat = x.clone()
>>> x_hat[1, :, 4, 4] = 1.0  # one wrong pixel in the second image
>>> m = anomaly_map(x, x_hat, "squared")
>>> tuple(m.shape), reduce_map(m, "max").tolist()
((2, 16, 16), [0.0, 1.0])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reconad.errors import ReconadError
from reconad.losses import error_map, ssim_map

MAP_KINDS = ("squared", "absolute", "ssim")
LOSS_OF_MAP = {"squared": "mse", "absolute": "l1"}  # the same per-pixel errors
REDUCTIONS = ("mean", "max", "topk", "boxmax")


def anomaly_map(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    kind: str = "squared",
    *,
    ssim_window: int = 11,
    ssim_sigma: float = 1.5,
    data_range: float = 1.0,
    smooth_sigma: float = 0.0,
) -> torch.Tensor:
    """Per-pixel anomaly map of each image, averaged over channels; higher = more anomalous.

    Args:
        x: Images ``(B, C, H, W)``.
        x_hat: Their reconstructions, same shape.
        kind: ``squared`` ((x - x_hat)^2), ``absolute`` (|x - x_hat|) or ``ssim``
            (1 - local SSIM, Gaussian window, border mirrored as skimage's ``full=True``).
        ssim_window: Odd side of the SSIM window (``ssim`` only).
        ssim_sigma: Standard deviation of the SSIM Gaussian window in pixels (``ssim`` only).
        data_range: Max minus min possible pixel value (``ssim`` only; 1 for [0, 1] images).
        smooth_sigma: If > 0, smooth the map with :func:`gaussian_smooth` at this sigma.

    Returns:
        Maps ``(B, H, W)``, same dtype and device as ``x``.

    Raises:
        ReconadError: unknown kind, shapes that differ or are not 4-D, a bad SSIM window.
    """
    if kind not in MAP_KINDS:
        raise ReconadError(f"unknown anomaly map {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    if x.shape != x_hat.shape or x.dim() != 4:
        raise ReconadError(
            f"cannot compare images of shapes {tuple(x.shape)} and {tuple(x_hat.shape)}; both "
            "must be (B, C, H, W) and equal"
        )
    if kind == "ssim":  # the loss's map with this data range: 1 - local SSIM
        maps = 1 - ssim_map(x, x_hat, ssim_window, ssim_sigma, data_range, full=True).mean(dim=1)
    else:  # the losses' squared (mse) or absolute (l1) error, averaged over channels
        maps = error_map(LOSS_OF_MAP[kind], x, x_hat)
    return gaussian_smooth(maps, smooth_sigma) if smooth_sigma > 0 else maps


def gaussian_smooth(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur of each map, as ``scipy.ndimage.gaussian_filter(m, sigma, mode="reflect")``.

    Separable: one 1-D convolution along W, then one along H, with a kernel of radius
    ``int(truncate * sigma + 0.5)`` and the border mirrored with the edge repeated
    (``d c b a | a b c d | d c b a``), as scipy's ``reflect``; a radius larger than the map
    keeps mirroring.

    Args:
        maps: ``(B, H, W)`` (or ``(H, W)``) floats.
        sigma: Standard deviation in pixels; 0 returns the maps unchanged.
        truncate: Kernel radius in standard deviations (scipy's default 4).

    Returns:
        Smoothed maps, same shape, dtype and device.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ReconadError(f"smoothing sigma {sigma} must be >= 0 pixels (0 = no smoothing)")
    if sigma == 0:
        return maps
    single = maps.dim() == 2
    m = maps[None] if single else maps
    if m.dim() != 3:
        raise ReconadError(f"anomaly maps must be (B, H, W), not {tuple(maps.shape)}")
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=m.dtype, device=m.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r + 1,)
    _, h, w = m.shape
    m = m[:, None]  # (B, 1, H, W)
    m = m.index_select(-1, _reflect_indices(w, radius, m.device))  # (B, 1, H, W + 2r)
    m = F.conv2d(m, kernel.view(1, 1, 1, -1))  # (B, 1, H, W)
    m = m.index_select(-2, _reflect_indices(h, radius, m.device))  # (B, 1, H + 2r, W)
    m = F.conv2d(m, kernel.view(1, 1, -1, 1))[:, 0]  # (B, H, W)
    return m[0] if single else m


def _reflect_indices(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source index of each position of a length-n axis padded by ``radius`` on both sides,
    mirrored with the edge repeated (scipy "reflect", period 2n): ``(n + 2 radius,)``."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def reduce_map(maps: torch.Tensor, reduction: str = "mean", topk: float = 0.01,
               box: int = 3) -> torch.Tensor:
    """One anomaly score per image from its map; higher = more anomalous.

    Args:
        maps: ``(B, H, W)``.
        reduction: ``mean`` (all pixels), ``max`` (the worst pixel), ``topk`` (the mean of the
            ``ceil(topk * H * W)`` highest pixels, at least one) or ``boxmax`` (the highest
            mean of a ``box x box`` window, the window cut by the border at the border: a
            region, not one stray pixel).
        topk: Fraction of the pixels ``topk`` averages, in (0, 1].
        box: Odd side of the ``boxmax`` window in pixels.

    Returns:
        Scores ``(B,)``.
    """
    if reduction not in REDUCTIONS:
        raise ReconadError(
            f"unknown map reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}"
        )
    if maps.dim() != 3:
        raise ReconadError(f"anomaly maps must be (B, H, W), not {tuple(maps.shape)}")
    flat = maps.flatten(1)  # (B, H*W)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "max":
        return flat.amax(dim=1)
    if reduction == "boxmax":
        if box < 1 or box % 2 == 0:
            raise ReconadError(f"boxmax window {box} must be an odd number of pixels, e.g. 3")
        means = F.avg_pool2d(maps[:, None], box, 1, box // 2, count_include_pad=False)
        return means.flatten(1).amax(dim=1)
    if not 0 < topk <= 1:
        raise ReconadError(f"topk fraction {topk} must lie in (0, 1] (e.g. 0.01 for the top 1 %)")
    k = max(1, math.ceil(topk * flat.shape[1] - 1e-9))  # 1e-9: 0.01 * 400 is not exactly 4
    return flat.topk(k, dim=1).values.mean(dim=1)


class MapNormalizer:
    """Per-pixel-position standardisation ``(m - mean) / std`` fitted on normal maps.

    Textures and objects have places that are always hard to reconstruct (edges, fine
    grain); dividing by how much each position varies on *normal* images makes a defect in a
    calm place as visible as one in a busy place. ``std`` is floored at ``min_std_fraction``
    times the mean per-pixel std (and 1e-12), so positions that never vary do not explode.

    Attributes (after :meth:`fit`):
        mean_: ``(H, W)`` mean of the normal maps at each position.
        std_: ``(H, W)`` their (population) standard deviation, floored.

    >>> normal = torch.rand(50, 8, 8)
    >>> z = MapNormalizer().fit(normal).transform(normal)
    >>> bool(z.mean(dim=0).abs().max() < 1e-4)
    True
    """

    def __init__(self, min_std_fraction: float = 0.1) -> None:
        self.min_std_fraction = min_std_fraction

    def fit(self, maps: torch.Tensor) -> MapNormalizer:
        """Learn the mean and std of each pixel position from normal maps ``(N, H, W)``, N >= 2.

        Returns:
            self.
        """
        if maps.dim() != 3 or maps.shape[0] < 2:
            raise ReconadError(
                f"map standardisation needs at least 2 normal maps (N, H, W), got shape "
                f"{tuple(maps.shape)}; give more normal validation images"
            )
        if not 0 <= self.min_std_fraction:
            raise ReconadError(f"min_std_fraction {self.min_std_fraction} must be >= 0")
        m = maps.double()
        mean = m.mean(dim=0)
        std = m.std(dim=0, correction=0)
        floor = max(self.min_std_fraction * float(std.mean()), 1e-12)
        self.mean_ = mean.to(maps.dtype)
        self.std_ = std.clamp_min(floor).to(maps.dtype)
        return self

    def transform(self, maps: torch.Tensor) -> torch.Tensor:
        """Standardised maps ``(B, H, W)`` of maps of the fitted size."""
        if not hasattr(self, "mean_"):
            raise ReconadError("MapNormalizer is not fitted; call fit(normal_maps) first")
        if tuple(maps.shape[-2:]) != tuple(self.mean_.shape):
            raise ReconadError(
                f"maps are {tuple(maps.shape[-2:])} (H, W) but the standardisation was fitted on "
                f"{tuple(self.mean_.shape)}; score images of the training size"
            )
        mean = self.mean_.to(device=maps.device, dtype=maps.dtype)
        std = self.std_.to(device=maps.device, dtype=maps.dtype)
        return (maps - mean) / std

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fitted statistics as plain tensors, for a checkpoint (safetensors-ready)."""
        if not hasattr(self, "mean_"):
            raise ReconadError("MapNormalizer is not fitted; call fit(normal_maps) first")
        return {"mean": self.mean_.contiguous(), "std": self.std_.contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> MapNormalizer:
        """A fitted normalizer from :meth:`state_dict`'s output."""
        normalizer = cls()
        normalizer.mean_, normalizer.std_ = state["mean"], state["std"]
        return normalizer
