"""Pure ``nn.Module`` autoencoders: a dense family and a convolutional family.

Every model maps images ``(B, C, H, W)`` in [0, 1] to reconstructions of the same shape in
[0, 1] (sigmoid output) and follows the :class:`Autoencoder` contract: ``encode(x) -> z``,
``decode(z) -> x_hat``, ``member_reconstructions(z)`` and ``class_logits(z)`` (an ensemble is
one more autoencoder, a single model an ensemble of one). A model trained on crops scores
images of any size through :class:`TiledAutoencoder` (``_tiled``: overlapping tiles,
:func:`sliding_window`). No training or scoring code lives here.

>>> from reconad.config import ModelConfig
>>> model = build_model(ModelConfig(hidden=[64], latent=8), (1, 28, 28))
>>> count_parameters(model)
102296
"""

from __future__ import annotations

import math

from torch import nn

from reconad.config import ModelConfig
from reconad.errors import ReconadError
from reconad.models._base import Autoencoder
from reconad.models._segmenting import SegmentingAutoencoder, TrainingOutputs
from reconad.models._tiled import TiledAutoencoder, coverage, sliding_window, tile_starts
from reconad.models.conv import ConvAutoencoder
from reconad.models.dense import DenseAutoencoder
from reconad.models.ensemble import EnsembleAutoencoder

__all__ = ["Autoencoder", "ConvAutoencoder", "DenseAutoencoder", "EnsembleAutoencoder",
           "SegmentingAutoencoder", "TiledAutoencoder", "TrainingOutputs", "build_model",
           "count_parameters", "coverage", "sliding_window", "tile_starts"]


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int],
                n_classes: int = 0) -> Autoencoder:
    """Build the autoencoder ``cfg`` describes for images of shape ``input_shape``.

    Args:
        cfg: The ``model`` section of the config.
        input_shape: ``(C, H, W)`` of the images, taken from the data.
        n_classes: Number of normal classes for ``cfg.class_head`` (ignored without it).

    Returns:
        A freshly initialised :class:`DenseAutoencoder` or :class:`ConvAutoencoder` (an
        :class:`EnsembleAutoencoder` of ``cfg.members`` of them when that is above 1); with
        ``cfg.class_head`` every member has a class head of ``n_classes`` logits on its code.

    Raises:
        ReconadError: If the shape is not three positive sizes, the code is larger than the
            input, the conv kernel is even, or a class head gets fewer than two classes.
    """
    if cfg.kind == "draem" and (cfg.members > 1 or cfg.class_head):
        raise ReconadError("model.kind=draem is one model without a class head; set "
                           "model.members=1 and model.class_head=false")
    if cfg.class_head and n_classes < 2:
        raise ReconadError(
            f"model.class_head needs normal training images of at least two labelled "
            f"classes (got {n_classes}); name several normal classes, or set "
            "model.class_head=false and score.parts=[recon,latent_knn]")
    n_classes = n_classes if cfg.class_head else 0
    members = [_autoencoder(cfg, input_shape, n_classes) for _ in range(cfg.members)]
    return members[0] if len(members) == 1 else EnsembleAutoencoder(members)


def _autoencoder(cfg: ModelConfig, input_shape: tuple[int, int, int],
                 n_classes: int) -> Autoencoder:
    shape = _check_shape(input_shape)
    if cfg.kind == "draem":
        if min(shape[1:]) < 2 ** (len(cfg.channels) - 1):
            raise ReconadError(
                f"{shape[1]}x{shape[2]} images (or train.crop) are too small for the "
                f"{len(cfg.channels)} levels of model.channels; use fewer levels")
        return SegmentingAutoencoder(shape, list(cfg.channels), cfg.reconstruct)
    size = math.prod(shape)
    if (cfg.kind == "dense" or cfg.bottleneck) and cfg.latent > size:
        raise ReconadError(
            f"model.latent={cfg.latent} exceeds the input size {size} "
            f"({shape[0]}x{shape[1]}x{shape[2]}); choose a smaller latent"
        )
    if cfg.kind == "dense":
        return DenseAutoencoder(
            shape,
            hidden=list(cfg.hidden),
            latent=cfg.latent,
            activation=cfg.activation,
            latent_activation=cfg.latent_activation,
            batch_norm=cfg.batch_norm,
            dropout=cfg.dropout,
            n_classes=n_classes,
        )
    if cfg.kernel % 2 == 0:
        raise ReconadError(
            f"model.kernel={cfg.kernel} is even; conv kernels must be odd for 'same' padding "
            f"(use {cfg.kernel - 1} or {cfg.kernel + 1})"
        )
    return ConvAutoencoder(
        shape,
        channels=list(cfg.channels),
        kernel=cfg.kernel,
        downsample=cfg.downsample,
        upsample=cfg.upsample,
        bottleneck=cfg.bottleneck,
        latent=cfg.latent,
        activation=cfg.activation,
        latent_activation=cfg.latent_activation,
        batch_norm=cfg.batch_norm,
        dropout=cfg.dropout,
        n_classes=n_classes,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ReconadError(
            f"input shape {tuple(input_shape)} is not (channels, height, width) with positive "
            f"sizes; give images as an (N, C, H, W) array"
        )
    return shape  # type: ignore[return-value]
