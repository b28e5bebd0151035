"""From a trained autoencoder to per-image anomaly scores (higher = more anomalous).

>>> from reconad.config import ModelConfig
>>> from reconad.models import build_model
>>> model = build_model(ModelConfig(kind="dense", hidden=[16], latent=4), (1, 8, 8))
>>> images = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
>>> score_images(model, images, "mse").shape   # (N,) float64
(5,)

With ``complexity="tv"`` the reconstruction error is divided by the image's total variation
(:func:`total_variation`). Reconstruction errors sit on stroke edges, so a detailed image (a
thick 8) has a large error even when it is normal and a plain one (a thin 1) a small error even
when it is anomalous; the ratio puts both on one scale. This is the input-complexity correction
of Serra et al. (ICLR 2020) applied to reconstruction errors.

A score can also combine several parts (``score.parts``): the reconstruction error
(``recon``), the distance of the code to its nearest training codes (``latent_knn``) and the
class head's energy (``class_energy``). :func:`score_parts` computes them in one pass;
:class:`Calibration` puts them on one scale (standardised on normal validation images) and
sums them. :class:`reconad.score.Scorer` holds a score's settings and fitted state.

Scores do not depend on the batch an image is scored in (fixed-size forward passes). They are
computed on the device the model is on (:mod:`reconad.device`) in float32 and come back as
NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reconad.device import model_device
from reconad.errors import ReconadError
from reconad.losses import per_image_loss
from reconad.models import Autoencoder
from reconad.score._knn import KNN_SHORTLIST, knn_distance, knn_distance_to, knn_search
from reconad.score._passes import passes
from reconad.transforms import tta_views

# Total variation below this is treated as this (a blank image): MNIST digits have 0.05-0.24.
TV_FLOOR = 1e-3


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


def score_images(model: Autoencoder, x: np.ndarray, kind: str = "mse",
                 complexity: str = "none") -> np.ndarray:
    """Per-image anomaly score of ``x`` (N, C, H, W): higher = more anomalous, (N,) float64.

    ``kind`` is the reconstruction dissimilarity: ``mse``, ``l1``, ``bce`` or ``ssim``
    (1 - SSIM of input and reconstruction); ``complexity="tv"`` divides it by the image's
    total variation (see the module docstring).
    """
    return score_parts(model, x, ["recon"], kind, complexity=complexity)["recon"]


# --------------------------------------------------------------------------- composite scores

LOG_PARTS = ("recon", "latent_knn")  # positive distances: standardised on a log scale
LOG_FLOOR = 1e-12  # a distance below this counts as this on the log scale


@torch.no_grad()
def score_parts(model: Autoencoder, x: np.ndarray, parts: list[str], kind: str = "mse",
                bank: torch.Tensor | None = None, k: int = 5,
                complexity: str = "none",
                tta: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> dict[str, np.ndarray]:
    """Each requested part's raw score of ``x`` (N, C, H, W): ``{part: (N,) float64}``.

    One pass: each image (and each test-time copy) is encoded once and its code decoded once
    (by each ensemble member).
    ``recon`` is :func:`recon_error` (``kind``, ``complexity``); ``bank`` (M, D) holds the
    training codes ``latent_knn`` measures against (:func:`knn_distance` to the ``k``
    nearest); ``class_energy`` is the class head's energy ``-logsumexp(logits)`` (the mean
    over an ensemble's members).

    ``tta`` (shift as a fraction of the image side, rotation in degrees, zoom) adds test-time
    augmentation: each part is also computed on the fixed copies of
    :func:`reconad.transforms.tta_views` (none where the shift is under half a pixel) and
    averaged over the image and its copies (geometrically for the distances, which are
    compared on a log scale), so the score no longer hinges on one exact pose. A copy's
    ``latent_knn`` is measured to its nearest among the image's own :data:`KNN_SHORTLIST`
    nearest bank codes (a copy's code lies near its image's; the whole bank is searched once
    per image, not once per copy).
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    for batch, n in passes(x, model_device(model)):
        views = tta_views(batch, *tta)
        shortlist = None  # the image's nearest bank codes, (n, KNN_SHORTLIST, D): its copies'
        # neighbours are looked for among them
        found = []
        for view in views:
            got, shortlist = _view_parts(model, view, n, parts, kind, bank, k, complexity,
                                         shortlist, len(views) > 1)
            found.append(got)
        for part in parts:
            out[part].append(_mean_over_views(part, [f[part] for f in found]))
    return {part: np.concatenate(v) if v else np.empty(0) for part, v in out.items()}


def _mean_over_views(part: str, values: list[np.ndarray]) -> np.ndarray:
    """A part's mean over an image's views, on the scale :class:`Calibration` standardises it
    on (the log for the distances: a geometric mean), so averaging the parts averages the
    calibrated score; one view is returned as it is."""
    if len(values) == 1:
        return values[0]
    mean = _transform(part, np.stack(values)).mean(axis=0)
    return np.exp(mean) if part in LOG_PARTS else mean


def _view_parts(model: Autoencoder, batch: torch.Tensor, n: int, parts: list[str], kind: str,
                bank: torch.Tensor | None, k: int, complexity: str,
                shortlist: torch.Tensor | None, keep_shortlist: bool
                ) -> tuple[dict[str, np.ndarray], torch.Tensor | None]:
    """:func:`score_parts` of one pass ``batch`` whose first ``n`` images are real, and the
    kNN shortlist: with ``shortlist`` (N, :data:`KNN_SHORTLIST`, D), the codes of some bank
    rows, the codes' neighbours are looked for among those only (a test-time copy among its
    image's), else in the whole bank, keeping a shortlist when ``keep_shortlist``."""
    found = {}
    code = model.encode(batch)
    if "recon" in parts:
        error = recon_error(model.decode(code), batch, kind, complexity)
        found["recon"] = error[:n].double().cpu().numpy()
    if "latent_knn" in parts:  # the bank is on the CPU: so is the search
        query = code[:n].flatten(1).cpu()
        if shortlist is not None:
            found["latent_knn"] = knn_distance_to(query, shortlist, k)
        elif keep_shortlist:
            found["latent_knn"], rows = knn_search(query, bank, k, KNN_SHORTLIST)
            shortlist = bank[rows]  # gathered once for all the copies
        else:
            found["latent_knn"] = knn_distance(query, bank, k)
    if "class_energy" in parts:
        # An ensemble's energy: the mean of its members' energies.
        energy = torch.stack([-torch.logsumexp(logits, dim=1)
                              for logits in model.class_logits(code)]).mean(dim=0)
        found["class_energy"] = energy[:n].double().cpu().numpy()
    return found, shortlist


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
    return np.log(np.maximum(values, LOG_FLOOR)) if part in LOG_PARTS else values
