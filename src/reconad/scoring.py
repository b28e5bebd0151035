"""From a trained autoencoder to per-image anomaly scores (higher = more anomalous).

>>> from reconad.config import ModelConfig
>>> from reconad.models import build_model
>>> model = build_model(ModelConfig(kind="dense", hidden=[16], latent=4), (1, 8, 8))
>>> images = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
>>> score_images(model, images, "mse").shape   # (N,) float64
(5,)
>>> error_maps(model, images, "mse").shape     # (N, H, W) float32
(5, 8, 8)

With ``complexity="tv"`` the reconstruction error is divided by the image's total variation
(:func:`total_variation`). Reconstruction errors sit on stroke edges, so a detailed image (a
thick 8) has a large error even when it is normal and a plain one (a thin 1) a small error even
when it is anomalous; the ratio puts both on one scale. This is the input-complexity correction
of Serra et al. (ICLR 2020) applied to reconstruction errors.

A score can also combine several parts (``score.parts``): the reconstruction error
(``recon``), the distance of the code to its nearest training codes (``latent_knn``) and the
class head's energy (``class_energy``). :func:`score_parts` computes them in one pass;
:class:`Calibration` puts them on one scale (standardised on normal validation images) and
sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reconad.errors import ReconadError
from reconad.losses import error_map, per_image_loss
from reconad.models import class_logits

SCORE_KINDS = ("mse", "l1", "bce", "ssim")
COMPLEXITIES = ("none", "tv")
BATCH = 2048  # images per forward pass; no gradients are kept, so this only bounds memory
# Total variation below this is treated as this (a blank image): MNIST digits have 0.05-0.24.
TV_FLOOR = 1e-3


def _batches(x: np.ndarray):
    for start in range(0, len(x), BATCH):
        yield torch.from_numpy(np.ascontiguousarray(x[start : start + BATCH], dtype=np.float32))


@torch.no_grad()
def reconstruct(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's reconstruction of ``x`` (N, C, H, W), same shape, values in [0, 1]."""
    model.eval()
    parts = [model(batch).numpy() for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty_like(x, dtype=np.float32)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """How much edge each image of ``x`` (B, C, H, W) has, (B,): the mean absolute difference
    between vertically neighbouring pixels plus that between horizontally neighbouring ones.

    0 for a blank image, 1 for one-pixel-wide black and white stripes, 2 for a one-pixel
    checkerboard.
    """
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dy + dx


def recon_error(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse",
                complexity: str = "none") -> torch.Tensor:
    """Reconstruction error of each image (B,): the per-image ``kind`` loss of ``x_hat``
    against ``x``, divided by ``x``'s total variation when ``complexity`` is ``tv``."""
    error = per_image_loss(kind, x_hat, x)
    if complexity == "tv":
        return error / total_variation(x).clamp_min(TV_FLOOR)
    if complexity != "none":
        raise ReconadError(f"unknown score.complexity {complexity!r}; choose none or tv")
    return error


@torch.no_grad()
def score_images(model: nn.Module, x: np.ndarray, kind: str = "mse",
                 complexity: str = "none") -> np.ndarray:
    """Per-image anomaly score of ``x`` (N, C, H, W): higher = more anomalous.

    ``kind`` is the reconstruction dissimilarity: ``mse``, ``l1``, ``bce`` or ``ssim``
    (1 - SSIM of input and reconstruction); ``complexity="tv"`` divides it by the image's
    total variation (see the module docstring).
    """
    model.eval()
    parts = [recon_error(model(batch), batch, kind, complexity).double().numpy()
             for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty(0)


@torch.no_grad()
def error_maps(model: nn.Module, x: np.ndarray, kind: str = "mse") -> np.ndarray:
    """Per-pixel error of ``x`` (N, C, H, W) against its reconstruction, shape (N, H, W)."""
    model.eval()
    parts = [error_map(kind, model(batch), batch).numpy() for batch in _batches(x)]
    return np.concatenate(parts) if parts else np.empty((0, *x.shape[2:]), dtype=np.float32)


# --------------------------------------------------------------------------- composite scores

LOG_PARTS = ("recon", "latent_knn")  # positive distances: standardised on a log scale


@torch.no_grad()
def latent_codes(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """The codes of ``x`` (N, C, H, W), flattened to (N, D) float32."""
    model.eval()
    parts = [model.encode(batch).flatten(1) for batch in _batches(x)]
    return torch.cat(parts) if parts else torch.empty(0, 0)


@torch.no_grad()
def score_parts(model: nn.Module, x: np.ndarray, parts: list[str], kind: str = "mse",
                bank: torch.Tensor | None = None, k: int = 5,
                complexity: str = "none") -> dict[str, np.ndarray]:
    """Each requested part's raw score of ``x`` (N, C, H, W): ``{part: (N,) float64}``.

    ``recon`` is :func:`recon_error` (``kind``, ``complexity``); ``bank`` (M, D) holds the
    training codes ``latent_knn`` measures against (mean Euclidean distance to the ``k``
    nearest); ``class_energy`` is the class head's energy ``-logsumexp(logits)`` (the mean
    over an ensemble's members).
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    for batch in _batches(x):
        code = model.encode(batch)
        if "recon" in out:
            out["recon"].append(
                recon_error(model.decode(code), batch, kind, complexity).double().numpy())
        if "latent_knn" in out:
            # float64: the matmul form of cdist loses small distances in float32.
            dist = torch.cdist(code.flatten(1).double(), bank.double())  # (B, M)
            nearest = dist.topk(min(k, bank.shape[0]), dim=1, largest=False).values
            out["latent_knn"].append(nearest.mean(1).numpy())
        if "class_energy" in out:
            # An ensemble's energy: the mean of its members' energies.
            energy = torch.stack([-torch.logsumexp(logits, dim=1)
                                  for logits in class_logits(model, code)]).mean(dim=0)
            out["class_energy"].append(energy.double().numpy())
    return {part: np.concatenate(v) if v else np.empty(0) for part, v in out.items()}


@dataclass
class Calibration:
    """Per-part location and scale that put several score parts on one scale.

    A part's standardised value is ``(t(s) - mean) / std`` with ``t = log`` for the distances
    (``recon``, ``latent_knn``) and the identity for ``class_energy``; the score is their sum,
    so each part counts in units of its own spread over normal images.
    """

    mean: dict[str, float]
    std: dict[str, float]

    @classmethod
    def fit(cls, parts: dict[str, np.ndarray]) -> Calibration:
        """Location and scale of each part's scores on normal (validation) images."""
        values = {p: _transform(p, v) for p, v in parts.items()}
        return cls({p: float(v.mean()) for p, v in values.items()},
                   {p: float(v.std()) or 1.0 for p, v in values.items()})

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The summed standardised parts, (N,) float64."""
        return sum((_transform(p, v) - self.mean[p]) / self.std[p] for p, v in parts.items())


def _transform(part: str, values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, 1e-12)) if part in LOG_PARTS else values
