"""A score's settings and fitted state in one object: what a detector scores images with.

>>> from reconad.config import ModelConfig
>>> from reconad.models import build_model
>>> rng = np.random.default_rng(0)
>>> train_x, val_x = (rng.uniform(0, 1, (n, 1, 8, 8)).astype(np.float32) for n in (40, 10))
>>> model = build_model(ModelConfig(hidden=[16], latent=4), (1, 8, 8))
>>> scorer = Scorer(ScoreConfig(parts=["recon", "latent_knn"])).fit(model, train_x, val_x)
>>> scorer.score(model, val_x).shape    # (N,) float64, higher = more anomalous
(10,)
>>> sorted(scorer.parts(model, val_x))  # each part raw, (N,) each
['latent_knn', 'recon']

The fitted state is the bank of training codes ``latent_knn`` measures against (a seeded
sample of at most ``knn_bank`` codes) and, for a score of several parts, the
:class:`~reconad.score.Calibration` that standardises each part on the normal validation
images. :meth:`Scorer.to_header` / :meth:`Scorer.tensors` write that state into a detector
file, :meth:`Scorer.from_header` checks and reads it back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from reconad.config import ScoreConfig
from reconad.data import float_batch
from reconad.errors import ReconadError
from reconad.models import Autoencoder
from reconad.score._color import ColorStats
from reconad.score._maps import MapNormalizer, reduce_map
from reconad.score._parts import Calibration, score_parts
from reconad.score._passes import images_per_pass, latent_codes, map_images

BANK_KEY = "reconad.knn_bank"  # the latent_knn training codes, beside the model weights
# score.standardize: per-pixel-position mean and std of the normal validation maps, (H, W),
# one pair per map component (``reconad.map_mean.ssim``, ...).
MAP_PREFIX = "reconad.map_"
# score.map with color: the fitted colour statistics (reconad.score.ColorStats), (D,)
# mean and (D, D) precision, D = 2 * channels * len(score.color_sigmas).
COLOR_KEYS = {"mean": f"{MAP_PREFIX}colorstats.mean",
              "precision": f"{MAP_PREFIX}colorstats.precision"}


def map_components(config: ScoreConfig) -> list[str]:
    """The maps ``score.map`` is made of: ``ssim+squared`` -> ``[ssim, squared]``; the
    ``score.kind`` error map (``loss:KIND``) for ``none``."""
    return [f"loss:{config.kind}"] if config.map == "none" else config.map.split("+")


def map_tensor_keys(config: ScoreConfig) -> set[str]:
    """Names of the standardisation tensors a score saves (none unless it standardises)."""
    if config.map == "none" or not config.standardize:
        return set()
    return {f"{MAP_PREFIX}{stat}.{kind}" for kind in map_components(config)
            for stat in ("mean", "std")}


class Scorer:
    """Turns a trained autoencoder's view of images into one anomaly score per image.

    Args:
        config: which parts make the score and how (:class:`ScoreConfig`).
        bank: (M, D) float32 training codes for ``latent_knn`` (set by :meth:`fit`).
        calibration: per-part standardisation when the score has several parts.
    """

    def __init__(self, config: ScoreConfig, bank: torch.Tensor | None = None,
                 calibration: Calibration | None = None,
                 normalizers: dict[str, MapNormalizer] | None = None,
                 color_stats: ColorStats | None = None) -> None:
        self.config = config
        self.bank = bank
        self.calibration = calibration
        self.normalizers = normalizers
        self.color_stats = color_stats

    @property
    def calibrated(self) -> bool:
        """Whether the score sums standardised parts (several parts) or is one raw part."""
        return len(self.config.parts) > 1

    def check_model(self, model: Autoencoder) -> None:
        """Refuse a model this score cannot use (``class_energy`` needs a class head)."""
        if "class_energy" in self.config.parts and not model.n_classes:
            raise ReconadError("score.parts class_energy needs model.class_head=true")

    def fit(self, model: Autoencoder, train_images: np.ndarray, val_images: np.ndarray,
            seed: int = 0) -> Scorer:
        """Keep the bank of training codes (``latent_knn``) and calibrate on ``val_images``
        (normal images, (N, C, H, W)); returns self."""
        self._fit_state(model, train_images, val_images, seed)
        return self

    def fit_and_score(self, model: Autoencoder, train_images: np.ndarray,
                      val_images: np.ndarray, seed: int = 0) -> np.ndarray:
        """:meth:`fit`, then the scores of ``val_images`` (N,) float64: the same as ``fit``
        followed by :meth:`score`, with the validation images scored once, not twice, when
        the calibration needs their parts."""
        parts = self._fit_state(model, train_images, val_images, seed)
        return self.score(model, val_images) if parts is None else self._combine(parts)

    def _fit_state(self, model: Autoencoder, train_images: np.ndarray,
                   val_images: np.ndarray, seed: int) -> dict[str, np.ndarray] | None:
        """Fit bank, colour statistics, calibration and map normalisers; the validation
        images' parts when the calibration needed them, else None."""
        self.check_model(model)
        self.bank = None
        if "latent_knn" in self.config.parts:
            keep = train_images
            if len(keep) > self.config.knn_bank:
                pick = np.random.default_rng(seed).choice(len(keep), self.config.knn_bank,
                                                          replace=False)
                keep = keep[np.sort(pick)]
            self.bank = latent_codes(model, keep)
        self.color_stats = None
        if "color" in map_components(self.config):  # on all the training images, in passes
            step = images_per_pass(train_images.shape[1:])
            self.color_stats = ColorStats(self.config.color_sigmas).fit(
                torch.from_numpy(float_batch(np.asarray(train_images[i:i + step])))
                for i in range(0, len(train_images), step))
        self.calibration, parts = None, None
        if self.calibrated:
            parts = self.parts(model, val_images)
            self.calibration = Calibration.fit(parts)
        self.normalizers = None
        if map_tensor_keys(self.config):
            self.normalizers = {kind: MapNormalizer().fit(maps)
                                for kind, maps in self._raw_maps(model, val_images).items()}
        return parts

    def _raw_maps(self, model: Autoencoder, x: np.ndarray) -> dict[str, torch.Tensor]:
        cfg = self.config
        return map_images(model, x, map_components(cfg), cfg.ssim_window, cfg.smooth_sigma,
                          self.color_stats)

    def maps(self, model: Autoencoder, x: np.ndarray) -> np.ndarray:
        """Anomaly maps of ``x`` (N, C, H, W): (N, H, W) float32, higher = more anomalous.

        ``score.map`` smoothed by ``score.smooth_sigma`` and standardised per position when
        ``score.standardize`` (a combined map such as ``ssim+squared`` is the mean of its
        standardised components); with ``score.map=none`` the per-pixel ``score.kind`` error.
        """
        raw = self._raw_maps(model, x)
        if self.normalizers is not None:
            raw = {kind: self.normalizers[kind].transform(m) for kind, m in raw.items()}
        parts = list(raw.values())
        return (parts[0] if len(parts) == 1 else torch.stack(parts).mean(dim=0)).numpy()

    def parts(self, model: Autoencoder, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's raw score of ``x`` (N, C, H, W): ``{part: (N,) float64}``."""
        cfg = self.config
        if cfg.map != "none":  # the config allows no other part beside a map
            # one scoring pass of maps at a time, reduced at once: no (N, H, W) stack is held
            parts = [self._map_parts(self.maps(model, x[part]))["recon"]
                     for part in _pass_slices(len(x), images_per_pass(x.shape[1:]))]
            return {"recon": np.concatenate(parts) if parts else np.empty(0)}
        return score_parts(model, x, cfg.parts, cfg.kind, self.bank, cfg.knn_k, cfg.complexity,
                           (cfg.tta_shift, cfg.tta_rotation, cfg.tta_zoom))

    def _map_parts(self, maps: np.ndarray) -> dict[str, np.ndarray]:
        cfg = self.config
        reduced = reduce_map(torch.from_numpy(maps), cfg.reduction, cfg.topk, cfg.box)
        return {"recon": reduced.double().numpy()}

    def score(self, model: Autoencoder, x: np.ndarray) -> np.ndarray:
        """Anomaly score of ``x`` (N, C, H, W): (N,) float64, higher = more anomalous."""
        return self._combine(self.parts(model, x))

    def maps_and_scores(self, model: Autoencoder,
                        x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`maps` and :meth:`score` of ``x``; with a map score (``score.map``) the score
        is the map's reduction, so the model runs once for both."""
        maps = self.maps(model, x)
        if self.config.map == "none":
            return maps, self.score(model, x)
        return maps, self._combine(self._map_parts(maps))

    def _combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        if self.calibration is None:
            return next(iter(parts.values()))
        return self.calibration.combine(parts)

    # ------------------------------------------------------------------ persistence

    def to_header(self) -> dict:
        """The JSON-able settings and calibration (``score``, ``calibration`` keys)."""
        cal = self.calibration
        return {"score": self.config.model_dump(mode="json"),
                "calibration": None if cal is None else {"mean": cal.mean, "std": cal.std}}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to save beside the weights: the kNN bank and the map standardisation,
        if any."""
        out = {} if self.bank is None else {BANK_KEY: self.bank.contiguous()}
        for kind, normalizer in (self.normalizers or {}).items():
            state = normalizer.state_dict()
            out.update({f"{MAP_PREFIX}{stat}.{kind}": state[stat] for stat in ("mean", "std")})
        if self.color_stats is not None:
            state = self.color_stats.state_dict()
            out.update({key: state[stat] for stat, key in COLOR_KEYS.items()})
        return out

    @classmethod
    def from_header(cls, config: ScoreConfig, calibration: Any, tensors: dict[str, torch.Tensor],
                    model: Autoencoder, image_shape: tuple[int, int, int] | None = None
                    ) -> Scorer:
        """A scorer from a detector file's ``score`` config, ``calibration`` entry and its
        tensors (the bank and map statistics are taken out of ``tensors``), checked against
        ``model`` and the scored images' ``image_shape`` (default: the model's input).

        Raises:
            ReconadError: one line naming the inconsistent entry (the caller adds the file).
        """
        scorer = cls(config)
        scorer.check_model(model)
        bank = tensors.pop(BANK_KEY, None)
        if "latent_knn" in config.parts:
            width = math.prod(model.code_shape)
            if bank is None:
                raise ReconadError("it has a latent_knn score without its training codes")
            if (bank.dtype != torch.float32 or bank.dim() != 2 or bank.shape[0] < 1
                    or bank.shape[1] != width):
                raise ReconadError(
                    f"its latent_knn bank is {bank.dtype} {tuple(bank.shape)}, the model's "
                    f"codes are float32 (M, {width})")
            if not torch.isfinite(bank).all():
                raise ReconadError("its latent_knn bank holds NaN or infinite codes")
            scorer.bank = bank
        elif bank is not None:
            raise ReconadError("it holds a latent_knn bank but its score has no latent_knn part")
        if scorer.calibrated:
            scorer.calibration = _calibration(calibration, config.parts)
        shape = image_shape or model.input_shape
        scorer.color_stats = _color_stats(tensors, config, shape[0])
        scorer.normalizers = _normalizers(tensors, config, shape)
        return scorer


def _pass_slices(n: int, size: int) -> list[slice]:
    """``range(n)`` in slices of ``size`` (whole scoring passes: the maps are those of one call
    on all ``n``), a lone last image joined to the slice before it: torch reduces a one-row
    batch across threads, in another order than the same row among others."""
    starts = list(range(0, n, size))
    if not starts:
        return []
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [n], strict=True)]


def _normalizers(tensors: dict[str, torch.Tensor], config: ScoreConfig,
                 image_shape: tuple[int, ...]) -> dict[str, MapNormalizer] | None:
    """The map standardisation taken out of ``tensors``: float32 (H, W) finite means and
    positive finite stds for each map component, present exactly when the score
    standardises a map."""
    found = {key: tensors.pop(key) for key in list(tensors) if key.startswith(MAP_PREFIX)}
    wanted = map_tensor_keys(config)
    if extra := sorted(set(found) - wanted):
        raise ReconadError(f"it holds map statistics {extra[0]} its score does not use")
    if not wanted:
        return None
    size = tuple(image_shape[1:])
    for key in sorted(wanted):
        t = found.get(key)
        if t is None or t.dtype != torch.float32 or tuple(t.shape) != size:
            got = "missing" if t is None else f"{t.dtype} {tuple(t.shape)}"
            raise ReconadError(f"its {key} is {got}, the images need float32 {size}")
        if not torch.isfinite(t).all():
            raise ReconadError(f"its {key} holds NaN or infinite values")
        if key.startswith(f"{MAP_PREFIX}std.") and not (t > 0).all():
            raise ReconadError(f"its {key} has values <= 0")
    return {kind: MapNormalizer.from_state_dict({
        stat: found[f"{MAP_PREFIX}{stat}.{kind}"] for stat in ("mean", "std")})
        for kind in map_components(config)}


def _color_stats(tensors: dict[str, torch.Tensor], config: ScoreConfig,
                 channels: int) -> ColorStats | None:
    """The colour statistics taken out of ``tensors``: a float32 finite (D,) mean and (D, D)
    precision, present exactly when the score has a color map."""
    found = {stat: tensors.pop(key) for stat, key in COLOR_KEYS.items() if key in tensors}
    if "color" not in map_components(config):
        if found:
            raise ReconadError("it holds colour statistics its score does not use")
        return None
    d = 2 * channels * len(config.color_sigmas)
    for stat, shape in (("mean", (d,)), ("precision", (d, d))):
        t = found.get(stat)
        if t is None or t.dtype != torch.float32 or tuple(t.shape) != shape:
            got = "missing" if t is None else f"{t.dtype} {tuple(t.shape)}"
            raise ReconadError(f"its {COLOR_KEYS[stat]} is {got}, the color map needs "
                               f"float32 {shape}")
        if not torch.isfinite(t).all():
            raise ReconadError(f"its {COLOR_KEYS[stat]} holds NaN or infinite values")
    return ColorStats.from_state_dict(config.color_sigmas, found)


def _calibration(entry: Any, parts: list[str]) -> Calibration:
    """A :class:`Calibration` from a header entry: a finite mean and positive std per part."""
    ok = isinstance(entry, dict) and set(entry) == {"mean", "std"}
    values: dict[str, dict[str, float]] = {}
    for key in ("mean", "std") if ok else ():
        table = entry[key]
        if not isinstance(table, dict) or set(table) != set(parts):
            ok = False
            break
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in table.values()):
            ok = False
            break
        values[key] = {p: float(table[p]) for p in parts}
    if not ok or min(values["std"].values()) <= 0:
        raise ReconadError(
            f"its calibration is not a finite mean and positive std for each of {parts}")
    return Calibration(values["mean"], values["std"])
