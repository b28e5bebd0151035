"""The search space: how a sweep maps onto Optuna's samplers and onto reconad configs.

Categorical values travel through Optuna as JSON text (Optuna only stores scalars) and are
decoded back here, so lists such as ``model.hidden`` can be searched like any other value.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from reconad.config import Config, apply_overrides, raw_config, validate_config
from reconad.errors import ReconadError
from reconad.sweep._spec import Choices, Range, SweepSpec

MAX_CONFIGS = 10_000
BASE_LABEL = "base"


def encode(value: Any) -> str:
    """A categorical value as Optuna stores it (JSON text)."""
    return json.dumps(value)


def _choice_labels(factor: Choices) -> list[str]:
    return list(factor.choices) if factor.is_bundle else [encode(v) for v in factor.choices]


def _range_values(factor: Range) -> list[int]:
    return list(range(int(factor.low), int(factor.high) + 1, int(factor.step or 1)))


def grid_space(spec: SweepSpec, base: dict[str, Any]) -> dict[str, list[str]]:
    """The Optuna ``GridSampler`` space: one categorical per factor, or one ``variant``
    categorical listing the one-at-a-time configurations (the base first)."""
    if spec.mode == "one-at-a-time":
        return {"variant": list(one_at_a_time_variants(spec, base))}
    return {key: [encode(v) for v in _range_values(f)] if isinstance(f, Range)
            else _choice_labels(f) for key, f in spec.space.items()}


def one_at_a_time_variants(spec: SweepSpec, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label → overrides: the base, then each factor's values with the others at the base.

    A value equal to the base value is the base itself, so it is not run twice.
    """
    base_config = validate_config(base)
    variants: dict[str, dict[str, Any]] = {BASE_LABEL: {}}
    for key, factor in spec.space.items():
        labels = (_range_values(factor) if isinstance(factor, Range) else _choice_labels(factor))
        for label in labels:
            overrides = factor_overrides(key, factor, label)
            if config_for(base, overrides) == base_config:
                continue
            variants[f"{key}={label}"] = overrides
    return variants


def factor_overrides(key: str, factor: Range | Choices, value: Any) -> dict[str, Any]:
    """The config keys one factor value sets (a bundle sets several)."""
    if isinstance(factor, Choices) and factor.is_bundle:
        return dict(factor.choices[value])
    # categorical values and enumerated ranges arrive as JSON text, sampled ranges as numbers
    return {key: json.loads(value) if isinstance(value, str) else value}


def factor_values(spec: SweepSpec, config: Config) -> dict[str, Any]:
    """Each factor's value in ``config`` (a bundle: the name of the choice it matches)."""
    data = config.model_dump(mode="json")

    def lookup(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            node = node[part]
        return node

    values: dict[str, Any] = {}
    for key, factor in spec.space.items():
        if isinstance(factor, Choices) and factor.is_bundle:
            values[key] = next((name for name, sets in factor.choices.items()
                                if all(lookup(k) == v for k, v in sets.items())), BASE_LABEL)
        else:
            values[key] = lookup(key)
    return values


def suggest(trial: Any, spec: SweepSpec, base: dict[str, Any]) -> dict[str, Any]:
    """Ask the Optuna ``trial`` for one configuration; returns its dotted overrides."""
    if spec.mode == "one-at-a-time":
        variants = one_at_a_time_variants(spec, base)
        return variants[trial.suggest_categorical("variant", list(variants))]
    overrides: dict[str, Any] = {}
    for key, factor in spec.space.items():
        if isinstance(factor, Choices):
            value = trial.suggest_categorical(key, _choice_labels(factor))
        elif spec.mode == "grid":
            value = trial.suggest_categorical(key, [encode(v) for v in _range_values(factor)])
        elif factor.is_int:
            value = trial.suggest_int(key, factor.low, factor.high, step=factor.step or 1,
                                      log=factor.log)
        else:
            value = trial.suggest_float(key, factor.low, factor.high, step=factor.step,
                                        log=factor.log)
        overrides.update(factor_overrides(key, factor, value))
    return overrides


def base_config(spec: SweepSpec, extra: list[str] = ()) -> dict[str, Any]:
    """The raw base mapping every trial starts from (``base`` + ``set`` + ``extra``)."""
    data = apply_overrides(raw_config(spec.base), [*spec.set, *extra])
    validate_config(data)
    return data


def config_for(base: dict[str, Any], overrides: dict[str, Any], seed_offset: int = 0) -> Config:
    """The validated config of one trial (and repeat)."""
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        node = data
        *sections, leaf = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ReconadError(f"sweep space key {key!r}: {part!r} is a value, not a section")
        node[leaf] = value
    try:
        config = validate_config(data)
    except ReconadError as exc:
        shown = ", ".join(f"{k}={encode(v)}" for k, v in overrides.items())
        raise ReconadError(f"sweep configuration {shown or BASE_LABEL}: {exc}") from None
    if seed_offset:
        config = config.model_copy(update={"seed": config.seed + seed_offset})
    return config


def check_space(spec: SweepSpec, base: dict[str, Any]) -> int:
    """Validate every configuration the sweep can produce; returns how many a grid has.

    Grids are checked exhaustively; for random/tpe each choice and each range end is checked
    on top of the base (their combinations are checked as each trial starts).
    """
    if spec.mode == "one-at-a-time":
        for overrides in one_at_a_time_variants(spec, base).values():
            config_for(base, overrides)
        return len(one_at_a_time_variants(spec, base))
    if spec.mode == "grid":
        space = grid_space(spec, base)
        size = 1
        for values in space.values():
            size *= len(values)
        if size > MAX_CONFIGS:
            raise ReconadError(f"the grid has {size} configurations (over {MAX_CONFIGS}); "
                               "shrink the space or use mode: random with a trial budget")
        for combo in itertools.product(*space.values()):
            overrides: dict[str, Any] = {}
            for (key, factor), label in zip(spec.space.items(), combo, strict=True):
                overrides.update(factor_overrides(key, factor, label))
            config_for(base, overrides)
        return size
    for key, factor in spec.space.items():
        values = ([factor.low, factor.high] if isinstance(factor, Range)
                  else _choice_labels(factor))
        for value in values:
            config_for(base, factor_overrides(key, factor, value))
    return spec.trials or 0
