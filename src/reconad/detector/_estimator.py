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

scikit-learn's own names keep scikit-learn's signs (as in ``IsolationForest``):
``score_samples`` is the *negated* anomaly score (lower = more abnormal),
``decision_function`` is ``score_samples - offset_`` with ``offset_ = -threshold_`` (negative
= outlier) and ``predict`` gives -1 for outliers, +1 for inliers. ``sklearn.base.clone``,
``get_params`` and ``set_params`` work, so scikit-learn's search tools can tune a detector.

A saved detector is one safetensors file (:mod:`reconad.detector`): weights, the scorer's
state (:class:`reconad.score.Scorer`), threshold and preprocessing; it scores and flags new
images with nothing else at hand. Loading never unpickles code.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin

from reconad.config import (
    LossConfig,
    ModelConfig,
    ScoreConfig,
    TrainConfig,
    check_crop,
    check_pixel_settings,
)
from reconad.data import ImageRows, stored_images
from reconad.detector._file import (
    VAL_SCORES_KEY,
    check_preprocessing,
    declared_model,
    read_detector_file,
    take_val_scores,
    take_weights,
    write_detector_file,
)
from reconad.detector._onnx import DEFAULT_OPSET, detector_to_onnx
from reconad.device import model_device, resolve_device
from reconad.errors import ReconadError
from reconad.models import Autoencoder, TiledAutoencoder, build_model
from reconad.score import Scorer, error_maps, reconstruct
from reconad.train import History, fit_model, fit_segmenting
from reconad.transforms import random_crops


def _stored_images(X: Any, what: str) -> np.ndarray | ImageRows:
    """Checked ``(N, C, H, W)`` images kept in their stored dtype (uint8 stays uint8; each
    batch becomes float32 only when it is trained on or scored); streamed rows as they are."""
    if isinstance(X, ImageRows):
        return X
    return stored_images(X, what)


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


class Detector(OutlierMixin, BaseEstimator):
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
        device: where to train and score (``auto``, ``cpu``, ``cuda``, ``mps``); None uses
            ``train.device`` (default ``auto``: cuda, else mps, else cpu). Scores come back as
            NumPy arrays on any device.

    Fitted attributes (the same after :meth:`fit` and after :meth:`load`): ``model_`` (the
    :class:`~reconad.models.Autoencoder`), ``input_shape_`` (the model's input: a crop with
    ``train.crop``), ``image_shape_`` (the images it scores), ``config_`` (model and loss
    sections), ``scorer_`` (:class:`~reconad.score.Scorer`: score settings, kNN bank,
    calibration), ``classes_`` (the normal classes a class head learnt, else empty),
    ``history_``, ``val_scores_`` (anomaly scores of the normal validation images, (N,)),
    ``threshold_``, ``threshold_method_``, ``preprocessing_`` (how raw images were
    resized/greyed before training; ``reconad score`` applies the same). Files of format
    version 3 and older load with ``val_scores_`` and ``history_`` None. Pixels are float32 in
    [0, 1]; uint8 is divided by 255. ``device_`` is the torch device ``model_`` is on.
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
        device: str | None = None,
    ) -> None:
        self.model = model
        self.loss = loss
        self.train = train
        self.score = score
        self.quantile = quantile
        self.val_fraction = val_fraction
        self.seed = seed
        self.progress = progress
        self.device = device

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any | None = None, *, X_val: Any | None = None,
            preprocessing: dict | None = None,
            checkpoint: str | Path | None = None) -> Detector:
        """Train on normal images ``X``; set ``threshold_`` to a quantile of validation scores.

        Args:
            X: normal training images (N, H, W) or (N, C, H, W).
            y: (N,) the normal images' own class labels, needed only by a model with
                ``class_head`` (ignored otherwise).
            X_val: normal validation images for early stopping and calibration; without
                them a seeded ``val_fraction`` of ``X`` is held out.
            preprocessing: how the images were prepared from raw ones,
                ``{"resize": None or [h, w], "grayscale": bool}``; kept so ``reconad score``
                prepares new images alike (default: none).
            checkpoint: a file rewritten after every epoch; an existing one resumes
                training (see :func:`reconad.train.fit_model`).

        Returns:
            self.
        """
        model_cfg = _section(self.model, ModelConfig, "model")
        loss_cfg = _section(self.loss, LossConfig, "loss")
        train_cfg = _section(self.train, TrainConfig, "train")
        if self.device is not None:
            train_cfg = _section({**train_cfg.model_dump(), "device": self.device},
                                 TrainConfig, "train")
        device = resolve_device(train_cfg.device)  # before any work: a one-line error
        scorer = Scorer(_score_config(self.score))
        try:
            check_crop(train_cfg, model_cfg, scorer.config)
        except ValueError as exc:
            raise ReconadError(str(exc)) from None
        if not 0.0 < self.quantile < 1.0:
            raise ReconadError(f"quantile must be between 0 and 1 (exclusive); got {self.quantile}")
        preprocessing = check_preprocessing(preprocessing)
        x = _stored_images(X, "training images")
        if y is not None and np.ndim(y) > 1:
            raise ReconadError("y are class labels, one per image; give validation images as "
                               "fit(X, X_val=images)")
        labels = _class_indices(y, len(x)) if model_cfg.class_head else None
        classes, y_idx = labels if labels is not None else ([], None)
        if X_val is None:
            x, xv, y_idx = self._hold_out(x, y_idx)
        else:
            xv = _stored_images(X_val, "validation images")
            if xv.shape[1:] != x.shape[1:]:
                raise ReconadError(
                    f"validation images are {xv.shape[1:]} but training images are "
                    f"{x.shape[1:]}; give both the same (C, H, W)")
        image_shape = tuple(int(s) for s in x.shape[1:])
        input_shape, xv_fit = image_shape, xv
        check_pixel_settings(loss_cfg, train_cfg, scorer.config, image_shape)
        if train_cfg.crop is not None:
            crop = train_cfg.crop
            input_shape = (image_shape[0], crop, crop)
            if xv is not None and len(xv):  # one fixed seeded crop per validation image
                xv_fit = random_crops(torch.from_numpy(np.ascontiguousarray(xv)), crop,
                                      torch.Generator().manual_seed(self.seed)).numpy()
        torch.manual_seed(self.seed)  # weight initialisation
        network = build_model(model_cfg, input_shape, len(classes))
        scorer.check_model(network)  # before training, not after
        fit = fit_segmenting if model_cfg.kind == "draem" else fit_model
        self.history_: History | None = fit(
            network, x, xv_fit, loss_cfg, train_cfg, self.seed, self.progress, y_idx,
            checkpoint)
        self.model_, self.device_ = network, device
        self.input_shape_ = input_shape
        self.image_shape_ = image_shape
        self._image_model = None
        self.config_ = {"model": model_cfg.model_dump(mode="json"),
                        "loss": loss_cfg.model_dump(mode="json")}
        self.classes_ = classes
        reference = xv if xv is not None and len(xv) else x
        self.scorer_ = scorer
        self.val_scores_: np.ndarray | None = scorer.fit_and_score(
            self._whole_image_model(), x, reference, self.seed)
        self.threshold_ = float(np.quantile(self.val_scores_, self.quantile))
        self.threshold_method_ = "quantile"
        self.preprocessing_ = preprocessing
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
        """Use ``value`` as the threshold (flag = anomaly score > value); returns self."""
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
        x = _stored_images(X, "images")
        if tuple(x.shape[1:]) != self.image_shape_:
            c, h, w = self.image_shape_
            raise ReconadError(
                f"images are {tuple(x.shape[1:])} (C, H, W) but the detector was trained on "
                f"{self.image_shape_}; resize them to {h}x{w} with {c} channel(s) "
                f"(CLI: --resize {h} {w})")
        return x

    def _whole_image_model(self) -> Autoencoder | TiledAutoencoder:
        """The model applied to whole images of ``image_shape_``: the model itself; for a
        model trained on crops (``train.crop``) the same weights rebuilt for the image size
        when it is fully convolutional (conv without bottleneck), else the model applied by
        overlapping tiles (:class:`~reconad.models.TiledAutoencoder`)."""
        if getattr(self, "_image_model", None) is not None:
            return self._image_model
        model = self.model_
        if self.image_shape_ != self.input_shape_:
            cfg = _section(self.config_["model"], ModelConfig, "model")
            if cfg.kind == "draem" or (cfg.kind == "conv" and not cfg.bottleneck):
                whole = build_model(cfg, self.image_shape_, len(self.classes_))
                whole.load_state_dict(self.model_.state_dict())
                model = whole.to(model_device(self.model_)).eval()
            else:
                model = TiledAutoencoder(self.model_).eval()
        self._image_model = model
        return model

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Anomaly score per image, (N,) float64: HIGHER = MORE ANOMALOUS."""
        x = self._inputs(X)
        return self.scorer_.score(self._whole_image_model(), x)

    def flag(self, X: Any) -> np.ndarray:
        """1 for anomalies (anomaly score > ``threshold_``), 0 for normal images, shape (N,)."""
        return (self.anomaly_score(X) > self.threshold_).astype(np.int64)

    def score_parts(self, X: Any) -> dict[str, np.ndarray]:
        """Each part of the anomaly score, raw (``{part: (N,)}``, higher = more anomalous),
        e.g. to see which part flagged an image."""
        x = self._inputs(X)
        return self.scorer_.parts(self._whole_image_model(), x)

    @property
    def offset_(self) -> float:
        """scikit-learn's offset: ``decision_function = score_samples - offset_``;
        ``-threshold_``."""
        return -self.threshold_

    def score_samples(self, X: Any) -> np.ndarray:
        """scikit-learn's sign: the NEGATED anomaly score, (N,): LOWER = MORE ABNORMAL."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``, (N,): negative for outliers (scikit-learn's sign)."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """scikit-learn's labels, (N,): -1 for outliers (anomalies), +1 for inliers."""
        return np.where(self.flag(X) == 1, -1, 1)

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions of ``X``, shape (N, C, H, W)."""
        x = self._inputs(X)
        return reconstruct(self._whole_image_model(), x)

    def error_maps(self, X: Any) -> np.ndarray:
        """Per-pixel reconstruction error of ``X``, shape (N, H, W) (higher = worse)."""
        x = self._inputs(X)
        return error_maps(self._whole_image_model(), x, self.scorer_.config.kind)

    def anomaly_maps(self, X: Any) -> np.ndarray:
        """Where each image of ``X`` looks anomalous: (N, H, W) float32, HIGHER = MORE
        ANOMALOUS. The configured ``score.map`` (smoothed by ``score.smooth_sigma``,
        standardised per pixel position with ``score.standardize``); the image score is its
        ``score.reduction``. With ``score.map=none`` the per-pixel ``score.kind`` error."""
        x = self._inputs(X)
        return self.scorer_.maps(self._whole_image_model(), x)

    def anomaly_maps_and_scores(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`anomaly_maps` and :meth:`anomaly_score` of ``X`` together; with a map score
        (``score.map`` set) the model runs once for both."""
        x = self._inputs(X)
        return self.scorer_.maps_and_scores(self._whole_image_model(), x)

    # ------------------------------------------------------------------ persistence

    def to_onnx(self, path: str | Path, opset: int = DEFAULT_OPSET,
                maps: bool | None = None) -> Path:
        """Write the whole score as one ONNX graph (``pip install "reconad[onnx]"``): input
        ``images`` float32 (N, C, H, W) after this detector's resize/grayscale, outputs
        ``score`` (N,) and, for map detectors or with ``maps``, ``map`` (N, H, W); the
        threshold and preprocessing in its metadata. See
        :func:`reconad.detector.detector_to_onnx`; returns the path."""
        self._check_fitted()
        return detector_to_onnx(self, path, opset=opset, maps=maps)

    def save(self, path: str | Path) -> Path:
        """Write the detector to one ``.safetensors`` file atomically; returns the path."""
        self._check_fitted()
        header = {
            "input_shape": list(self.input_shape_), "image_shape": list(self.image_shape_),
            **self.config_, **self.scorer_.to_header(),
            "classes": self.classes_, "threshold": self.threshold_,
            "threshold_method": self.threshold_method_, "preprocessing": self.preprocessing_,
            "history": None if self.history_ is None else dataclasses.asdict(self.history_),
            "params": {"train": _section(self.train, TrainConfig, "train").model_dump(mode="json"),
                       "quantile": self.quantile, "val_fraction": self.val_fraction,
                       "seed": self.seed},
        }
        weights = {key: value.cpu().contiguous()  # conv weights are kept channels-last
                   for key, value in self.model_.state_dict().items()}
        tensors = {**weights, **self.scorer_.tensors()}
        if self.val_scores_ is not None:
            tensors[VAL_SCORES_KEY] = torch.from_numpy(
                np.ascontiguousarray(self.val_scores_, dtype=np.float64))
        return write_detector_file(path, header, tensors)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Detector:
        """Load a detector written by :meth:`save`. The file is untrusted input: damaged,
        edited or hostile files are refused with one line naming the problem.

        ``device`` is where it scores (``auto``, ``cpu``, ``cuda``, ``mps``; None = auto),
        whatever device it was trained on."""
        target = resolve_device(device)
        header, tensors = read_detector_file(path)
        try:  # every check before the model is built for real
            skeleton = declared_model(header)
            weights = take_weights(skeleton, tensors)
            scorer = Scorer.from_header(header.score, header.calibration, tensors, skeleton,
                                        header.image_shape)
            val_scores = take_val_scores(header, tensors)
            history = _history(header.raw_history)
        except ReconadError as exc:
            raise ReconadError(f"detector file {path} is damaged or was edited ({exc}); "
                               "re-create it with `reconad run` or Detector.save()") from None
        network = build_model(header.model, header.input_shape, len(header.classes))
        network.load_state_dict(weights)
        network.to(target).eval()
        params = {k: v.model_dump(mode="json") if k == "train" else v
                  for k, v in header.params.items()}
        det = cls(model=header.model.model_dump(mode="json"),
                  loss=header.loss.model_dump(mode="json"),
                  score=header.score.model_dump(mode="json"), device=device, **params)
        det.model_, det.input_shape_, det.device_ = network, header.input_shape, target
        det.image_shape_, det._image_model = header.image_shape, None
        det.config_ = {"model": det.model, "loss": det.loss}
        det.scorer_, det.classes_ = scorer, header.classes
        det.history_, det.val_scores_ = history, val_scores
        det.threshold_, det.threshold_method_ = header.threshold, header.threshold_method
        det.preprocessing_ = header.preprocessing
        return det


def _score_config(score: Any) -> ScoreConfig:
    """A :class:`ScoreConfig` from a kind string (the short form), a dict or an instance."""
    return _section({"kind": score} if isinstance(score, str) else score, ScoreConfig, "score")


def _history(raw: Any) -> History | None:
    """A :class:`History` from a header's ``history`` entry (None when the file has none)."""
    if raw is None:
        return None
    fields = {f.name for f in dataclasses.fields(History)}
    ok = (isinstance(raw, dict) and set(raw) == fields and isinstance(raw["rows"], list)
          and all(isinstance(r, dict) and all(_number_or_none(v) for v in r.values())
                  for r in raw["rows"])
          and all(_number_or_none(raw[k]) for k in fields - {"rows"}))
    if not ok:
        raise ReconadError("its training history is not a list of rows of numbers")
    return History(**raw)


def _number_or_none(value: Any) -> bool:
    """None, a finite number, a flag or a short label: what a history row may hold."""
    if isinstance(value, str):
        return len(value) <= 100
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


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
