"""The detector file: one safetensors file, treated as untrusted input when read.

It holds the model weights, the scorer's tensors (the ``latent_knn`` bank), the normal
validation scores (``reconad.val_scores``, (N,) float64) and, in the safetensors metadata, a
JSON header (architecture, loss, score settings and calibration, classes, threshold,
preprocessing) plus a sha256 of the tensors. Loading never unpickles code.

Reading checks, in order and before building anything: the header's size (its 8-byte length
prefix, at most :data:`MAX_HEADER_BYTES`), the format and version, the checksum, every header
field (:func:`check_header`), then the declared architecture against the tensors, built on
torch's ``meta`` device so a hostile header cannot make us allocate a huge model
(:func:`declared_model`, :func:`take_weights`). Each failure is one :class:`ReconadError`
line.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from reconad.config import (
    MAX_TTA_SHIFT,
    LossConfig,
    ModelConfig,
    ScoreConfig,
    ThresholdMethod,
    TrainConfig,
    check_crop,
)
from reconad.errors import ReconadError
from reconad.files import atomic_file
from reconad.models import Autoencoder, build_model
from reconad.score import BANK_KEY, MAP_PREFIX

FORMAT = "reconad-detector"
FORMAT_VERSION = 6
# version 1: "score" is the kind string, no parts; 2: no score.complexity;
# 3: no reconad.val_scores tensor; 4: no image_shape (= input_shape), no score maps;
# 5: score.tta_shift in pixels (now a fraction of the image side; read as the same move).
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
VAL_SCORES_KEY = "reconad.val_scores"
MAX_HEADER_BYTES = 16 * 2**20
MAX_CHANNELS, MAX_SIDE, MAX_PIXELS = 64, 16384, 2**26  # a sane image: (C, H, W) bounds
FIX = "re-create it with `reconad run` or Detector.save()"


@dataclass
class Header:
    """A checked detector header."""

    version: int
    input_shape: tuple[int, int, int]
    image_shape: tuple[int, int, int]  # the scored images: input_shape, or larger (crops)
    model: ModelConfig
    loss: LossConfig
    score: ScoreConfig
    calibration: Any  # checked by Scorer.from_header, which knows the parts
    classes: list[int]
    threshold: float
    threshold_method: str
    preprocessing: dict
    raw_history: Any  # the training history's rows, checked by the detector (None before v4)
    params: dict  # the other constructor arguments: train, quantile, val_fraction, seed


def write_detector_file(path: str | Path, header: dict,
                        tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` and the JSON ``header`` to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    metadata = {"reconad": json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                       **header}),
                "sha256": digest(tensors)}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_detector_file(path: str | Path) -> tuple[Header, dict[str, torch.Tensor]]:
    """The checked header and the tensors of the detector file at ``path``.

    Raises:
        ReconadError: if the file is missing, too large a header, not a detector file, of an
            unknown version, fails its checksum or has an invalid header field.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ReconadError(f"detector file {path} does not exist; check the path")
    damaged = f"detector file {path} is damaged or was edited"
    with path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) == 8:
        header_bytes = struct.unpack("<Q", prefix)[0]
        if header_bytes > MAX_HEADER_BYTES:
            raise ReconadError(
                f"{damaged} (its header claims {header_bytes} bytes, more than the "
                f"{MAX_HEADER_BYTES} a detector needs); {FIX}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        raw = json.loads(metadata["reconad"])
        expected = metadata["sha256"]
    except Exception as exc:  # safetensors/json raise many types for a broken file
        raise ReconadError(f"{damaged} ({type(exc).__name__}); {FIX}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ReconadError(f"{path} is not a reconad detector file; {FIX}")
    version = raw.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ReconadError(
            f"{path} has detector format version {version!r}, this reconad reads versions "
            f"{READABLE_VERSIONS[0]} to {FORMAT_VERSION}; {FIX}")
    if digest(tensors) != expected:
        raise ReconadError(f"{damaged} (weights do not match their checksum); {FIX}")
    if version < 6:
        raw = _shift_as_fraction(raw, path)
    try:
        return check_header(raw, len(tensors)), tensors
    except ReconadError as exc:
        raise ReconadError(f"{damaged} ({exc}); {FIX}") from None


def _shift_as_fraction(raw: dict, path: Path) -> dict:
    """A header before version 6 gives ``score.tta_shift`` in pixels: the same move as a
    fraction of its images' shorter side (which :func:`reconad.transforms.tta_pixels` turns
    back into those pixels exactly), so an old detector scores as it did. Anything but a
    whole number of pixels is left for :func:`check_header` to refuse.

    Raises:
        ReconadError: for a move of more than :data:`MAX_TTA_SHIFT` of the side, which this
            version refuses.
    """
    score = raw.get("score")
    pixels = score.get("tta_shift") if isinstance(score, dict) else None
    if not _is_int(pixels) or pixels <= 0:
        return raw
    try:
        shape = _image_shape(raw, "image_shape" if "image_shape" in raw else "input_shape")
    except ReconadError:
        return raw
    side = min(shape[1:])
    if pixels > MAX_TTA_SHIFT * side:
        raise ReconadError(
            f"{path} moves its test-time copies {pixels} pixels, more than {MAX_TTA_SHIFT:g} "
            f"of its {shape[1]}x{shape[2]} images' side, which this reconad refuses; {FIX} "
            "and a smaller score.tta_shift")
    return {**raw, "score": {**score, "tta_shift": pixels / side}}


def check_header(raw: dict, n_tensors: int) -> Header:
    """Validate every field of a raw header; ``n_tensors`` bounds the number of layers.

    Raises:
        ReconadError: naming the first invalid field.
    """
    from pydantic import ValidationError

    def section(key: str, cls: type):
        try:
            return cls.model_validate(raw[key])
        except (KeyError, ValidationError, TypeError):
            raise ReconadError(f"header field {key} is missing or invalid") from None

    shape = _image_shape(raw, "input_shape")
    image_shape = _image_shape(raw, "image_shape") if "image_shape" in raw else shape
    if image_shape[0] != shape[0] or image_shape[1] < shape[1] or image_shape[2] < shape[2]:
        raise ReconadError(f"header field image_shape {list(image_shape)} is not input_shape "
                           f"{list(shape)} or larger images of its channels")
    model = section("model", ModelConfig)
    if max(len(model.hidden), len(model.channels)) > n_tensors:
        raise ReconadError("header field model declares more layers than the file has tensors")
    score = raw.get("score")
    if isinstance(score, str):  # version 1: the kind alone
        raw = {**raw, "score": {"kind": score}}
    classes = raw.get("classes") or []
    if (not isinstance(classes, list) or not all(_is_int(c) for c in classes)
            or classes != sorted(set(classes))):
        raise ReconadError("header field classes is not a sorted list of distinct integers")
    if bool(classes) != model.class_head:
        raise ReconadError(f"header field classes {classes} does not fit model.class_head="
                           f"{str(model.class_head).lower()}")
    threshold = raw.get("threshold")
    if not _is_number(threshold) or not math.isfinite(threshold):
        raise ReconadError(f"header field threshold {threshold!r} is not a finite number")
    method = raw.get("threshold_method", "fixed")
    if method not in get_args(ThresholdMethod):
        raise ReconadError(f"header field threshold_method {method!r} is not a known method")
    score_cfg, params = section("score", ScoreConfig), _check_params(raw.get("params"))
    _check_crop(params, model, score_cfg, shape, image_shape)
    return Header(
        version=raw["format_version"], input_shape=shape, image_shape=image_shape,
        model=model, loss=section("loss", LossConfig), score=score_cfg,
        calibration=raw.get("calibration"), classes=classes, threshold=float(threshold),
        threshold_method=method, preprocessing=check_preprocessing(raw.get("preprocessing")),
        raw_history=raw.get("history"), params=params)


def _check_crop(params: dict, model: ModelConfig, score: ScoreConfig,
                shape: tuple[int, int, int], image_shape: tuple[int, int, int]) -> None:
    """A model trained on crops (``train.crop``) has crop-sized input; only it may score
    larger images, and only with the scores patch training allows."""
    crop = params["train"].crop if params else None
    if crop is None:
        if image_shape != shape:
            raise ReconadError("header field image_shape differs from input_shape without "
                               "params train.crop")
        return
    if shape[1:] != (crop, crop):
        raise ReconadError(f"header field input_shape {list(shape)} is not the train.crop "
                           f"{crop} of its params")
    try:
        check_crop(params["train"], model, score)
    except ValueError as exc:
        raise ReconadError(f"header fields contradict each other: {exc}") from None


def _image_shape(raw: dict, key: str) -> tuple[int, int, int]:
    """A sane (C, H, W) from the header field ``key``."""
    shape = raw.get(key)
    if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(s) for s in shape)
            or min(shape) < 1 or shape[0] > MAX_CHANNELS or max(shape[1:]) > MAX_SIDE
            or math.prod(shape) > MAX_PIXELS):
        raise ReconadError(f"header field {key} {shape!r} is not a sane (C, H, W)")
    return tuple(shape)


def _check_params(value: Any) -> dict:
    """The saved constructor arguments (files before version 4 have none: {})."""
    if value is None:
        return {}
    ok = isinstance(value, dict) and set(value) == {"train", "quantile", "val_fraction", "seed"}
    if ok:
        from pydantic import ValidationError

        try:
            value = {**value, "train": TrainConfig.model_validate(value["train"])}
        except (ValidationError, TypeError):
            ok = False
    if not (ok and _is_number(value["quantile"]) and 0 < value["quantile"] < 1
            and _is_number(value["val_fraction"]) and 0 <= value["val_fraction"] < 1
            and _is_int(value["seed"])):
        raise ReconadError("header field params is not train, quantile, val_fraction and seed")
    return value


def check_preprocessing(value: Any) -> dict:
    """``{"resize": None or [height, width], "grayscale": bool}`` from a header or a caller.

    Raises:
        ReconadError: if it is anything else.
    """
    if value is None:
        return {"resize": None, "grayscale": False}
    resize = value.get("resize") if isinstance(value, dict) else None
    if (not isinstance(value, dict) or set(value) != {"resize", "grayscale"}
            or not isinstance(value["grayscale"], bool)
            or not (resize is None or (isinstance(resize, list | tuple) and len(resize) == 2
                                       and all(_is_int(s) and 1 <= s <= MAX_SIDE
                                               for s in resize)))):
        raise ReconadError(f"preprocessing {value!r} is not {{'resize': None or [height, "
                           "width], 'grayscale': true or false}")
    return {"resize": None if resize is None else [int(s) for s in resize],
            "grayscale": value["grayscale"]}


def declared_model(header: Header) -> Autoencoder:
    """The architecture the header declares, built on the ``meta`` device: shapes only, no
    memory, so a hostile header cannot make us allocate a huge model.

    Raises:
        ReconadError: if the architecture cannot be built.
    """
    try:
        with torch.device("meta"):
            return build_model(header.model, header.input_shape, len(header.classes))
    except ReconadError:
        raise
    except Exception as exc:  # an architecture torch cannot build
        raise ReconadError(f"its model cannot be built ({type(exc).__name__})") from None


def take_weights(skeleton: Autoencoder,
                 tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's weights, taken out of ``tensors``: names, shapes and dtypes must be exactly
    those of ``skeleton`` (:func:`declared_model`); only the scorer's and the validation
    scores' tensors may remain.

    Raises:
        ReconadError: naming the first missing, extra or mis-shaped tensor.
    """
    expected = skeleton.state_dict()
    weights = {k: tensors.pop(k) for k in list(tensors) if k in expected}
    if missing := sorted(set(expected) - set(weights)):
        raise ReconadError(f"tensor {missing[0]} of the declared model is missing")
    if extra := sorted(k for k in set(tensors) - {BANK_KEY, VAL_SCORES_KEY}
                       if not k.startswith(MAP_PREFIX)):
        raise ReconadError(f"tensor {extra[0]} is not part of the declared model")
    for key, want in expected.items():
        got = weights[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise ReconadError(f"tensor {key} is {got.dtype} {tuple(got.shape)}, the declared "
                               f"model needs {want.dtype} {tuple(want.shape)}")
    return weights


def take_val_scores(header: Header, tensors: dict[str, torch.Tensor]) -> Any:
    """The normal validation scores (N,) float64 (taken out of ``tensors``); None in files of
    version 3 and older, which did not keep them.

    Raises:
        ReconadError: if they are missing, mis-shaped or not finite.
    """
    scores = tensors.pop(VAL_SCORES_KEY, None)
    if header.version < 4:
        if scores is not None:
            raise ReconadError(f"a version {header.version} file has no {VAL_SCORES_KEY}")
        return None
    if (scores is None or scores.dtype != torch.float64 or scores.dim() != 1
            or not len(scores) or not torch.isfinite(scores).all()):
        raise ReconadError(f"tensor {VAL_SCORES_KEY} is missing or not finite (N,) float64")
    return scores.numpy()


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and raw bytes of the tensors, in name order (detects edited weights)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        flat = tensors[key].detach().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
