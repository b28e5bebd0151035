"""Per-image reconstruction losses, including our own differentiable SSIM.

Every loss returns one value per image ``(B,)``: the mean over that image's pixels (and
channels). Training averages them over the batch; scoring uses them as anomaly scores.

SSIM follows Wang et al. (2004) with a Gaussian window, as
``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``:
local statistics are Gaussian-weighted means over ``window x window`` neighbourhoods and the
per-image value averages the SSIM map over channels and the *valid* region (the border of
``window // 2`` pixels is left out, as skimage crops it).

>>> x = torch.rand(4, 1, 28, 28)
>>> per_image_loss("mse", x, x).tolist()
[0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from reconad.config import LossConfig
from reconad.errors import ReconadError

LOSS_KINDS = ("mse", "l1", "bce", "ssim", "mix")
# log(0) guard for bce: predictions are clamped into [EPS, 1 - EPS] (representable in float32).
EPS = 1e-6


def _gaussian_kernel(window: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian of length ``window`` centred on its middle tap, shape (window,)."""
    offsets = torch.arange(window, dtype=like.dtype, device=like.device) - (window - 1) / 2
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return g / g.sum()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ReconadError(
            f"cannot compare images of shapes {tuple(x.shape)} and {tuple(y.shape)}; both must "
            f"be (B, C, H, W) and equal"
        )


def _check_window(window: int, sigma: float, height: int, width: int) -> None:
    if window < 1 or window % 2 == 0:
        raise ReconadError(f"ssim window {window} must be a positive odd number (e.g. 7 or 11); "
                           f"set loss.ssim_window accordingly")
    if window > min(height, width):
        raise ReconadError(
            f"ssim window {window} is larger than the {height}x{width} images; set "
            f"loss.ssim_window to an odd number <= {min(height, width)}"
        )
    if sigma <= 0:
        raise ReconadError(f"ssim sigma {sigma} must be positive; set loss.ssim_sigma > 0")


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    full: bool = False,
) -> torch.Tensor:
    """Local SSIM between two batches of images, per channel.

    Args:
        x: Images ``(B, C, H, W)``.
        y: Images of the same shape.
        window: Odd side of the Gaussian window.
        sigma: Standard deviation of the Gaussian window, in pixels.
        data_range: Max minus min possible pixel value (1 for images in [0, 1]).
        full: If false, only the valid region ``(B, C, H - window + 1, W - window + 1)``;
            if true, the full ``(B, C, H, W)`` map with the images mirrored at the border
            (as skimage's ``full=True``).

    Returns:
        The SSIM map; 1 where the neighbourhoods agree perfectly.
    """
    _check_pair(x, y)
    b, c, h, w = x.shape
    _check_window(window, sigma, h, w)
    if full:
        # skimage's full map filters with scipy's default "reflect" border (edge repeated).
        x = _pad_symmetric(x, window // 2)
        y = _pad_symmetric(y, window // 2)
    g = _gaussian_kernel(window, sigma, x)
    # One grouped, separable pass over the five statistics of every channel: (B, 5C, H, W).
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    taps = 5 * c
    stats = F.conv2d(stats, g.view(1, 1, 1, window).expand(taps, 1, 1, window), groups=taps)
    stats = F.conv2d(stats, g.view(1, 1, window, 1).expand(taps, 1, window, 1), groups=taps)
    mu_x, mu_y, xx, yy, xy = stats.split(c, dim=1)  # each (B, C, H', W')
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def _pad_symmetric(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mirror H and W by ``r`` pixels, edge repeated (scipy's "reflect"): (B, C, H+2r, W+2r)."""
    x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean SSIM per image ``(B,)``, averaged over channels and the valid region.

    Matches ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=data_range)`` for ``window=11, sigma=1.5``.
    Differentiable.
    """
    return ssim_map(x, y, window, sigma, data_range).mean(dim=(1, 2, 3))


def per_image_loss(
    kind: str,
    x_hat: torch.Tensor,
    x: torch.Tensor,
    *,
    ssim_weight: float = 0.5,
    ssim_window: int = 11,
    ssim_sigma: float = 1.5,
) -> torch.Tensor:
    """Reconstruction loss of each image ``(B,)``, the mean over its pixels.

    Args:
        kind: ``mse``, ``l1``, ``bce`` (x_hat clamped away from 0 and 1), ``ssim`` (1 - SSIM)
            or ``mix`` ((1 - w) * mse + w * (1 - SSIM)).
        x_hat: Reconstructions ``(B, C, H, W)`` in [0, 1].
        x: Targets of the same shape in [0, 1].
        ssim_weight: ``w`` for ``mix``.
        ssim_window: SSIM window side (odd).
        ssim_sigma: SSIM Gaussian sigma.
    """
    return _loss(kind, x_hat, x, (1, 2, 3), ssim_weight, ssim_window, ssim_sigma)


def robust_batch_loss(per_image: torch.Tensor, robust: str = "none") -> torch.Tensor:
    """The training loss of a batch from its per-image losses ``(B,)``: their mean, or with
    ``robust="l21"`` the mean of their square roots (``loss.robust``; for ``mse`` each root
    is the image's residual L2 norm over the square root of its pixel count).

    >>> round(robust_batch_loss(torch.tensor([1.0, 4.0, 16.0]), "l21").item(), 6)
    2.333333
    """
    if robust == "none":
        return per_image.mean()
    if robust == "l21":
        # the clamp keeps the gradient finite for an image reconstructed exactly
        return per_image.clamp_min(1e-12).sqrt().mean()
    raise ReconadError(f"unknown loss.robust {robust!r}; choose none or l21")


def loss_from_config(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-image loss ``f(x_hat, x) -> (B,)`` that the ``loss`` config section describes."""
    _check_kind(cfg.kind, LOSS_KINDS)
    kind, weight, window, sigma = cfg.kind, cfg.ssim_weight, cfg.ssim_window, cfg.ssim_sigma

    def loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return per_image_loss(kind, x_hat, x, ssim_weight=weight, ssim_window=window,
                              ssim_sigma=sigma)

    return loss


def error_map(
    kind: str,
    x_hat: torch.Tensor,
    x: torch.Tensor,
    *,
    ssim_weight: float = 0.5,
    ssim_window: int = 11,
    ssim_sigma: float = 1.5,
) -> torch.Tensor:
    """Per-pixel error ``(B, H, W)``, averaged over channels, for heat-maps.

    ``mse``: squared error; ``l1``: absolute error; ``bce``: binary cross-entropy; ``ssim``:
    1 - the full SSIM map (border mirrored); ``mix``: the weighted sum of the mse and ssim maps.
    """
    return _loss(kind, x_hat, x, 1, ssim_weight, ssim_window, ssim_sigma)


# What each pixel of each channel contributes, for the kinds that are pixel-wise.
_PIXELWISE = {
    "mse": lambda x_hat, x: (x_hat - x).square(),
    "l1": lambda x_hat, x: (x_hat - x).abs(),
    "bce": lambda x_hat, x: _bce(x_hat, x),
}


def _loss(kind: str, x_hat: torch.Tensor, x: torch.Tensor, dims: int | tuple[int, ...],
          ssim_weight: float, ssim_window: int, ssim_sigma: float) -> torch.Tensor:
    """The one dispatch of the loss kinds: the mean over ``dims`` (``(1, 2, 3)``: one value
    per image, SSIM over its valid region; ``1``: a map per image, the full SSIM map)."""
    _check_kind(kind, LOSS_KINDS)
    _check_pair(x_hat, x)
    if kind in _PIXELWISE:
        return _PIXELWISE[kind](x_hat, x).mean(dim=dims)
    if dims == 1:
        dissim = 1 - ssim_map(x_hat, x, ssim_window, ssim_sigma, full=True).mean(dim=1)
    else:
        dissim = 1 - ssim(x_hat, x, ssim_window, ssim_sigma)
    if kind == "ssim":
        return dissim
    return (1 - ssim_weight) * _PIXELWISE["mse"](x_hat, x).mean(dim=dims) + ssim_weight * dissim


def _bce(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Element-wise binary cross-entropy, safe at x_hat exactly 0 or 1, shape of x."""
    return F.binary_cross_entropy(x_hat.clamp(EPS, 1 - EPS), x, reduction="none")


def _check_kind(kind: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise ReconadError(f"unknown loss kind {kind!r}; choose one of {', '.join(allowed)}")
