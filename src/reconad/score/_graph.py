"""A fitted detector's score as one ``nn.Module`` of plain torch operations: what the ONNX
export (:func:`reconad.detector.detector_to_onnx`) traces.

The scorer scores in 256-image passes with NumPy float64 arithmetic and Python branches on
the data; :class:`ScoreGraph` does the same arithmetic on a whole batch at once with every
fitted statistic as a buffer: the (ensemble) model member by member, the test-time copies
from constant sampling grids, the exact latent kNN over the bank (the copies among their
image's shortlist), the class energy, the calibration (float64), the complexity correction,
and for a map detector the maps, their smoothing, standardisation and reduction. It reuses the
models' own modules and the eager functions that trace as they are (``total_variation``,
``reduce_map``, ``tta_moves``, ``tta_pixels``); the fixed-shape forms of the rest are in
``_graph_ops``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reconad.errors import ReconadError
from reconad.models import EnsembleAutoencoder, TiledAutoencoder
from reconad.score._graph_ops import SSIM, ColorMap, Losses, Smooth, Tiled
from reconad.score._knn import KNN_MARGIN, KNN_SHORTLIST
from reconad.score._maps import reduce_map
from reconad.score._parts import LOG_FLOOR, LOG_PARTS, TV_FLOOR, total_variation
from reconad.score._scorer import map_components
from reconad.transforms import affine_matrices, tta_moves, tta_pixels


def _cpu_copy(module: nn.Module) -> nn.Module:
    module = copy.deepcopy(module).cpu().float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ScoreGraph(nn.Module):
    """A fitted detector's scoring as one ``nn.Module``: ``forward(images) -> score`` (and
    ``map``), torch ops only, every fitted statistic a buffer.

    Args:
        detector: a fitted :class:`reconad.detector.Detector` (any device; copied to the CPU).
        maps: also return the anomaly map (N, H, W); None = for map detectors only.
    """

    def __init__(self, detector: Any, maps: bool | None = None) -> None:
        super().__init__()
        detector._check_fitted()
        scorer = detector.scorer_
        cfg = scorer.config
        self.config = cfg
        self.image_shape = tuple(int(s) for s in detector.image_shape_)
        c, h, w = self.image_shape
        whole = detector._whole_image_model()
        self.tiled = isinstance(whole, TiledAutoencoder)
        if self.tiled:
            self.net = Tiled(TiledAutoencoder(_cpu_copy(whole.model), whole.stride), h, w)
            self.members = None
        else:
            self.net = _cpu_copy(whole)
            self.members = (list(self.net.members) if isinstance(self.net, EnsembleAutoencoder)
                            else [self.net])
        self.is_map = cfg.map != "none"
        self.with_map = self.is_map if maps is None else bool(maps)
        self.losses = Losses(self.image_shape)
        self.parts = list(cfg.parts)
        if self.tiled and self.parts != ["recon"]:
            raise ReconadError("a tiled model scores by reconstruction only")

        # ---- test-time copies: one constant sampling grid per copy (reconad.transforms)
        moves = tta_moves(tta_pixels(cfg.tta_shift, h, w), cfg.tta_rotation, cfg.tta_zoom)
        grids = []
        for angle, scale, dx, dy in moves:
            full = [torch.full((1,), float(v)) for v in (angle, scale, dx / w, dy / h)]
            theta = affine_matrices(*full, h, w)
            grids.append(F.affine_grid(theta, [1, c, h, w], align_corners=False)[0])
        self.n_views = 1 + len(grids)
        self.register_buffer("grids", torch.stack(grids) if grids else torch.empty(0, h, w, 2))

        # ---- latent kNN bank (reconad.score.knn_search / knn_distance_among)
        self.knn = "latent_knn" in self.parts
        if self.knn:
            bank = scorer.bank.detach().float().cpu().contiguous()
            m = len(bank)
            self.k = min(cfg.knn_k, m)
            wanted = KNN_SHORTLIST if self.n_views > 1 else cfg.knn_k + KNN_MARGIN
            self.n_candidates = min(m, max(wanted, self.k))
            keys = torch.cat([-2.0 * bank, (bank * bank).sum(1, keepdim=True)], dim=1).T
            self.register_buffer("bank", bank)
            self.register_buffer("keys", keys.contiguous())  # (D+1, M)

        # ---- calibration (reconad.score.Calibration), float64 as the reference
        cal = scorer.calibration
        self.calibrated = cal is not None
        if self.calibrated:
            self.register_buffer("cal_mean", torch.tensor([cal.mean[p] for p in self.parts],
                                                          dtype=torch.float64))
            self.register_buffer("cal_std", torch.tensor([cal.std[p] for p in self.parts],
                                                         dtype=torch.float64))

        # ---- maps (reconad.score.Scorer.maps)
        self.components = map_components(cfg) if (self.is_map or self.with_map) else []
        self.smooth = (Smooth(cfg.smooth_sigma, h, w) if cfg.smooth_sigma > 0 else None)
        self.map_ssim = (SSIM(c, h, w, cfg.ssim_window, 1.5, full=True)
                         if "ssim" in self.components else None)
        self.color = (ColorMap(scorer.color_stats, c, h, w)
                      if "color" in self.components else None)
        self.normalized = scorer.normalizers is not None and bool(self.components)
        if self.normalized:
            self.register_buffer("map_mean", torch.stack(
                [scorer.normalizers[k].mean_.float().cpu() for k in self.components]))
            self.register_buffer("map_std", torch.stack(
                [scorer.normalizers[k].std_.float().cpu() for k in self.components]))

    # ------------------------------------------------------------------ the model

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's code of ``x`` (the tiled model: the images themselves)."""
        if self.tiled:
            return [x]
        return [m.encode(x) for m in self.members]

    def _decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The reconstruction: the member's, or the mean of an ensemble's members'."""
        if self.tiled:
            return self.net(codes[0])
        if len(self.members) == 1:
            return self.members[0].decode(codes[0])
        decoded = [m.decode(z) for m, z in zip(self.members, codes, strict=True)]
        return torch.stack(decoded).mean(dim=0)

    # ------------------------------------------------------------------ kNN

    def _exact_knn(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Mean distance of each code (B, D) to its k nearest among its candidate bank rows
        (B, n): :func:`reconad.score.knn_distance_among`, float32 (B,)."""
        rows = self.bank[candidates]  # (B, n, D)
        exact = (query.unsqueeze(1) - rows).square().sum(dim=2).sqrt()
        nearest = exact.topk(self.k, dim=1, largest=False).values
        return nearest.mean(dim=1)

    def _shortlist(self, query: torch.Tensor) -> torch.Tensor:
        """The ``n_candidates`` bank rows nearest by the matmul form |b|^2 - 2 a.b, as
        :func:`reconad.score.knn_search` ranks them, (B, n) int64."""
        lifted = torch.cat([query, torch.ones_like(query[:, :1])], dim=1)
        rank = lifted @ self.keys  # (B, M)
        return rank.topk(self.n_candidates, dim=1, largest=False).indices

    # ------------------------------------------------------------------ parts

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """The image and its test-time copies, stacked view-major: (V*B, C, H, W); all
        copies come from one GridSample node (each copy its own constant grid)."""
        if self.n_views == 1:
            return x
        b, copies = x.shape[0], self.n_views - 1
        c, h, w = self.image_shape
        many = x.unsqueeze(0).expand(copies, -1, -1, -1, -1).reshape(-1, c, h, w)
        grids = self.grids.unsqueeze(1).expand(-1, b, -1, -1, -1).reshape(-1, h, w, 2)
        moved = F.grid_sample(many, grids, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        return torch.cat([x, moved], dim=0)

    def _raw_parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each score part of every view, float32 (V, B) per part, in ``self.parts`` order."""
        v = self.n_views
        views = self._views(x)  # (V*B, C, H, W)
        codes = self._encode(views)
        out = []
        for part in self.parts:
            if part == "recon":
                x_hat = self._decode(codes)
                error = self.losses.per_image(self.config.kind, x_hat, views)
                if self.config.complexity == "tv":
                    error = error / total_variation(views).clamp_min(TV_FLOOR)
                out.append(error.reshape(v, -1))
            elif part == "latent_knn":
                query = torch.cat([z.flatten(1) for z in codes], dim=1).reshape(
                    v, -1, self.bank.shape[1])  # (V, B, D)
                shortlist = self._shortlist(query[0])
                found = [self._exact_knn(query[0], shortlist)]
                if v > 1:  # copies: among their image's shortlist
                    b, n = shortlist.shape
                    copies = query[1:].reshape(-1, query.shape[2])  # ((V-1)*B, D)
                    lists = shortlist.unsqueeze(0).expand(v - 1, b, n).reshape(-1, n)
                    found.append(self._exact_knn(copies, lists).reshape(v - 1, -1))
                    out.append(torch.cat([found[0].unsqueeze(0), found[1]], dim=0))
                else:
                    out.append(found[0].unsqueeze(0))
            elif part == "class_energy":
                energies = []
                for m, z in zip(self.members, codes, strict=True):
                    logits = m.class_head(z)
                    top = logits.amax(dim=1, keepdim=True)
                    lse = (logits - top).exp().sum(dim=1).log() + top.squeeze(1)
                    energies.append(-lse)
                energy = torch.stack(energies).mean(dim=0)
                out.append(energy.reshape(v, -1))
            else:
                raise ReconadError(f"score part {part!r} cannot be exported")
        return out

    def _score_from_parts(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Mean over views on the calibration's scale, then the calibrated sum (float64)."""
        values = []
        for part, raw in zip(self.parts, parts, strict=True):
            t = raw.double()
            if part in LOG_PARTS:
                t = t.clamp_min(LOG_FLOOR).log()
            values.append(t.mean(dim=0))  # (B,)
        if not self.calibrated:  # one part: its raw value (a geometric mean for distances)
            if self.n_views == 1:
                return parts[0][0].double()
            return values[0].exp() if self.parts[0] in LOG_PARTS else values[0]
        stacked = torch.stack(values, dim=1)  # (B, P)
        return ((stacked - self.cal_mean) / self.cal_std).sum(dim=1)

    # ------------------------------------------------------------------ maps

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`reconad.score.Scorer.maps`: (B, H, W) float32."""
        needs_model = any(k not in ("color", "segment") for k in self.components)
        x_hat = self._decode(self._encode(x)) if needs_model else None
        found = []
        for kind in self.components:
            if kind == "color":
                found.append(self.color(x))
                continue
            if kind == "segment":
                m = torch.sigmoid(self.net.segment(x))[:, 0]
            elif kind.startswith("loss:"):
                m = self.losses.error_map(kind[5:], x_hat, x)
            elif kind == "squared":
                m = (x - x_hat).square().mean(dim=1)
            elif kind == "absolute":
                m = (x - x_hat).abs().mean(dim=1)
            elif kind == "ssim":
                m = 1 - self.map_ssim(x, x_hat).mean(dim=1)
            else:
                raise ReconadError(f"map {kind!r} cannot be exported")
            found.append(self.smooth(m) if self.smooth is not None else m)
        if self.normalized:
            found = [(m - self.map_mean[i]) / self.map_std[i] for i, m in enumerate(found)]
        return found[0] if len(found) == 1 else torch.stack(found).mean(dim=0)

    # ------------------------------------------------------------------ forward

    def forward(self, images: torch.Tensor):
        if self.is_map:
            maps = self._maps(images)
            score = reduce_map(maps, self.config.reduction, self.config.topk, self.config.box)
            return (score, maps) if self.with_map else score
        score = self._score_from_parts(self._raw_parts(images)).float()
        if self.with_map:
            return score, self._maps(images)
        return score
