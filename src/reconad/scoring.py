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
sums them. :class:`reconad.scorer.Scorer` holds a score's settings and fitted state.

Scores do not depend on the batch an image is scored in (fixed-size forward passes). They are
computed on the device the model is on (:mod:`reconad.device`) in float32 and come back as
NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from reconad.augment import tta_views
from reconad.color_stats import ColorStats
from reconad.device import model_device, to_device
from reconad.errors import ReconadError
from reconad.images import float_batch
from reconad.losses import error_map, per_image_loss
from reconad.models import Autoencoder

# Images per forward pass. Every pass gets exactly this many images (the last one padded
# with copies of its first image), so an image's score does not depend on the batch it came in:
# the same matrix shapes give the same floating-point sums. No gradients are kept, so this
# only bounds memory; on one thread 256 images per pass are as fast per image as 2048.
CHUNK = 256
# ... but at most this many input values (C*H*W per image) per pass, so large images keep
# memory bounded: 256 MNIST images, 85 of 3x128x128, 5 of 3x512x512. The pass size depends
# only on the image shape, so scores stay batch-independent.
PASS_VALUES = 2**22
# Total variation below this is treated as this (a blank image): MNIST digits have 0.05-0.24.
TV_FLOOR = 1e-3


def pass_size(image_shape: tuple[int, ...]) -> int:
    """Images per forward pass for images of ``image_shape`` (C, H, W): :data:`CHUNK`, fewer
    for large images (at most :data:`PASS_VALUES` input values), at least 1."""
    return max(1, min(CHUNK, PASS_VALUES // max(1, int(np.prod(image_shape)))))


def _chunks(x: np.ndarray, device: torch.device | None = None,
            size: int | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """(a (P, C, H, W) float32 batch on ``device`` (default CPU), how many of its images are
    real) over ``x``; P = ``size``, else :func:`pass_size` of the image shape.

    ``x`` may hold its stored dtype (uint8, a memory-mapped ``.npy``): only one pass at a time
    is converted to float32 (:func:`reconad.images.float_batch`).
    """
    size = size or pass_size(x.shape[1:])
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

    A kind is a :func:`reconad.maps.anomaly_map` kind (``squared``, ``absolute``, ``ssim``),
    ``color`` (``color_stats``' map of the image itself, :mod:`reconad.color_stats`) or a loss
    kind (``mse``, ``l1``, ``bce``, ``ssim``) of :func:`reconad.losses.error_map` when prefixed
    ``loss:``; ``smooth_sigma`` > 0 smooths each map but ``color`` (Gaussian, pixels).
    """
    from reconad.maps import anomaly_map, gaussian_smooth

    if "color" in kinds and color_stats is None:
        raise ReconadError("the color map needs fitted colour statistics (Scorer.fit)")
    model.eval()
    needs_model = any(kind != "color" for kind in kinds)
    out: dict[str, list[torch.Tensor]] = {kind: [] for kind in kinds}
    for batch, n in _chunks(x, model_device(model)):
        x_hat = model(batch) if needs_model else None
        for kind in kinds:
            if kind == "color":  # local statistics already: not smoothed again
                maps = color_stats.map(batch)
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
    parts = [model(batch)[:n].cpu().numpy() for batch, n in _chunks(x, model_device(model))]
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


def score_images(model: Autoencoder, x: np.ndarray, kind: str = "mse",
                 complexity: str = "none") -> np.ndarray:
    """Per-image anomaly score of ``x`` (N, C, H, W): higher = more anomalous, (N,) float64.

    ``kind`` is the reconstruction dissimilarity: ``mse``, ``l1``, ``bce`` or ``ssim``
    (1 - SSIM of input and reconstruction); ``complexity="tv"`` divides it by the image's
    total variation (see the module docstring).
    """
    return score_parts(model, x, ["recon"], kind, complexity=complexity)["recon"]


@torch.no_grad()
def error_maps(model: Autoencoder, x: np.ndarray, kind: str = "mse") -> np.ndarray:
    """Per-pixel error of ``x`` (N, C, H, W) against its reconstruction, shape (N, H, W)."""
    model.eval()
    parts = [error_map(kind, model(batch), batch)[:n].cpu().numpy()
             for batch, n in _chunks(x, model_device(model))]
    return np.concatenate(parts) if parts else np.empty((0, *x.shape[2:]), dtype=np.float32)


# --------------------------------------------------------------------------- composite scores

LOG_PARTS = ("recon", "latent_knn")  # positive distances: standardised on a log scale
LOG_FLOOR = 1e-12  # a distance below this counts as this on the log scale


KNN_QUERIES = 256  # codes compared with the bank at once
KNN_BANK_CHUNK = 8192  # bank codes per distance block: at most (256, 8192) floats at once
KNN_MARGIN = 8  # extra candidates re-measured exactly, in case rounding misordered the k-th
KNN_SHORTLIST = 64  # test-time copies look for their neighbours among the image's 64 nearest
KNN_GROUP = 32  # bank codes per group in the two-stage search for the nearest (see smallest)


@torch.no_grad()
def latent_codes(model: Autoencoder, x: np.ndarray) -> torch.Tensor:
    """The codes of ``x`` (N, C, H, W), flattened to (N, D) float32, on the CPU."""
    model.eval()
    parts = [model.encode(batch)[:n].flatten(1).cpu()
             for batch, n in _chunks(x, model_device(model))]
    return torch.cat(parts) if parts else torch.empty(0, 0)


@torch.no_grad()
def knn_distance(codes: torch.Tensor, bank: torch.Tensor, k: int) -> np.ndarray:
    """Mean Euclidean distance of each code (N, D) to its ``k`` nearest bank codes (M, D):
    (N,) float64.

    Float32 throughout, memory bounded by blocks of queries and bank codes. Candidates come
    from the matmul form ``|a|^2 + |b|^2 - 2 a.b`` (fast, but it loses small distances to
    cancellation); the ``k + KNN_MARGIN`` best candidates are then measured again directly as
    ``|a - b|``, which is accurate, and the ``k`` smallest of those are averaged.
    """
    return knn_search(codes, bank, k, k + KNN_MARGIN)[0]


@torch.no_grad()
def knn_search(codes: torch.Tensor, bank: torch.Tensor, k: int,
               n_candidates: int) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`knn_distance` of ``codes`` (N, D), and each code's ``n_candidates`` (>= k)
    nearest bank rows found on the way, (N, n_candidates) int64 (nearest first, up to the
    matmul form's rounding): a shortlist for :func:`knn_distance_among`."""
    k = min(k, len(bank))
    n_candidates = min(len(bank), max(n_candidates, k))
    # Rank by |b|^2 - 2 a.b (|a|^2 is the same for all of a row's candidates), in one matmul:
    # [a, 1] . [-2 b, |b|^2].
    keys = torch.cat([-2.0 * bank, (bank * bank).sum(1, keepdim=True)], dim=1).T  # (D+1, M)
    out, lists = [], []
    for start in range(0, len(codes), KNN_QUERIES):
        query = codes[start : start + KNN_QUERIES]  # (B, D)
        lifted = torch.cat([query, torch.ones(len(query), 1)], dim=1)  # (B, D+1)
        found_d, found_i = [], []
        for b0 in range(0, len(bank), KNN_BANK_CHUNK):
            rank = lifted @ keys[:, b0 : b0 + KNN_BANK_CHUNK]  # (B, Mb)
            d, i = smallest(rank, min(n_candidates, rank.shape[1]))
            found_d.append(d)
            found_i.append(i + b0)
        pick = torch.cat(found_d, 1).topk(n_candidates, dim=1, largest=False).indices
        candidates = torch.cat(found_i, 1).gather(1, pick)  # (B, n_candidates) bank rows
        out.append(knn_distance_among(query, bank, candidates, k))
        lists.append(candidates)
    if not out:
        return np.empty(0), torch.empty(0, n_candidates, dtype=torch.int64)
    return np.concatenate(out), torch.cat(lists)


def knn_distance_among(codes: torch.Tensor, bank: torch.Tensor, candidates: torch.Tensor,
                       k: int) -> np.ndarray:
    """Mean Euclidean distance of each code (N, D) to its ``k`` nearest among its own
    ``candidates`` (N, C) rows of ``bank``, measured directly as ``|a - b|``: (N,) float64."""
    exact = (codes[:, None, :] - bank[candidates]).norm(dim=2)  # (N, C)
    nearest = exact.topk(min(k, exact.shape[1]), dim=1, largest=False).values.sort(dim=1).values
    return nearest.double().mean(1).numpy()


def smallest(values: torch.Tensor, n: int,
             group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` smallest entries of each row of ``values`` (B, M) and their columns, as
    ``torch.topk(values, n, largest=False)`` gives them (ties aside), about twice as fast.

    The row is cut into groups of ``group`` entries and only the ``n`` groups with the smallest
    minima are searched: each of the ``n`` smallest entries lies in one of those groups (an
    entry in any other group has ``n`` group minima, ``n`` other entries, at or below it).
    """
    group = group or KNN_GROUP
    b, m = values.shape
    if m <= n * group:
        return values.topk(n, dim=1, largest=False)
    pad = (-m) % group
    if pad:
        values = torch.nn.functional.pad(values, (0, pad), value=float("inf"))
    groups = values.view(b, -1, group)
    picked = groups.amin(2).topk(n, dim=1, largest=False).indices  # (B, n) group numbers
    members = groups.gather(1, picked[:, :, None].expand(-1, -1, group)).reshape(b, -1)
    found, where = members.topk(n, dim=1, largest=False)
    columns = (picked[:, :, None] * group + torch.arange(group)).reshape(b, -1)
    return found, columns.gather(1, where)


@torch.no_grad()
def score_parts(model: Autoencoder, x: np.ndarray, parts: list[str], kind: str = "mse",
                bank: torch.Tensor | None = None, k: int = 5,
                complexity: str = "none",
                tta: tuple[int, float, float] = (0, 0.0, 0.0)) -> dict[str, np.ndarray]:
    """Each requested part's raw score of ``x`` (N, C, H, W): ``{part: (N,) float64}``.

    One pass: each image (and each test-time copy) is encoded once and its code decoded once
    (by each ensemble member).
    ``recon`` is :func:`recon_error` (``kind``, ``complexity``); ``bank`` (M, D) holds the
    training codes ``latent_knn`` measures against (:func:`knn_distance` to the ``k``
    nearest); ``class_energy`` is the class head's energy ``-logsumexp(logits)`` (the mean
    over an ensemble's members).

    ``tta`` (shift in pixels, rotation in degrees, zoom) adds test-time augmentation: each
    part is also computed on the fixed copies of :func:`reconad.augment.tta_views` and
    averaged over the image and its copies (geometrically for the distances, which are
    compared on a log scale), so the score no longer hinges on one exact pose. A copy's
    ``latent_knn`` is measured to its nearest among the image's own :data:`KNN_SHORTLIST`
    nearest bank codes (a copy's code lies near its image's; the whole bank is searched once
    per image, not once per copy).
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    for batch, n in _chunks(x, model_device(model)):
        views = tta_views(batch, *tta) if any(tta) else [batch]
        shortlist = None  # the image's nearest bank codes, where its copies' are looked for
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
    kNN shortlist: with ``shortlist`` (N, :data:`KNN_SHORTLIST`) the codes' neighbours are
    looked for among those bank rows only (a test-time copy among its image's), else in the
    whole bank, keeping a shortlist when ``keep_shortlist``."""
    found = {}
    code = model.encode(batch)
    if "recon" in parts:
        error = recon_error(model.decode(code), batch, kind, complexity)
        found["recon"] = error[:n].double().cpu().numpy()
    if "latent_knn" in parts:  # the bank is on the CPU: so is the search
        query = code[:n].flatten(1).cpu()
        if shortlist is not None:
            found["latent_knn"] = knn_distance_among(query, bank, shortlist, k)
        elif keep_shortlist:
            found["latent_knn"], shortlist = knn_search(query, bank, k, KNN_SHORTLIST)
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
