"""The sweep file: what is searched, how, and on which base; validated and loaded.

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

The presets shipped with reconad lie in ``presets/`` next to this module.
"""

from __future__ import annotations

import hashlib
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

from reconad.errors import ReconadError


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


def _presets():
    """The folder of sweep presets shipped with reconad (package data)."""
    return resources.files("reconad.sweep") / "presets"


def sweep_preset_names() -> list[str]:
    """Names of the sweep presets shipped with reconad, sorted."""
    folder = _presets()
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
        preset = _presets() / f"{name}.yaml"
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
