"""The estimator users fit, score with, save and load (the scikit-learn contract).

>>> det = Detector(model={"kind": "conv"}, train={"epochs": 5}).fit(normal_images)
>>> det.score_samples(new_images)   # higher = more anomalous
>>> det.predict(new_images)         # 1 = anomaly (score > threshold_), 0 = normal
>>> det.save("detector.safetensors"); Detector.load("detector.safetensors").predict(new_images)

Saved detectors are one safetensors file: the weights plus a JSON header holding the
architecture, preprocessing, score kind and threshold. Loading never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconad.config import LossConfig, ModelConfig, ScoreConfig, TrainConfig
from reconad.errors import ReconadError
from reconad.models import build_model
from reconad.scoring import error_maps, reconstruct, score_images
from reconad.train import History, fit_model

FORMAT = "reconad-detector"
FORMAT_VERSION = 1


def as_images(x: Any, what: str = "images") -> np.ndarray:
    """Validate and convert images to float32 (N, C, H, W) in [0, 1].

    Accepts (N, H, W) (one channel added) or (N, C, H, W); uint8 is scaled by 1/255.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise ReconadError(
            f"{what} must be a non-empty array of shape (N, H, W) or (N, C, H, W); got shape "
            f"{x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ReconadError(f"{what} have dtype {x.dtype}; give numbers (uint8 or floats in [0, 1])")
    x = x.astype(np.float32)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ReconadError(f"{what} contain {bad} NaN or infinite pixels; clean or drop them")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ReconadError(
            f"{what} have pixels outside [0, 1] (min {lo:g}, max {hi:g}); scale them to [0, 1] "
            "(e.g. divide 8-bit images by 255)")
    return x


def _section(value: Any, cls: type, name: str):
    """A config section from an instance, a dict or None (defaults), with errors naming it."""
    from pydantic import ValidationError

    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ReconadError(f"invalid {name}.{key}: {first['msg']}") from None


class Detector:
    """Autoencoder anomaly detector: fit on normal images, flag what it reconstructs badly.

    Args:
        model: architecture (:class:`ModelConfig` or dict). Input shape comes from the data.
        loss: training loss (:class:`LossConfig` or dict).
        train: optimisation settings (:class:`TrainConfig` or dict).
        score: per-image score kind: ``mse``, ``l1``, ``bce`` or ``ssim``.
        quantile: the default threshold is this quantile of the validation scores.
        val_fraction: fraction of ``X`` held out for early stopping when ``fit`` gets no X_val.
        seed: seeds weight init, batch order and augmentation.
        progress: show a progress bar while training.

    Fitted attributes: ``model_``, ``input_shape_``, ``history_``, ``threshold_``,
    ``threshold_method_``, ``preprocessing_`` (how raw images were resized/greyed before
    training; ``reconad score`` applies the same). Pixels are float32 in [0, 1]; uint8 is
    divided by 255.
    """

    def __init__(
        self,
        model: ModelConfig | dict | None = None,
        loss: LossConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        score: str = "mse",
        quantile: float = 0.99,
        val_fraction: float = 0.1,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.loss = loss
        self.train = train
        self.score = score
        self.quantile = quantile
        self.val_fraction = val_fraction
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, X_val: Any | None = None) -> Detector:
        """Train on normal images ``X``; set ``threshold_`` to a quantile of validation scores.

        Returns self. ``X_val`` (normal images) drives early stopping; without it a seeded
        ``val_fraction`` of ``X`` is held out.
        """
        model_cfg = _section(self.model, ModelConfig, "model")
        loss_cfg = _section(self.loss, LossConfig, "loss")
        train_cfg = _section(self.train, TrainConfig, "train")
        score_kind = _section({"kind": self.score}, ScoreConfig, "score").kind
        if not 0.0 < self.quantile < 1.0:
            raise ReconadError(f"quantile must be between 0 and 1 (exclusive); got {self.quantile}")
        x = as_images(X, "training images")
        if X_val is None:
            x, xv = self._hold_out(x)
        else:
            xv = as_images(X_val, "validation images")
            if xv.shape[1:] != x.shape[1:]:
                raise ReconadError(
                    f"validation images are {xv.shape[1:]} but training images are "
                    f"{x.shape[1:]}; give both the same (C, H, W)")
        torch.manual_seed(self.seed)  # weight initialisation
        network = build_model(model_cfg, tuple(x.shape[1:]))
        self.history_: History = fit_model(
            network, x, xv, loss_cfg, train_cfg, self.seed, self.progress)
        self.model_ = network
        self.input_shape_ = tuple(int(s) for s in x.shape[1:])
        self.config_ = {"model": model_cfg.model_dump(mode="json"),
                        "loss": loss_cfg.model_dump(mode="json")}
        self.score_kind_ = score_kind
        reference = xv if xv is not None and len(xv) else x
        self.val_scores_ = self.score_samples(reference)
        self.threshold_ = float(np.quantile(self.val_scores_, self.quantile))
        self.threshold_method_ = "quantile"
        self.preprocessing_ = {"resize": None, "grayscale": False}
        return self

    def _hold_out(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        n_val = int(round(len(x) * self.val_fraction))
        if n_val == 0 or n_val >= len(x):
            return x, None
        order = np.random.default_rng(self.seed).permutation(len(x))
        return x[order[n_val:]], x[order[:n_val]]

    def set_threshold(self, value: float, method: str = "fixed") -> Detector:
        """Use ``value`` as the threshold (flag = score > value); returns self."""
        self._check_fitted()
        if not np.isfinite(value):
            raise ReconadError(f"threshold must be a finite number; got {value}")
        self.threshold_, self.threshold_method_ = float(value), method
        return self

    # ------------------------------------------------------------------ scoring

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ReconadError("this Detector is not fitted yet; call fit(X) or Detector.load()")

    def _inputs(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = as_images(X)
        if tuple(x.shape[1:]) != self.input_shape_:
            c, h, w = self.input_shape_
            raise ReconadError(
                f"images are {tuple(x.shape[1:])} (C, H, W) but the detector was trained on "
                f"{self.input_shape_}; resize them to {h}x{w} with {c} channel(s) "
                f"(CLI: --resize {h} {w})")
        return x

    def score_samples(self, X: Any) -> np.ndarray:
        """Anomaly score per image, shape (N,): higher = more anomalous."""
        x = self._inputs(X)
        return score_images(self.model_, x, self.score_kind_)

    def predict(self, X: Any) -> np.ndarray:
        """1 for anomalies (score > ``threshold_``), 0 for normal images, shape (N,)."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions of ``X``, shape (N, C, H, W)."""
        x = self._inputs(X)
        return reconstruct(self.model_, x)

    def error_maps(self, X: Any) -> np.ndarray:
        """Per-pixel reconstruction error of ``X``, shape (N, H, W) (higher = worse)."""
        x = self._inputs(X)
        return error_maps(self.model_, x, self.score_kind_)

    # ------------------------------------------------------------------ persistence

    def _header(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "input_shape": list(self.input_shape_), "score": self.score_kind_,
            "threshold": self.threshold_, "threshold_method": self.threshold_method_,
            "preprocessing": self.preprocessing_,
            **self.config_,
        }

    def save(self, path: str | Path) -> Path:
        """Write the detector to one ``.safetensors`` file atomically; returns the path."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        tensors = {k: v.detach().contiguous() for k, v in self.model_.state_dict().items()}
        metadata = {"reconad": json.dumps(self._header()), "sha256": _digest(tensors)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Load a detector written by :meth:`save`; damaged or edited files are rejected."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ReconadError(f"detector file {path} does not exist; check the path")
        damaged = (f"detector file {path} is damaged or was edited")
        fix = "re-create it with `reconad run` or Detector.save()"
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            header = json.loads(metadata["reconad"])
            expected = metadata["sha256"]
        except Exception as exc:  # safetensors/json raise many types for a broken file
            raise ReconadError(f"{damaged} ({type(exc).__name__}); {fix}") from None
        if header.get("format") != FORMAT:
            raise ReconadError(f"{path} is not a reconad detector file; {fix}")
        if header.get("format_version") != FORMAT_VERSION:
            raise ReconadError(
                f"{path} has detector format version {header.get('format_version')}, this "
                f"reconad reads version {FORMAT_VERSION}; {fix}")
        if _digest(tensors) != expected:
            raise ReconadError(f"{damaged} (weights do not match their checksum); {fix}")
        try:
            det = cls(model=header["model"], loss=header["loss"], score=header["score"])
            model_cfg = _section(header["model"], ModelConfig, "model")
            shape = tuple(int(s) for s in header["input_shape"])
            network = build_model(model_cfg, shape)
            network.load_state_dict(tensors)
            threshold = float(header["threshold"])
        except ReconadError:
            raise
        except Exception as exc:
            raise ReconadError(f"{damaged} (header: {type(exc).__name__}); {fix}") from None
        network.eval()
        det.model_, det.input_shape_ = network, shape
        det.config_ = {"model": header["model"], "loss": header["loss"]}
        det.score_kind_ = _section({"kind": header["score"]}, ScoreConfig, "score").kind
        det.threshold_, det.threshold_method_ = threshold, header.get("threshold_method", "fixed")
        det.preprocessing_ = header.get("preprocessing") or {"resize": None, "grayscale": False}
        return det


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and raw bytes of the tensors, in name order (detects edited weights)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        flat = tensors[key].detach().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()
