"""Config: presets validate, overrides parse, bad keys and values are named."""

from __future__ import annotations

import pytest

from reconad.config import (
    Config,
    apply_overrides,
    config_to_yaml,
    load_config,
    preset_description,
    preset_names,
)
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
