"""The model run over many images in fixed-size passes: reconstructions, codes, error maps and
anomaly maps, on the model's device, back as CPU arrays.

Scores do not depend on the batch an image is scored in: every pass gets exactly the same
number of images (the last one padded), so the same matrix shapes give the same
floating-point sums.

>>> from reconad.config import ModelConfig
>>> from reconad.models import build_model
>>> model = build_model(ModelConfig(kind="dense", hidden=[16], latent=4), (1, 8, 8))
>>> images = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
>>> error_maps(model, images, "mse").shape     # (N, H, W) float32
(5, 8, 8)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from reconad.data import float_batch
from reconad.device import model_device, pass_size, to_device
from reconad.errors import ReconadError
from reconad.losses import error_map
from reconad.models import Autoencoder
from reconad.score._color import ColorStats
from reconad.score._maps import anomaly_map, gaussian_smooth

# Images per forward pass. Every pass gets exactly this many images (the last one padded
# with copies of its first image), so an image's score does not depend on the batch it came in:
# the same matrix shapes give the same floating-point sums. No gradients are kept, so this
# only bounds memory; on one thread 256 images per pass are as fast per image as 2048.
CHUNK = 256
# ... but at most this many input values (C*H*W per image) per pass, so large images keep
# memory bounded: 256 MNIST images, 85 of 3x128x128, 5 of 3x512x512. The pass size depends
# only on the image shape, so scores stay batch-independent.
PASS_VALUES = 2**22


def images_per_pass(image_shape: tuple[int, ...]) -> int:
    """Images per scoring pass for images of ``image_shape`` (C, H, W): :data:`CHUNK`, fewer
    for large images (at most :data:`PASS_VALUES` input values), at least 1."""
    return pass_size(image_shape, CHUNK, PASS_VALUES)


def model_pass(model: Autoencoder, x: np.ndarray) -> int:
    """Images per pass of ``model`` over ``x``: :func:`images_per_pass`, at most the model's
    ``pass_images``; fixed for a model and image shape, so scores stay batch-independent."""
    return min(images_per_pass(x.shape[1:]), getattr(model, "pass_images", None) or CHUNK)


def passes(x: np.ndarray, device: torch.device | None = None,
           size: int | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """(a (P, C, H, W) float32 batch on ``device`` (default CPU), how many of its images are
    real) over ``x``; P = ``size``, else :func:`images_per_pass` of the image shape.

    ``x`` may hold its stored dtype (uint8, a memory-mapped ``.npy``): only one pass at a time
    is converted to float32 (:func:`reconad.data.float_batch`).
    """
    size = size or images_per_pass(x.shape[1:])
    device = device or torch.device("cpu")
    for start in range(0, len(x), size):
        part = float_batch(np.asarray(x[start : start + size]))  # only this pass as float32
        n = len(part)
        if n < size:
            part = np.concatenate([part, np.repeat(part[:1], size - n, axis=0)])
        yield to_device(torch.from_numpy(part), device), n


@torch.no_grad()
def map_images(model: Autoencoder, x: np.ndarray, kinds: list[str], ssim_window: int = 11,
               smooth_sigma: float = 0.0, color_stats: ColorStats | None = None
               ) -> dict[str, torch.Tensor]:
    """Per-pixel anomaly maps of ``x`` (N, C, H, W) against the model's reconstructions,
    ``{kind: (N, H, W) float32}``, higher = more anomalous; one reconstruction per pass for
    all kinds (none when only ``color`` is asked for).

    A kind is a :func:`reconad.score.anomaly_map` kind (``squared``, ``absolute``, ``ssim``),
    ``color`` (``color_stats``' map of the image itself, :mod:`reconad.score`), ``segment``
    (the probability map of a segmenting model's head, ``model.kind=draem``) or a loss
    kind (``mse``, ``l1``, ``bce``, ``ssim``) of :func:`reconad.losses.error_map` when prefixed
    ``loss:``; ``smooth_sigma`` > 0 smooths each map but ``color`` (Gaussian, pixels).
    """
    if "color" in kinds and color_stats is None:
        raise ReconadError("the color map needs fitted colour statistics (Scorer.fit)")
    model.eval()
    needs_model = any(kind not in ("color", "segment") for kind in kinds)
    out: dict[str, list[torch.Tensor]] = {kind: [] for kind in kinds}
    for batch, n in passes(x, model_device(model), model_pass(model, x)):
        x_hat = model(batch) if needs_model else None
        for kind in kinds:
            if kind == "color":  # local statistics already: not smoothed again
                maps = color_stats.map(batch)
            elif kind == "segment":  # the segmenting head's probability of an anomaly
                maps = gaussian_smooth(torch.sigmoid(model.segment(batch))[:, 0], smooth_sigma)
            elif kind.startswith("loss:"):
                maps = gaussian_smooth(error_map(kind[5:], x_hat, batch), smooth_sigma)
            else:
                maps = gaussian_smooth(anomaly_map(batch, x_hat, kind, ssim_window=ssim_window),
                                       smooth_sigma)
            out[kind].append(maps[:n].cpu())
    return {kind: torch.cat(v) if v else torch.empty((0, *x.shape[2:])) for kind, v in out.items()}


@torch.no_grad()
def reconstruct(model: Autoencoder, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of ``x`` (N, C, H, W), same shape, values in [0, 1]."""
    model.eval()
    parts = [model(batch)[:n].cpu().numpy()
             for batch, n in passes(x, model_device(model), model_pass(model, x))]
    return np.concatenate(parts) if parts else np.empty_like(x, dtype=np.float32)


@torch.no_grad()
def error_maps(model: Autoencoder, x: np.ndarray, kind: str = "mse") -> np.ndarray:
    """Per-pixel error of ``x`` (N, C, H, W) against its reconstruction, shape (N, H, W)."""
    model.eval()
    parts = [error_map(kind, model(batch), batch)[:n].cpu().numpy()
             for batch, n in passes(x, model_device(model), model_pass(model, x))]
    return np.concatenate(parts) if parts else np.empty((0, *x.shape[2:]), dtype=np.float32)


@torch.no_grad()
def latent_codes(model: Autoencoder, x: np.ndarray) -> torch.Tensor:
    """The codes of ``x`` (N, C, H, W), flattened to (N, D) float32, on the CPU."""
    model.eval()
    parts = [model.encode(batch)[:n].flatten(1).cpu()
             for batch, n in passes(x, model_device(model), model_pass(model, x))]
    return torch.cat(parts) if parts else torch.empty(0, 0)
