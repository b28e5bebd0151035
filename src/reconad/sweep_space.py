"""The sweep file: what is searched, how, and how it maps onto Optuna and onto configs.

A sweep file (YAML) names a base config and a search space over dotted config keys::

    base: holdout-4-8            # a preset or a config file
    set: [train.epochs=20]       # overrides applied to every trial
    mode: grid                   # grid | one-at-a-time | random | tpe
    objective: dev_auroc         # dev_auroc | dev_ap | score_gap | val_loss
    repeats: 3                   # seeds per configuration (seed, seed+1, ...)
    trials: 30                   # random/tpe: how many configurations to try
    space:
      train.lr: [1.0e-3, 1.0e-4]                          # a list: grid values / choices
      train.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}   # a range (int if ints)
      architecture:                                       # named choices setting several keys
        choices:
          small: {model.hidden: [256], model.latent: 16}
          large: {model.hidden: [512, 256], model.latent: 32}
    quick: {set: [data.max_train=2000], space: {train.lr: [1.0e-3]}}   # used with --quick

Categorical values travel through Optuna as JSON text (Optuna only stores scalars) and are
decoded back here, so lists such as ``model.hidden`` can be searched like any other value.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from reconad.config import Config, apply_overrides, raw_config, validate_config
from reconad.errors import ReconadError

MAX_CONFIGS = 10_000
BASE_LABEL = "base"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A numeric interval; integers when both ends are integers."""

    low: float | int
    high: float | int
    log: bool = False
    step: float | int | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and (
            self.step is None or isinstance(self.step, int))


class Choices(_Strict):
    """Values to pick from; a mapping names bundles that each set several keys."""

    choices: Annotated[list[Any], Field(min_length=1)] | Annotated[
        dict[str, dict[str, Any]], Field(min_length=1)]

    @property
    def is_bundle(self) -> bool:
        return isinstance(self.choices, dict)


def _factor_tag(value: Any) -> str:
    if isinstance(value, (Range, Choices)):  # serialising
        return "<range>" if isinstance(value, Range) else "<choices>"
    return "<range>" if isinstance(value, dict) and "choices" not in value else "<choices>"


Factor = Annotated[
    Annotated[Range, Tag("<range>")] | Annotated[Choices, Tag("<choices>")],
    Discriminator(_factor_tag),
    BeforeValidator(lambda v: {"choices": v} if isinstance(v, list) else v),
]


class Quick(_Strict):
    """The reduced budget ``--quick`` swaps in."""

    set: list[str] = []
    space: dict[str, Factor | None] = {}
    """Factors replacing those of the full sweep by name (null drops one)."""
    trials: Annotated[int, Field(ge=1)] | None = None
    repeats: Annotated[int, Field(ge=1)] | None = None


class SweepSpec(_Strict):
    """A validated sweep file."""

    name: str = "sweep"
    description: str = ""
    base: str = "default"
    set: list[str] = []
    mode: Literal["grid", "one-at-a-time", "random", "tpe"] = "grid"
    objective: Literal["dev_auroc", "dev_ap", "score_gap", "val_loss"] = "dev_auroc"
    trials: Annotated[int, Field(ge=1)] | None = None
    repeats: Annotated[int, Field(ge=1)] = 1
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the sampler (the order of a grid, the draws of random/tpe)."""
    space: Annotated[dict[str, Factor], Field(min_length=1)]
    quick: Quick | None = None

    @model_validator(mode="after")
    def _mode_fits_space(self) -> SweepSpec:
        if self.mode in ("random", "tpe") and self.trials is None:
            raise ValueError(f"mode {self.mode} needs a trial budget: add trials: N")
        if self.mode in ("grid", "one-at-a-time"):
            for key, factor in self.space.items():
                if isinstance(factor, Range) and not factor.is_int:
                    raise ValueError(f"space.{key} is a continuous range, which mode {self.mode} "
                                     "cannot enumerate; give a list of values or use mode: random")
        return self

    def digest(self) -> str:
        """A short hash of everything that defines the sweep (to refuse resuming another one)."""
        text = json.dumps(self.model_dump(mode="json", exclude={"description", "quick"}),
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML reads ``1e-4`` as a string, the sweep file wants a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def sweep_preset_names() -> list[str]:
    """Names of the sweep presets shipped with reconad, sorted."""
    folder = resources.files("reconad") / "sweeps"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def sweep_preset_description(name: str) -> str:
    """The one-line description of a sweep preset."""
    return load_sweep(name).description


def load_sweep(source: str | Path, quick: bool = False) -> SweepSpec:
    """Read and validate a sweep file or preset; ``quick`` swaps in its reduced budget.

    >>> load_sweep("one-at-a-time-dense").mode
    'one-at-a-time'
    """
    path = Path(source)
    if str(source).endswith((".yaml", ".yml")) or path.is_file():
        name = path.stem
        try:
            text = path.read_text()
        except OSError as exc:
            raise ReconadError(f"cannot read sweep file {path}: {exc.strerror}") from None
    else:
        name = str(source)
        preset = resources.files("reconad") / "sweeps" / f"{name}.yaml"
        if not preset.is_file():
            raise ReconadError(f"unknown sweep preset {name!r}; choose one of: "
                               f"{', '.join(sweep_preset_names())} (or give a sweep YAML file)")
        text = preset.read_text()
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ReconadError(f"sweep file {source} is not valid YAML{where}; fix its syntax") \
            from None
    if not isinstance(data, dict):
        raise ReconadError(f"sweep file {source} must be a mapping with a 'space' key")
    data.setdefault("name", name)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise ReconadError(f"sweep file {source}: {_describe(exc)}") from None
    return _apply_quick(spec) if quick else spec


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("<")) or "sweep"
        if err["type"] == "extra_forbidden":
            allowed = {0: SweepSpec, 1: Quick}.get(len(err["loc"]) - 1)
            hint = (f"a sweep file has: {', '.join(allowed.model_fields)}" if allowed else
                    "a factor is a list, {choices: [...]} or {low, high, log, step}")
            problems.append(f"unknown key {key!r} ({hint})")
        elif err["type"] == "missing":
            problems.append(f"missing key {key!r}")
        else:
            problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _apply_quick(spec: SweepSpec) -> SweepSpec:
    quick = spec.quick or Quick(set=["data.max_train=2000", "data.max_test=2000",
                                     "train.epochs=2"])
    space = {**spec.space, **quick.space}
    data = spec.model_dump(exclude={"quick"})
    data.update(
        name=f"{spec.name}-quick", set=spec.set + quick.set,
        space={k: v for k, v in space.items() if v is not None},
        trials=quick.trials or spec.trials, repeats=quick.repeats or spec.repeats,
    )
    return SweepSpec.model_validate(data)


# --------------------------------------------------------------------------- the space


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
