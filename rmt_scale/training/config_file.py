"""Reading nested config dataclasses from plain data: YAML files and `key.sub=value` overrides.

Generic (no knowledge of the training config): `build_dataclass` checks keys and types against the
dataclass annotations and reports the first problem as a one-line `ConfigError` that names the key
and, for unknown keys, lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rmt_scale.errors import ConfigError


def check(condition: bool, message: str) -> None:
    """Raise a one-line ConfigError with `message` unless `condition` holds (the config
    dataclasses' `__post_init__` checks)."""
    if not condition:
        raise ConfigError(message)


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _convert(value: Any, kind: Any, key: str) -> Any:
    """Check `value` against the annotation `kind` and build nested dataclasses."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None:
            check(type(None) in options, f"{key} must not be null")
            return None
        inner = [option for option in options if option is not type(None)]
        return _convert(value, inner[0], key)
    if _is_dataclass_type(kind):
        check(isinstance(value, dict), f"{key} must be a mapping of {_field_names(kind)}, got {value!r}")
        return build_dataclass(kind, value, key)
    if origin is list:
        (item,) = typing.get_args(kind)
        check(isinstance(value, list), f"{key} must be a list, got {value!r}")
        return [_convert(entry, item, f"{key}.{i}") for i, entry in enumerate(value)]
    if kind is bool:
        check(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
    elif kind is int:
        check(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{key} must be a number, got {value!r}")
        value = float(value)
        # YAML reads .inf and .nan as numbers; no setting means anything with them (an infinite
        # learning rate trains NaN weights), so they are refused here, for every float key.
        check(math.isfinite(value), f"{key} must be a finite number, got {value!r}")
    elif kind is str:
        check(isinstance(value, str), f"{key} must be a string, got {value!r}")
    return value


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build_dataclass(cls: type, values: dict, prefix: str = "") -> Any:
    """Build `cls` from a nested dict; unknown keys and wrong types are one-line ConfigErrors."""
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        shown = [f"{prefix}.{name}" if prefix else name for name in unknown]
        raise ConfigError(f"unknown config key(s) {shown}{where}; valid keys are {names}")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not str(err).startswith(prefix):
            raise ConfigError(f"{prefix}: {err}") from None
        raise


# --- YAML and overrides ------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing, unreadable or non-mapping file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where} ({getattr(err, 'problem', None) or err})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(values: dict, override: str) -> None:
    """Apply one `key.sub=value` (list items by index: `curriculum.stages.1.steps=50`).

    The value is read as YAML, so `null`, numbers, `true` and `[a, b]` work. Unknown keys are
    caught later, when the dataclasses are built, so the error lists the valid keys.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (for example seed=1)")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r} has an empty key")
    value = _parse_value(text)
    node: Any = values
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_item(node, part, where)
            continue
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"override {override!r}: {where} is a value, not a section")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, dotted)
        node[index] = value
    else:
        node[last] = value


def _index(items: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"{where}: list index {part!r} out of range (the list has {len(items)} items)")
    return int(part)


def _list_item(items: list, part: str, where: str) -> Any:
    item = items[_index(items, part, where)]
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is a value, not a section")
    return item
