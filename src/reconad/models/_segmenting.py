"""A reconstructive autoencoder with a discriminative head that segments anomalies (DRAEM:
Zavrtanik, Kristan, Skočaj, ICCV 2021), for defects in real photographs.

Training (:mod:`reconad.train`) pastes simulated anomalies on normal images; the autoencoder
learns to restore the clean image, the head learns where the pasted region is from the
image and its reconstruction side by side. At test time the head's map is the anomaly map
(``score.map=segment``). With ``reconstruct=False`` the head reads the image alone.

Both networks see each image standardised by its own mean and standard deviation, so a tile
photographed brighter or darker is the same tile to them. The code carries that mean and
standard deviation as its last two channels, so ``decode`` returns pixels in [0, 1] as every
autoencoder of :mod:`reconad.models` does.

>>> model = SegmentingAutoencoder((1, 32, 32), channels=[8, 16])
>>> x = torch.rand(2, 1, 32, 32)
>>> tuple(model(x).shape), tuple(model.segment(x).shape), tuple(model.encode(x).shape)
((2, 1, 32, 32), (2, 1, 32, 32), (2, 18, 16, 16))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reconad.models import _layers
from reconad.models._base import Autoencoder

STD_FLOOR = 1e-3  # a flat image is standardised by this instead of a zero deviation


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two [3x3 conv (no bias), batch norm, ReLU]: one level of either network."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))


class _Encoder(nn.Module):
    """Levels of ``_block``, a 2x2 max-pool before every level but the first; returns every
    level's features (the U-Net's skips)."""

    def __init__(self, c_in: int, widths: list[int]) -> None:
        super().__init__()
        ins = [c_in, *widths[:-1]]
        self.levels = nn.ModuleList(_block(a, b) for a, b in zip(ins, widths, strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, level in enumerate(self.levels):
            x = level(F.max_pool2d(x, 2) if i else x)
            features.append(x)
        return features


class _Decoder(nn.Module):
    """Bilinear upsampling to each finer level's size, concatenated with its skip features
    when ``skips`` (a U-Net), each followed by a ``_block``; a 1x1 conv to ``c_out``."""

    def __init__(self, widths: list[int], c_out: int, skips: bool) -> None:
        super().__init__()
        self.skips = skips
        finer = list(reversed(widths[:-1]))
        coarser = list(reversed(widths))[:-1]
        ins = [w + (f if skips else 0) for w, f in zip(coarser, finer, strict=True)]
        self.levels = nn.ModuleList(_block(a, b) for a, b in zip(ins, finer, strict=True))
        self.out = nn.Conv2d(widths[0], c_out, 1)

    def forward(self, x: torch.Tensor, sizes: list[torch.Size],
                skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        for i, level in enumerate(self.levels):
            x = F.interpolate(x, size=sizes[i], mode="bilinear", align_corners=False)
            x = level(torch.cat([x, skips[i]], dim=1) if self.skips else x)
        return self.out(x)


class TrainingOutputs(NamedTuple):
    """What one training step needs: ``(B, C, H, W)`` reconstruction in the standardised
    units of the input (None without ``reconstruct``), ``(B, 1, H, W)`` logits, and the
    input's per-image ``mean`` and ``std`` ``(B, 1, 1, 1)``."""

    reconstruction: torch.Tensor | None
    logits: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


class SegmentingAutoencoder(Autoencoder):
    """Reconstructive autoencoder (no skips) + discriminative U-Net head.

    Args:
        input_shape: ``(C, H, W)``; fully convolutional, rebuilt for other sizes with the same
            weights.
        channels: widths of the levels of both networks (e.g. ``[16, 32, 64, 128]``); each
            level after the first halves height and width.
        reconstruct: build the autoencoder and give the head its reconstruction; False = the
            head alone (the code is the image, the reconstruction the image itself).
    """

    pass_images = 16  # full-resolution U-Net activations: 16 images of 128x128 take ~0.2 GB

    def __init__(self, input_shape: tuple[int, int, int], channels: list[int],
                 reconstruct: bool = True) -> None:
        c, h, w = input_shape
        down = 2 ** (len(channels) - 1)
        sizes, size = [], (h, w)
        for _ in channels[1:]:
            sizes.append(size)
            size = (size[0] // 2, size[1] // 2)
        if min(size) < 1:
            raise ValueError(f"{h}x{w} images are too small for {len(channels)} levels")
        code = (channels[-1] + 2, size[0], size[1]) if reconstruct else tuple(input_shape)
        super().__init__(input_shape, code)
        self.reconstruct, self.down = reconstruct, down
        self.sizes = list(reversed(sizes))  # decoder levels, coarse to fine
        if reconstruct:
            self.rec_encoder = _Encoder(c, channels)
            self.rec_decoder = _Decoder(channels, c, skips=False)
        self.head_encoder = _Encoder(2 * c if reconstruct else c, channels)
        self.head_decoder = _Decoder(channels, 1, skips=True)
        self._add_class_head(0)

    @staticmethod
    def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``((x - mean) / std, mean, std)`` per image, mean and std ``(B, 1, 1, 1)``."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = (x - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt() + STD_FLOOR
        return (x - mean) / std, mean, std

    def _restore(self, xs: torch.Tensor) -> torch.Tensor:
        """The autoencoder on standardised images: standardised reconstruction."""
        return self.rec_decoder(self.rec_encoder(xs)[-1], self.sizes)

    def _head(self, xs: torch.Tensor, rec: torch.Tensor | None) -> torch.Tensor:
        features = self.head_encoder(xs if rec is None else torch.cat([xs, rec], dim=1))
        return self.head_decoder(features[-1], self.sizes, list(reversed(features[:-1])))

    def training_outputs(self, x: torch.Tensor) -> TrainingOutputs:
        """Reconstruction and logits of images ``(B, C, H, W)`` in one pass (for training)."""
        _layers.check_input(x, self.input_shape)
        xs, mean, std = self.standardise(x)
        rec = self._restore(xs) if self.reconstruct else None
        return TrainingOutputs(rec, self._head(xs, rec), mean, std)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly logits ``(B, 1, H, W)`` of images ``(B, C, H, W)``; sigmoid = probability."""
        return self.training_outputs(x).logits

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the autoencoder's bottleneck features with the image's mean and std as
        two more channels ``(B, channels[-1] + 2, H', W')``; the image itself without
        ``reconstruct``."""
        _layers.check_input(x, self.input_shape)
        if not self.reconstruct:
            return x
        xs, mean, std = self.standardise(x)
        z = self.rec_encoder(xs)[-1]
        stats = torch.cat([mean, std], dim=1).expand(-1, -1, z.shape[2], z.shape[3])
        return torch.cat([z, stats], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes -> reconstructions ``(B, C, H, W)`` in [0, 1]."""
        if not self.reconstruct:
            return z
        mean, std = z[:, -2:-1, :1, :1], z[:, -1:, :1, :1]
        return (self.rec_decoder(z[:, :-2], self.sizes) * std + mean).clamp(0, 1)
