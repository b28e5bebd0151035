"""The run configuration: one typed, validated tree with every default in one place.

A config comes from a preset name or a YAML file, then dotted overrides
(``--set train.epochs=5``) are applied, then the whole tree is validated. Unknown keys and
values of the wrong type or out of range are rejected with a message naming the key.

>>> cfg = load_config("default", overrides=["train.epochs=2"])
>>> cfg.train.epochs
2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconad.config._presets import apply_overrides, raw_config
from reconad.errors import ReconadError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
OpenFraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Classes = list[int | str]
"""Class numbers (label values) or class names (folder names, text labels, a named dataset's
class names such as ``Trouser``); names are mapped to numbers when the data is loaded."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where images come from and how they are prepared."""

    source: str = "mnist"
    """``mnist``, ``fashion-mnist``, ``kmnist``, or a path to a ``.npz``/``.npy`` file, a folder
    of images (labels from sub-folder names) or a ``.csv`` (label column + pixel columns)."""
    test_source: str | None = None
    """Optional separate test data for a user source (same formats); without it the user's
    data is split into train and test by ``test_fraction``."""
    test_fraction: OpenFraction = 0.2
    data_dir: str | None = None
    """Directory holding named datasets. Falls back to $RECONAD_DATA, then the user cache."""
    download: bool = True
    """Download a named dataset that is not found locally (checksums verified)."""
    resize: tuple[Annotated[int, Field(ge=4)], Annotated[int, Field(ge=4)]] | None = None
    """(height, width) to resize every image to; needed when images differ in size."""
    grayscale: bool = False
    """Convert RGB images to one grey channel."""
    label_column: str = "label"
    """Name of the label column in a CSV source."""
    max_train: Annotated[int, Field(ge=1)] | None = None
    """Use at most this many training images (seeded, stratified); for quick runs and tests."""
    max_test: Annotated[int, Field(ge=1)] | None = None
    """Use at most this many test images (seeded, stratified)."""
    stream: bool | Literal["auto"] = "auto"
    """Read images from disk batch by batch instead of holding them (a ``.npy`` memory-mapped,
    a folder decoded on demand): ``true``, ``false``, or ``auto`` = stream when the images as
    float32 would take more than a quarter of the memory available."""


class ScenarioConfig(_Section):
    """Who is normal, who is anomalous, and which images form each evaluated set."""

    kind: Literal["holdout", "one-class", "corruption", "contamination"] = "holdout"
    normal: Classes | None = None
    """Normal classes. ``None`` = every class not named as an anomaly."""
    dev_anomaly: Classes = [8]
    """holdout: classes whose test images are the development anomalies."""
    eval_anomaly: Classes = [4]
    """holdout: classes whose test images are the evaluation anomalies."""
    split_final: bool = False
    """holdout: split the normal test images into a development half (dev and eval sets) and a
    disjoint final half (final set = final normals + evaluation anomalies)."""
    final_fraction: OpenFraction = 0.5
    val_fraction: OpenFraction = 0.1
    """Fraction of the normal training images held out for validation (early stopping,
    quantile threshold)."""
    dev_anomaly_fraction: OpenFraction = 0.1
    """one-class/corruption: anomalies in the development set, as a fraction of its normals."""
    noise: Literal["gaussian", "salt-pepper", "blur", "patch", "speckle"] = "gaussian"
    """corruption: how anomalies are made from clean images."""
    noise_level: Annotated[float, Field(gt=0.0)] = 0.2
    """corruption: gaussian sigma, salt-and-pepper probability, blur sigma (pixels), patch side
    as a fraction of the image side, or speckle sigma."""
    corrupt_fraction: OpenFraction = 0.1
    """corruption: fraction of the test images whose corrupted copies are the anomalies."""
    contaminant: Classes = [3]
    """contamination: the class planted in the unlabelled training set."""
    contamination: OpenFraction = 0.01
    """contamination: planted images as a fraction of the normal images."""

    @model_validator(mode="after")
    def _classes_disjoint(self) -> ScenarioConfig:
        for name in ("normal", "dev_anomaly", "eval_anomaly", "contaminant"):
            values = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"scenario.{name} lists a class twice: {values}")
        if self.normal is not None:
            anomalies = {
                "holdout": set(self.dev_anomaly) | set(self.eval_anomaly),
                "contamination": set(self.contaminant),
            }.get(self.kind, set())
            both = sorted(set(self.normal) & anomalies)
            if both:
                raise ValueError(f"classes {both} are both normal and anomalous")
        return self


Activation = Literal["relu", "tanh", "leaky_relu", "elu", "gelu"]


class ModelConfig(_Section):
    """The autoencoder architecture. Input shape always comes from the data."""

    kind: Literal["dense", "conv", "draem"] = "dense"
    """``draem``: a conv autoencoder that restores images with simulated anomalies and a U-Net
    head that segments them from [image, reconstruction] (``score.map=segment``)."""
    hidden: list[Annotated[int, Field(ge=1)]] = [512, 256]
    """dense: widths of the encoder's hidden layers (the decoder mirrors them)."""
    latent: Annotated[int, Field(ge=1)] = 32
    """Size of the code. conv: size of the dense bottleneck if ``bottleneck`` is true."""
    activation: Activation = "leaky_relu"
    latent_activation: Literal["none", "same", "tanh"] = "none"
    """Activation on the code; ``none`` avoids the ReLU-bottleneck collapse."""
    batch_norm: bool = False
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    channels: list[Annotated[int, Field(ge=1)]] = [32, 64]
    """conv: output channels of each encoder stage; each stage halves height and width.
    draem: the head's U-Net widths per level (and the autoencoder's with ``reconstruct``)."""
    reconstruct: bool = True
    """draem: the head reads the autoencoder's reconstruction beside the image (false: the
    head alone, reading the image)."""
    kernel: Annotated[int, Field(ge=1, le=15)] = 3
    downsample: Literal["stride", "maxpool"] = "stride"
    upsample: Literal["transpose", "upsample"] = "transpose"
    bottleneck: bool = True
    """conv: flatten to a dense code of size ``latent`` between encoder and decoder."""
    members: Annotated[int, Field(ge=1, le=32)] = 1
    """An ensemble: this many independently initialised autoencoders of the architecture
    above, each trained on its own reconstruction loss; the detector reconstructs with their
    mean and its code is their codes side by side. Averages out one initialisation's luck."""
    class_head: bool = False
    """A linear classifier on the code, trained on the normal images' own class labels
    (holdout/one-class with several normal classes). Needed by ``score.parts`` class_energy."""


class LossConfig(_Section):
    """What training minimises, per image then averaged over the batch."""

    kind: Literal["mse", "l1", "bce", "ssim", "mix"] = "mse"
    ssim_weight: Fraction = 0.5
    """mix: loss = (1 - w) * mse + w * (1 - ssim)."""
    ssim_window: Annotated[int, Field(ge=3)] = 11
    ssim_sigma: Annotated[float, Field(gt=0.0)] = 1.5
    class_weight: Annotated[float, Field(ge=0.0)] = 0.01
    """model.class_head: weight of the cross-entropy of the normal classes in the loss."""
    robust: Literal["none", "l21"] = "none"
    """How each image's loss enters the batch mean that training minimises: ``none`` as it
    is; ``l21`` its square root (for ``mse`` the L2 norm of the image's residual: the batch
    loss is an L2,1 norm, as in robust deep autoencoders), so an image the model cannot
    reconstruct pulls on the weights in proportion to its error, not to its squared error.
    For a pool with a few odd images in it (contamination). Validation and scores are
    unchanged."""


class TrainConfig(_Section):
    """The optimisation loop and its regularisers."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    batch_size: Annotated[int, Field(ge=1)] = 256
    epochs: Annotated[int, Field(ge=1)] = 20
    schedule: Literal["none", "cosine", "plateau"] = "none"
    patience: Annotated[int, Field(ge=1)] | None = 5
    """Early stopping: epochs without validation improvement before stopping; None = never."""
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    l1_latent: Annotated[float, Field(ge=0.0)] = 0.0
    """Weight of the L1 penalty on the code (sparse autoencoder)."""
    trim: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0
    """Robust training on a pool that holds a few anomalies: each epoch leaves out this
    fraction of the training images with the highest loss (scored before the epoch), so the
    odd ones are not learnt. Set it to the expected contamination, e.g. 0.01."""
    denoise: Literal["none", "gaussian", "salt-pepper", "blur", "patch", "speckle"] = "none"
    """Denoising training: corrupt the input with this noise, reconstruct the clean image."""
    denoise_level: Annotated[float, Field(gt=0.0)] = 0.2
    augment_rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0
    """Random rotation of training images, up to this many degrees either way."""
    augment_zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Random zoom by a factor in [1 - z, 1 + z]."""
    augment_shift: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Random shift up to this fraction of the image size, horizontally and vertically."""
    augment_flip: bool = False
    """Mirror each training image left-right and upside down, each with probability 1/2
    (textures; not for digits or objects with an orientation)."""
    threads: Annotated[int, Field(ge=1)] | None = None
    """Torch CPU threads; None = all cores."""
    steps: Annotated[int, Field(ge=1)] | None = None
    """model.kind draem: optimisation steps of ``batch_size`` images (None = ``epochs`` passes
    over the training images); the cosine schedule runs over them."""
    crop: Annotated[int, Field(ge=4)] | None = None
    """Patch training: every training image is replaced by one random ``crop x crop`` crop in
    each batch (validation images by one fixed seeded crop), and the model is built for
    crops. Larger images are then scored whole (a fully convolutional model: conv with
    ``bottleneck: false``) or by overlapping tiles (``sliding_window``, stride crop/2).
    None = train on whole images."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Where to train and score: ``auto`` = cuda if available, else mps, else cpu."""
    amp: bool | Literal["auto"] = "auto"
    """Mixed precision (bfloat16, else float16 with loss scaling) for training on CUDA;
    ``auto`` = on for CUDA. Never used on the CPU."""


ScorePart = Literal["recon", "latent_knn", "class_energy"]
# score.tta_shift: a copy moved by more than this fraction of the image's side is no longer
# the same image in another pose (and a fraction, not pixels, as it was before format 6).
MAX_TTA_SHIFT = 0.25
MAP_COMPONENTS = ("squared", "absolute", "ssim", "color", "segment")  # what score.map joins with +
_COLOR_SIGMAS = [1.0, 2.0, 4.0]


class ScoreConfig(_Section):
    """How an image's anomaly score is computed (higher = more anomalous)."""

    kind: Literal["mse", "l1", "bce", "ssim"] = "mse"
    """The reconstruction dissimilarity (the ``recon`` part)."""
    complexity: Literal["none", "tv"] = "none"
    """``tv``: divide the reconstruction error by the image's total variation (mean absolute
    difference of neighbouring pixels). Errors sit on edges, so without it a detailed normal
    image (a thick 8) outscores a plain anomaly (a thin 1); with it both are on one scale."""
    parts: Annotated[list[ScorePart], Field(min_length=1)] = ["recon"]
    """What the score is made of: ``recon`` (reconstruction error), ``latent_knn`` (mean
    distance of the code to its ``knn_k`` nearest training codes), ``class_energy`` (the class
    head's energy -logsumexp(logits); needs model.class_head). One part: its raw value.
    Several: each standardised on the normal validation images (log first for the
    distances) and summed."""
    knn_k: Annotated[int, Field(ge=1)] = 5
    knn_bank: Annotated[int, Field(ge=1)] = 20000
    """latent_knn: at most this many training codes are kept (a seeded sample) and saved."""
    map: str = "none"
    """The ``recon`` part from a per-pixel anomaly map (:mod:`reconad.score`): ``squared``,
    ``absolute`` or ``ssim`` (1 - local SSIM) residual, or ``color`` (how unusual the local
    colour statistics of the image are, :mod:`reconad.score`; no reconstruction), or
    ``segment`` (model.kind draem: its head's probability), smoothed (``smooth_sigma``),
    standardised per pixel position (``standardize``) and reduced to one number
    (``reduction``). Several joined by ``+`` (``ssim+squared+color``): the mean of the
    standardised maps (SSIM sees structure, the residual a small colour change, the colour
    statistics a shifted or flat region; needs ``standardize``). ``none``: the per-image
    ``kind`` error. For small defects in textures."""
    color_sigmas: Annotated[list[Annotated[float, Field(gt=0.0, le=50.0)]],
                            Field(min_length=1, max_length=4)] = _COLOR_SIGMAS
    """map color: the scales in pixels of the local colour mean and standard deviation."""
    reduction: Literal["mean", "max", "topk", "boxmax"] = "mean"
    """map: ``mean`` of all pixels, ``max`` (the worst pixel), ``topk`` (the mean of the
    highest ``topk`` fraction of the pixels) or ``boxmax`` (the max of the ``box x box`` mean)."""
    box: Annotated[int, Field(ge=1, le=63)] = 3
    topk: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    """map, reduction topk: fraction of the pixels averaged (0.01 = the top 1 %)."""
    smooth_sigma: Annotated[float, Field(ge=0.0, le=50.0)] = 0.0
    """map: Gaussian smoothing of the map in pixels (0 = none); not of the ``color`` map,
    which is made of local statistics already."""
    standardize: bool = False
    """map: standardise every pixel position by the mean and std of the normal validation
    images' maps there (saved in the detector), so always-busy places do not dominate."""
    ssim_window: Annotated[int, Field(ge=3, le=63)] = 11
    """map ssim: odd side of the Gaussian SSIM window (sigma 1.5)."""
    tta_shift: Annotated[float, Field(ge=0.0)] = 0.0
    """Test-time augmentation: also score copies of each image moved to its 8 neighbouring
    positions by this fraction of its shorter side, and average each part over the image and
    its copies. The move is a whole number of pixels, ``floor(tta_shift * side + 0.5)``
    (:func:`reconad.transforms.tta_pixels`): 0.036 moves a 28x28 image 1 pixel, a 56x56 one
    2 and an 8x8 one 0, i.e. not at all (0 = no shifted copies). At most
    :data:`MAX_TTA_SHIFT`. Every copy costs one more scoring pass."""
    tta_rotation: Annotated[float, Field(ge=0.0, le=45.0)] = 0.0
    """Test-time augmentation: also score copies rotated by -/+ this many degrees (0 = none)."""
    tta_zoom: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    """Test-time augmentation: also score copies zoomed by 1 -/+ this (0 = none)."""

    @model_validator(mode="after")
    def _distinct_parts(self) -> ScoreConfig:
        if self.tta_shift > MAX_TTA_SHIFT:
            raise ValueError(
                f"score.tta_shift={self.tta_shift:g} is a fraction of the image's shorter side "
                f"(0.036 moves a 28-pixel image 1 pixel), at most {MAX_TTA_SHIFT:g}; give the "
                "shift as a fraction, e.g. 0.036")
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"score.parts {self.parts} names a part twice; list each once")
        if self.ssim_window % 2 == 0 or self.box % 2 == 0:
            raise ValueError(f"score.ssim_window {self.ssim_window} and score.box {self.box} "
                             "must be odd, e.g. 11 and 3")
        names = self.map.split("+")
        if self.map != "none" and (len(set(names)) != len(names)
                                   or any(n not in MAP_COMPONENTS for n in names)):
            raise ValueError(f"score.map={self.map!r} is not none or a +-joined list of distinct "
                             f"maps from {', '.join(MAP_COMPONENTS)} (e.g. ssim+squared+color)")
        if "color" not in names and self.color_sigmas != _COLOR_SIGMAS:
            raise ValueError("score.color_sigmas only applies to a color map; add color to "
                             "score.map or drop it")
        if self.map == "none":
            changed = [f"score.{k}" for k, default in _MAP_DEFAULTS.items()
                       if getattr(self, k) != default]
            if changed:
                raise ValueError(f"{', '.join(changed)} only apply to an anomaly map; set "
                                 "score.map=squared|absolute|ssim|color or drop them")
        else:
            if self.parts != ["recon"]:
                raise ValueError(f"score.map={self.map} makes the recon part; it does not "
                                 f"combine with score.parts {self.parts}: use score.parts=[recon]")
            if "+" in self.map and not self.standardize:
                raise ValueError(f"score.map={self.map} averages maps of different scales; set "
                                 "score.standardize=true")
            if self.complexity != "none":
                raise ValueError(f"score.complexity={self.complexity} is for score.map=none; "
                                 "set score.complexity=none with a map")
            if self.tta_shift or self.tta_rotation or self.tta_zoom:
                raise ValueError("score.tta_shift/tta_rotation/tta_zoom average per-image "
                                 f"scores over moved copies; score.map={self.map} scores pixels "
                                 "in place: set them to 0 with a map")
        return self


_MAP_DEFAULTS = {"reduction": "mean", "topk": 0.01, "smooth_sigma": 0.0, "standardize": False,
                 "ssim_window": 11, "box": 3}


ThresholdMethod = Literal[
    "youden", "max_f1", "pr_closest", "quantile", "target_fpr", "target_recall", "fixed"
]


class ThresholdConfig(_Section):
    """Which threshold is applied to the evaluation sets (all methods are reported)."""

    method: ThresholdMethod = "youden"
    quantile: OpenFraction = 0.99
    """quantile: fraction of normal validation scores below the threshold."""
    target_fpr: OpenFraction = 0.05
    target_recall: OpenFraction = 0.95
    value: float | None = None
    """fixed: the threshold itself."""

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> ThresholdConfig:
        if self.method == "fixed" and self.value is None:
            raise ValueError("threshold.method=fixed needs threshold.value")
        return self


class Config(_Section):
    """Everything a run needs. Defaults here are the only defaults."""

    name: str = "run"
    seed: Annotated[int, Field(ge=0)] = 0
    data: DataConfig = DataConfig()
    scenario: ScenarioConfig = ScenarioConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    score: ScoreConfig = ScoreConfig()
    threshold: ThresholdConfig = ThresholdConfig()

    @model_validator(mode="after")
    def _energy_needs_head(self) -> Config:
        if "class_energy" in self.score.parts and not self.model.class_head:
            raise ValueError("score.parts class_energy needs model.class_head=true")
        if ("segment" in self.score.map.split("+")) != (self.model.kind == "draem"):
            raise ValueError("score.map=segment and model.kind=draem go together; set both")
        check_crop(self.train, self.model, self.score)
        return self


def check_crop(train: TrainConfig, model: ModelConfig, score: ScoreConfig) -> None:
    """Refuse what patch training (``train.crop``) cannot do, naming the fix.

    Raises:
        ValueError: (pydantic turns it into the config error) for a crop with latent or class
            scores, a class head or trimming.
    """
    if train.crop is None:
        return
    if score.parts != ["recon"]:
        raise ValueError(f"train.crop scores whole images by reconstruction only; set "
                         f"score.parts=[recon] (not {score.parts}) or train.crop=null")
    if model.class_head:
        raise ValueError("train.crop does not train a class head; set model.class_head=false "
                         "or train.crop=null")
    if train.trim > 0:
        raise ValueError("train.trim ranks whole images, train.crop trains on crops; set "
                         "train.trim=0 or train.crop=null")


# --------------------------------------------------------------------------- loading


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a mapping into a :class:`Config`, turning errors into one line naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ReconadError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown config key {key!r}{_suggest(err['loc'])}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"invalid value for {key}: {err['msg']}{shown}")
    return "; ".join(problems)


def _suggest(loc: tuple) -> str:
    """' (did you mean ...?)' with the closest valid key, or where to find the valid keys."""
    import difflib

    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(
                field.annotation, BaseModel):
            break
        model = field.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    prefix = ".".join(str(p) for p in loc[:-1])
    if close:
        return f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?"
    return f"; valid keys here: {', '.join(model.model_fields)}"


def load_config(source: str | Path = "default", overrides: list[str] | None = None) -> Config:
    """Load a preset or YAML file, apply dotted overrides, validate.

    >>> load_config("default", ["model.latent=16"]).model.latent
    16
    """
    return validate_config(apply_overrides(raw_config(source), overrides or []))


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML, loadable again with :func:`load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
