"""Config: presets validate, overrides parse, bad keys and values are named."""

from __future__ import annotations

import pytest

from reconad.config import (
    MAX_TTA_SHIFT,
    Config,
    LossConfig,
    ScoreConfig,
    TrainConfig,
    apply_overrides,
    check_pixel_settings,
    config_to_yaml,
    load_config,
    preset_description,
    preset_names,
)
from reconad.detector import Detector
from reconad.errors import ReconadError

REQUIRED_PRESETS = {"default", "holdout-4-8", "holdout-4-8-final", "one-class-0", "one-class-mnist",
                    "noise-gaussian", "contamination-1-3"}


def test_required_presets_exist_and_describe_themselves():
    names = set(preset_names())
    assert REQUIRED_PRESETS <= names
    for name in names:
        assert isinstance(load_config(name), Config)
        assert preset_description(name), f"preset {name} needs a description line"


def test_holdout_preset_matches_the_write_up():
    cfg = load_config("holdout-4-8")
    assert (cfg.model.kind, cfg.model.hidden, cfg.model.latent) == ("dense", [512, 256], 10)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (1e-4, 64, 150)
    assert (cfg.scenario.dev_anomaly, cfg.scenario.eval_anomaly) == ([8], [4])


def test_overrides_parse_yaml_values():
    cfg = load_config("default", ["train.epochs=3", "model.channels=[8, 16]",
                                  "scenario.normal=null", "data.resize=[20, 20]"])
    assert cfg.train.epochs == 3
    assert cfg.model.channels == [8, 16]
    assert cfg.scenario.normal is None
    assert cfg.data.resize == (20, 20)


def test_override_without_equals_is_rejected():
    with pytest.raises(ReconadError, match="must look like section.key=value"):
        apply_overrides({}, ["train.epochs"])


@pytest.mark.parametrize(("override", "message"), [
    ("train.epoch=3", r"unknown config key 'train.epoch'; did you mean 'train.epochs'"),
    ("trian.epochs=3", r"unknown config key 'trian'; did you mean 'train'"),
    ("model.nonsense=1", r"unknown config key 'model.nonsense'; valid keys here: kind"),
    ("train.epochs=-3", r"invalid value for train.epochs: .*greater than or equal to 1"),
    ("scenario.val_fraction=1.5", r"invalid value for scenario.val_fraction"),
    ("scenario.contamination=0", r"invalid value for scenario.contamination"),
    ("model.activation=swish", r"invalid value for model.activation"),
    ("loss.robust=huber", r"invalid value for loss.robust"),
    ("train.lr=fast", r"invalid value for train.lr"),
    ("scenario.normal=[1, 1]", r"lists a class twice"),
    ("scenario.normal=[4, 5]", r"classes \[4\] are both normal and anomalous"),
    ("threshold.method=fixed", r"threshold.method=fixed needs threshold.value"),
    ("score.tta_shift=1", r"score.tta_shift=1 is a fraction of the image's shorter side"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ReconadError, match=message):
        load_config("default", [override])


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ReconadError, match="unknown preset 'nope'; choose one of: .*default"):
        load_config("nope")


def test_yaml_file_with_base_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: holdout-4-8\nname: mine\ntrain:\n  epochs: 7\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.train.epochs, cfg.model.latent) == ("mine", 7, 10)


def test_broken_yaml_file_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ReconadError, match=r"bad.yaml is not valid YAML at line"):
        load_config(path)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ReconadError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("noise-gaussian", ["seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(("settings", "shape", "message"), [
    ({"train": {"crop": 32}}, (1, 28, 28), r"train.crop=32 is larger than the 28x28 images; "
                                           r"use a crop <= 28"),
    ({"loss": {"kind": "ssim"}}, (1, 8, 8), r"loss.ssim_window=11 is larger than the 8x8 "
                                            r"images; use an odd window <= 7"),
    ({"loss": {"kind": "mix"}, "train": {"crop": 10}}, (3, 64, 64),
     r"loss.ssim_window=11 is larger than the 10x10 training crops; use an odd window <= 9"),
    ({"score": {"map": "ssim"}}, (1, 10, 12), r"score.ssim_window=11 is larger than the 10x12"),
    ({"score": {"map": "squared", "smooth_sigma": 2.0}}, (1, 7, 7),
     r"score.smooth_sigma=2 smooths over more than the 7x7 images; use a sigma <= 1.75"),
    ({"score": {"map": "color", "color_sigmas": [1.0, 4.0]}}, (3, 14, 14),
     r"score.color_sigmas=\[1.0, 4.0\] reach past the 14x14 images; use scales <= 3.5"),
])
def test_pixel_settings_that_do_not_fit_the_images_are_refused(settings, shape, message):
    """Settings given in pixels stay in pixels (the grain of a texture does not scale with the
    patch); where the images are too small for one it is refused in one line, naming it."""
    sections = {"loss": LossConfig, "train": TrainConfig, "score": ScoreConfig}
    made = {k: cls(**settings.get(k, {})) for k, cls in sections.items()}
    with pytest.raises(ReconadError, match=message) as info:
        check_pixel_settings(made["loss"], made["train"], made["score"], shape)
    assert "\n" not in str(info.value)
    if made["train"].crop is None:  # the same settings fit images large enough for them
        check_pixel_settings(made["loss"], made["train"], made["score"], (shape[0], 64, 64))


def test_pixel_settings_are_refused_before_training(tiny_images):
    x, _ = tiny_images  # 16x16
    with pytest.raises(ReconadError, match="score.ssim_window=17 is larger than the 16x16"):
        Detector(model={"kind": "conv", "channels": [4], "bottleneck": False},
                 train={"epochs": 50}, score={"map": "ssim", "ssim_window": 17}).fit(x)


def test_tta_shift_is_a_fraction_of_the_side():
    assert load_config("default").score.tta_shift < MAX_TTA_SHIFT
    assert ScoreConfig(tta_shift=MAX_TTA_SHIFT).tta_shift == MAX_TTA_SHIFT
    with pytest.raises(ValueError, match=r"tta_shift=0.3 is a fraction .* at most 0.25"):
        ScoreConfig(tta_shift=0.3)
