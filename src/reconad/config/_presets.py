"""Where a config comes from: the presets shipped with reconad, YAML files (with ``base:``
inheritance from a preset or another file), and ``--set section.key=value`` overrides.

Everything here works on plain mappings; :func:`reconad.config.load_config` validates the
result into a :class:`~reconad.config.Config`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from reconad.errors import ReconadError


def preset_names() -> list[str]:
    """Names of the presets shipped with reconad, sorted."""
    folder = resources.files("reconad.config") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The one-line description a preset carries in its ``description`` key."""
    return str(_read_preset(name).get("description", ""))


def _read_preset(name: str) -> dict[str, Any]:
    path = resources.files("reconad.config") / "presets" / f"{name}.yaml"
    if name not in preset_names():  # not path.is_file(): a name may hold "/", NUL or 5000 chars
        raise ReconadError(
            f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} "
            "(or give a path to a YAML config file)"
        )
    return yaml.safe_load(path.read_text()) or {}


def _read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReconadError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ReconadError(f"config file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ReconadError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReconadError(f"config file {path} must hold a mapping of sections, not a list/value")
    return data


def raw_config(source: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The unvalidated mapping of a preset name or a YAML file (``description`` dropped).

    A YAML file may name a preset (or another file) to start from with ``base: PRESET``.
    """
    if str(source) in _seen:
        raise ReconadError(f"config {source} is its own base (via {' -> '.join(_seen)}); "
                           "remove the loop of base: keys")
    path = Path(source)
    if str(source).endswith((".yaml", ".yml")) or _is_file(path):
        if not _is_file(path):
            raise ReconadError(f"config file {path} does not exist; check the path")
        data = _read_yaml_file(path)
    else:
        data = _read_preset(str(source))
    data = dict(data)
    data.pop("description", None)
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(raw_config(str(base), (*_seen, str(source))), data)
    return data


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False for names no file can have (too long, NUL bytes)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``[1, 2]``, ``null``)."""
    data = _deep_merge({}, data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ReconadError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ReconadError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data
