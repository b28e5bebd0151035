"""The estimator users fit, score with, save and load (the scikit-learn contract).

>>> import tempfile
>>> rng = np.random.default_rng(0)
>>> normal_images = rng.uniform(0, 0.2, (64, 1, 8, 8)).astype(np.float32)  # (N, C, H, W)
>>> det = Detector(model={"kind": "dense", "hidden": [16], "latent": 4},
...                train={"epochs": 10, "batch_size": 16, "lr": 0.01}).fit(normal_images)
>>> new_images = np.concatenate([rng.uniform(0, 0.2, (2, 1, 8, 8)),
...                              rng.uniform(0.8, 1, (2, 1, 8, 8))]).astype(np.float32)
>>> det.anomaly_score(new_images).shape   # (N,), higher = more anomalous
(4,)
>>> det.flag(new_images)                  # 1 = anomaly (score > threshold_), 0 = normal
array([0, 0, 1, 1])
>>> path = det.save(f"{tempfile.mkdtemp()}/detector.safetensors")
>>> Detector.load(path).flag(new_images).tolist()
[0, 0, 1, 1]

Saved detectors are one safetensors file: the weights (plus the training codes a
``latent_knn`` score measures against) and a JSON header holding the architecture,
preprocessing, score settings and calibration, and threshold. Loading never unpickles code.
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
from reconad.scoring import (
    Calibration,
    error_maps,
    latent_codes,
    reconstruct,
    score_images,
    score_parts,
)
from reconad.train import History, fit_model

FORMAT = "reconad-detector"
FORMAT_VERSION = 3
# version 1: no score parts, "score" is the kind string; version 2: no score.complexity
READABLE_VERSIONS = (1, 2, 3)
BANK_KEY = "reconad.knn_bank"  # the latent_knn training codes, beside the model weights


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
        score: the score: a kind (``mse``, ``l1``, ``bce``, ``ssim``) or a
            :class:`ScoreConfig` / dict with ``parts`` (reconstruction, latent kNN, class
            energy) to combine.
        quantile: the default threshold is this quantile of the validation scores.
        val_fraction: fraction of ``X`` held out for early stopping when ``fit`` gets no X_val.
        seed: seeds weight init, batch order and augmentation.
        progress: show a progress bar while training.

    Fitted attributes: ``model_``, ``input_shape_``, ``history_``, ``threshold_``,
    ``classes_`` (the normal classes a class head learnt, else empty),
    ``threshold_method_``, ``preprocessing_`` (how raw images were resized/greyed before
    training; ``reconad score`` applies the same). Pixels are float32 in [0, 1]; uint8 is
    divided by 255.
    """

    def __init__(
        self,
        model: ModelConfig | dict | None = None,
        loss: LossConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        score: str | ScoreConfig | dict = "mse",
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

    def fit(self, X: Any, X_val: Any | None = None, y: Any | None = None,
            checkpoint: str | Path | None = None) -> Detector:
        """Train on normal images ``X``; set ``threshold_`` to a quantile of validation scores.

        Returns self. ``X_val`` (normal images) drives early stopping; without it a seeded
        ``val_fraction`` of ``X`` is held out. ``y`` (N,) are the normal images' own class
        labels, needed only by a model with ``class_head``. ``checkpoint``: a file rewritten
        after every epoch; an existing one resumes training (see :func:`fit_model`).
        """
        model_cfg = _section(self.model, ModelConfig, "model")
        loss_cfg = _section(self.loss, LossConfig, "loss")
        train_cfg = _section(self.train, TrainConfig, "train")
        score_cfg = _score_config(self.score)
        if "class_energy" in score_cfg.parts and not model_cfg.class_head:
            raise ReconadError("score.parts class_energy needs model.class_head=true")
        if not 0.0 < self.quantile < 1.0:
            raise ReconadError(f"quantile must be between 0 and 1 (exclusive); got {self.quantile}")
        x = as_images(X, "training images")
        labels = _class_indices(y, len(x)) if model_cfg.class_head else None
        classes, y_idx = labels if labels is not None else ([], None)
        if X_val is None:
            x, xv, y_idx = self._hold_out(x, y_idx)
        else:
            xv = as_images(X_val, "validation images")
            if xv.shape[1:] != x.shape[1:]:
                raise ReconadError(
                    f"validation images are {xv.shape[1:]} but training images are "
                    f"{x.shape[1:]}; give both the same (C, H, W)")
        torch.manual_seed(self.seed)  # weight initialisation
        network = build_model(model_cfg, tuple(x.shape[1:]), len(classes))
        self.history_: History = fit_model(
            network, x, xv, loss_cfg, train_cfg, self.seed, self.progress, y_idx, checkpoint)
        self.model_ = network
        self.input_shape_ = tuple(int(s) for s in x.shape[1:])
        self.config_ = {"model": model_cfg.model_dump(mode="json"),
                        "loss": loss_cfg.model_dump(mode="json")}
        self.classes_ = classes
        self.score_config_ = score_cfg
        self.score_kind_ = score_cfg.kind
        self.knn_bank_ = None
        if "latent_knn" in score_cfg.parts:
            keep = x
            if len(x) > score_cfg.knn_bank:
                pick = np.random.default_rng(self.seed).choice(len(x), score_cfg.knn_bank,
                                                               replace=False)
                keep = x[np.sort(pick)]
            self.knn_bank_ = latent_codes(network, keep)
        reference = xv if xv is not None and len(xv) else x
        self.calibration_ = None
        if len(score_cfg.parts) > 1:
            self.calibration_ = Calibration.fit(self._parts(reference))
        self.val_scores_ = self.score_samples(reference)
        self.threshold_ = float(np.quantile(self.val_scores_, self.quantile))
        self.threshold_method_ = "quantile"
        self.preprocessing_ = {"resize": None, "grayscale": False}
        return self

    def _hold_out(self, x: np.ndarray, y: np.ndarray | None):
        """(train images, validation images or None, train labels or None)."""
        n_val = int(round(len(x) * self.val_fraction))
        if n_val == 0 or n_val >= len(x):
            return x, None, y
        order = np.random.default_rng(self.seed).permutation(len(x))
        kept = order[n_val:]
        return x[kept], x[order[:n_val]], (None if y is None else y[kept])

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

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Anomaly score per image, shape (N,): higher = more anomalous."""
        return self.score_samples(X)

    def flag(self, X: Any) -> np.ndarray:
        """1 for anomalies (anomaly score > ``threshold_``), 0 for normal images, shape (N,)."""
        return (self.anomaly_score(X) > self.threshold_).astype(np.int64)

    def score_samples(self, X: Any) -> np.ndarray:
        """Anomaly score per image, shape (N,): higher = more anomalous."""
        x = self._inputs(X)
        if self.score_config_.parts == ["recon"]:
            return score_images(self.model_, x, self.score_kind_,
                                self.score_config_.complexity)
        parts = self._parts(x)
        if self.calibration_ is None:
            return next(iter(parts.values()))
        return self.calibration_.combine(parts)

    def score_parts(self, X: Any) -> dict[str, np.ndarray]:
        """Each part of the score, raw (``{part: (N,)}``), e.g. to see which part flagged."""
        return self._parts(self._inputs(X))

    def _parts(self, x: np.ndarray) -> dict[str, np.ndarray]:
        cfg = self.score_config_
        return score_parts(self.model_, x, cfg.parts, cfg.kind, self.knn_bank_, cfg.knn_k,
                           cfg.complexity)

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
            "input_shape": list(self.input_shape_),
            "score": self.score_config_.model_dump(mode="json"), "classes": self.classes_,
            "calibration": None if self.calibration_ is None else {
                "mean": self.calibration_.mean, "std": self.calibration_.std},
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
        if self.knn_bank_ is not None:
            tensors[BANK_KEY] = self.knn_bank_.contiguous()
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
        if header.get("format_version") not in READABLE_VERSIONS:
            raise ReconadError(
                f"{path} has detector format version {header.get('format_version')}, this "
                f"reconad reads version {FORMAT_VERSION}; {fix}")
        if _digest(tensors) != expected:
            raise ReconadError(f"{damaged} (weights do not match their checksum); {fix}")
        try:
            det = cls(model=header["model"], loss=header["loss"], score=header["score"])
            model_cfg = _section(header["model"], ModelConfig, "model")
            score_cfg = _score_config(header["score"])
            classes = [int(c) for c in header.get("classes") or []]
            shape = tuple(int(s) for s in header["input_shape"])
            network = build_model(model_cfg, shape, len(classes))
            bank = tensors.pop(BANK_KEY, None)
            if "latent_knn" in score_cfg.parts and bank is None:
                raise ValueError("latent_knn score without its training codes")
            network.load_state_dict(tensors)
            calibration = header.get("calibration")
            if len(score_cfg.parts) > 1:
                calibration = Calibration(
                    {p: float(calibration["mean"][p]) for p in score_cfg.parts},
                    {p: float(calibration["std"][p]) for p in score_cfg.parts})
            threshold = float(header["threshold"])
        except ReconadError:
            raise
        except Exception as exc:
            raise ReconadError(f"{damaged} (header: {type(exc).__name__}); {fix}") from None
        network.eval()
        det.model_, det.input_shape_ = network, shape
        det.config_ = {"model": header["model"], "loss": header["loss"]}
        det.score_config_, det.score_kind_ = score_cfg, score_cfg.kind
        det.classes_, det.knn_bank_ = classes, bank
        det.calibration_ = calibration if len(score_cfg.parts) > 1 else None
        det.threshold_, det.threshold_method_ = threshold, header.get("threshold_method", "fixed")
        det.preprocessing_ = header.get("preprocessing") or {"resize": None, "grayscale": False}
        return det


def _score_config(score: Any) -> ScoreConfig:
    """A :class:`ScoreConfig` from a kind string (the short form), a dict or an instance."""
    return _section({"kind": score} if isinstance(score, str) else score, ScoreConfig, "score")


def _class_indices(y: Any, n: int) -> tuple[list[int], np.ndarray]:
    """(sorted distinct classes, (N,) index of each label in them) for a class head."""
    if y is None:
        raise ReconadError("model.class_head needs the training images' class labels; pass "
                           "fit(X, y=labels) or set model.class_head=false")
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ReconadError(f"class labels must be {n} integers, one per training image; got "
                           f"shape {y.shape} of {y.dtype}")
    classes, index = np.unique(y, return_inverse=True)
    return [int(c) for c in classes], index.astype(np.int64)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and raw bytes of the tensors, in name order (detects edited weights)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        flat = tensors[key].detach().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()
