"""From a trained autoencoder to per-image anomaly scores (higher = more anomalous).

>>> scores = score_images(model, images, "mse")   # (N,) float64
>>> maps = error_maps(model, images, "mse")       # (N, H, W) float32
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reconad.losses import error_map, per_image_loss

SCORE_KINDS = ("mse", "l1", "bce", "ssim")
BATCH = 2048  # images per forward pass; no gradients are kept, so this only bounds memory


def _batches(x: np.ndarray):
    for start in range(0, len(x), BATCH):
        yield torch.from_numpy(np.ascontiguousarray(x[start : start + BATCH], dtype=np.float32))


@torch.no_grad()
def reconstruct(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of ``x`` (N, C, H, W), same shape, values in [0, 1]."""
    model.eval()
    parts = [model(batch).numpy() for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty_like(x, dtype=np.float32)


@torch.no_grad()
def score_images(model: nn.Module, x: np.ndarray, kind: str = "mse") -> np.ndarray:
    """Per-image anomaly score of ``x`` (N, C, H, W): higher = more anomalous.

    ``kind`` is the reconstruction dissimilarity: ``mse``, ``l1``, ``bce`` or ``ssim``
    (1 - SSIM of input and reconstruction).
    """
    model.eval()
    parts = [per_image_loss(kind, model(batch), batch).double().numpy() for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty(0)


@torch.no_grad()
def error_maps(model: nn.Module, x: np.ndarray, kind: str = "mse") -> np.ndarray:
    """Per-pixel error of ``x`` (N, C, H, W) against its reconstruction, shape (N, H, W)."""
    model.eval()
    parts = [error_map(kind, model(batch), batch).numpy() for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty((0, *x.shape[2:]), dtype=np.float32)
