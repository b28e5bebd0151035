"""The run configuration: one typed, validated tree with every default in one place, and where
a config comes from (the shipped presets, YAML files with ``base:``, dotted ``--set``
overrides).

Modules: ``_schema`` (the tree, its validation and YAML form), ``_presets`` (presets, YAML
files and overrides as raw mappings; the presets themselves in ``presets/*.yaml``),
``_pixels`` (the settings given in pixels against the size of the images they meet).
"""

from reconad.config._pixels import check_pixel_settings
from reconad.config._presets import (
    apply_overrides,
    preset_description,
    preset_names,
    raw_config,
)
from reconad.config._schema import (
    MAP_COMPONENTS,
    MAX_TTA_SHIFT,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    ScenarioConfig,
    ScoreConfig,
    ThresholdConfig,
    ThresholdMethod,
    TrainConfig,
    check_crop,
    config_to_yaml,
    load_config,
    validate_config,
)

__all__ = [
    "MAP_COMPONENTS", "MAX_TTA_SHIFT", "Config", "DataConfig", "LossConfig", "ModelConfig",
    "ScenarioConfig", "ScoreConfig", "ThresholdConfig", "ThresholdMethod", "TrainConfig",
    "apply_overrides", "check_crop", "check_pixel_settings", "config_to_yaml", "load_config",
    "preset_description", "preset_names", "raw_config", "validate_config",
]
