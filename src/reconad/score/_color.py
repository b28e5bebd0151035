"""Local colour statistics: an anomaly map of colours and grain that normal images never have.

A reconstruction residual misses two texture defects: a local colour or brightness shift (a
fully convolutional autoencoder reproduces it) and a flat patch of the mean colour (a blurry
reconstruction looks like one). Both change the *local statistics* of the image, whatever the
model does: around every pixel, the Gaussian-weighted mean and the log of the standard
deviation of each channel at a few scales (:func:`local_stats`, ``2 * C * len(sigmas)`` numbers
per pixel; the log makes a flat patch, whose deviation is near 0, as far out as a busy one).
:class:`ColorStats` fits one Gaussian to those vectors over all pixels of the normal training
images (streamed: only sums are kept) and maps each pixel of an image to the squared
Mahalanobis distance of its vector, higher = more anomalous. The model is not involved, so the
map adds what a reconstruction cannot see; :class:`reconad.score.Scorer` averages it with the
reconstruction maps after per-position standardisation (``score.map=ssim+squared+color``).

>>> normal = torch.rand(20, 3, 16, 16)
>>> stats = ColorStats([2.0]).fit([normal])
>>> odd = normal[:2].clone(); odd[:, 0, 4:10, 4:10] = 1.0   # a red square
>>> m = stats.map(odd)                                        # (2, 16, 16)
>>> bool(m[:, 7, 7].min() > stats.map(normal[:2])[:, 7, 7].max())
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from reconad.errors import ReconadError
from reconad.score._maps import gaussian_smooth

# Added to a local standard deviation before its log: about 0.8 grey levels of 255.
LOG_STD_EPS = 0.003
# Ridge added to the covariance's diagonal, relative to its mean diagonal (and at least 1e-12):
# keeps the inverse finite when a statistic never varies (a constant channel).
RIDGE = 1e-6


def local_stats(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Gaussian-weighted local mean and log standard deviation of every channel at every pixel.

    Args:
        x: Images ``(B, C, H, W)``.
        sigmas: Scales in pixels (> 0), each smoothing as :func:`reconad.score.gaussian_smooth`
            (border mirrored).

    Returns:
        ``(B, 2 * C * len(sigmas), H, W)``: for each sigma in order, the C local means then the
        C values ``log(sqrt(max(E[x^2] - E[x]^2, 0)) + LOG_STD_EPS)``.
    """
    if x.dim() != 4:
        raise ReconadError(f"local colour statistics need images (B, C, H, W), got shape "
                           f"{tuple(x.shape)}")
    if not sigmas or any(not (s > 0 and math.isfinite(s)) for s in sigmas):
        raise ReconadError(f"local colour statistics need scales > 0 pixels, got {sigmas}")
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h, w)
    out = []
    for sigma in sigmas:
        mean = gaussian_smooth(flat, sigma)
        var = gaussian_smooth(flat * flat, sigma) - mean * mean
        log_std = (var.clamp_min(0).sqrt() + LOG_STD_EPS).log()
        out += [mean.reshape(b, c, h, w), log_std.reshape(b, c, h, w)]
    return torch.cat(out, dim=1)


class ColorStats:
    """One Gaussian over the local colour statistics of all pixels of normal images.

    Args:
        sigmas: Scales of :func:`local_stats` in pixels.

    Attributes (after :meth:`fit`):
        mean_: ``(D,)`` float32 mean statistics vector, ``D = 2 * C * len(sigmas)``.
        precision_: ``(D, D)`` float32 inverse of their (population) covariance, ridged.
    """

    def __init__(self, sigmas: list[float]) -> None:
        self.sigmas = [float(s) for s in sigmas]

    def fit(self, batches: Iterable[torch.Tensor]) -> ColorStats:
        """Fit on normal images given as batches ``(B, C, H, W)`` (sums in float64, so any
        number of images fits in memory); returns self."""
        total, outer, count = None, None, 0
        for x in batches:
            f = local_stats(x.float(), self.sigmas).transpose(0, 1).flatten(1).double()
            if total is None:
                total, outer = f.new_zeros(len(f)), f.new_zeros(len(f), len(f))
            elif len(f) != len(total):
                raise ReconadError("colour statistics need images of one channel count")
            total += f.sum(1)
            outer += f @ f.T
            count += f.shape[1]
        if total is None or count < 2:
            raise ReconadError("colour statistics need normal images to fit; give some")
        mean = total / count
        cov = outer / count - torch.outer(mean, mean)
        ridge = max(RIDGE * float(cov.diagonal().mean()), 1e-12)
        cov = cov + ridge * torch.eye(len(mean), dtype=cov.dtype)
        self.mean_ = mean.float()
        self.precision_ = torch.linalg.inv(cov).float()
        return self

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of each pixel's statistics, ``(B, H, W)`` float32."""
        if not hasattr(self, "mean_"):
            raise ReconadError("ColorStats is not fitted; call fit(normal_batches) first")
        f = local_stats(x.float(), self.sigmas)  # (B, D, H, W)
        if f.shape[1] != len(self.mean_):
            raise ReconadError(
                f"images have {x.shape[1]} channels, the colour statistics were fitted on "
                f"{len(self.mean_) // (2 * len(self.sigmas))}")
        d = f - self.mean_.to(f.device)[None, :, None, None]
        pd = torch.einsum("ij,bjhw->bihw", self.precision_.to(f.device), d)
        return (d * pd).sum(dim=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fitted mean and precision as plain float32 tensors."""
        if not hasattr(self, "mean_"):
            raise ReconadError("ColorStats is not fitted; call fit(normal_batches) first")
        return {"mean": self.mean_.contiguous(), "precision": self.precision_.contiguous()}

    @classmethod
    def from_state_dict(cls, sigmas: list[float], state: dict[str, torch.Tensor]) -> ColorStats:
        """A fitted model from :meth:`state_dict`'s output (the caller checks the tensors)."""
        stats = cls(sigmas)
        stats.mean_, stats.precision_ = state["mean"], state["precision"]
        return stats
