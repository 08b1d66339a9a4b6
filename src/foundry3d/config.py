"""Strict configs: dataclass defaults <- YAML file <- dotted ``key.sub=value`` overrides.

Every recipe (pretraining, distillation, evaluation, quickstart) is a nested dataclass. Unknown
keys are errors that name the key and list the valid ones, values are type-checked, and the
resolved config is a plain dict that goes into every run directory and checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from foundry3d.errors import ConfigError
from foundry3d.files import write_text

T = TypeVar("T")


def _check_value(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # type: ignore[arg-type]  # a dataclass type
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_check_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_check_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # T is a dataclass
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + u for u in unknown)}; valid keys{' under ' + where if where else ''}: "
            f"{', '.join(names)}"
        )
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in names:
        if name in data:
            sub = f"{where}.{name}" if where else name
            value = data[name]
            factory = fields[name].default_factory
            if isinstance(value, dict) and factory is not dataclasses.MISSING:
                default = factory()
                if dataclasses.is_dataclass(default):  # a partial section keeps this recipe's other defaults
                    value = {**to_dict(default), **value}
            kwargs[name] = _check_value(hints[name], value, sub)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as e:  # a setting out of range: one line naming the section
            raise ConfigError(f"{where + ': ' if where else ''}{e}") from e
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-Python view (dicts, lists, scalars) of a dataclass tree: safe for YAML, JSON, torch."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a recipe never needs them, and nested aliases let a 1 KB file
    expand to billions of nodes ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not accepted")
        return super().compose_node(parent, index)


MAX_CONFIG_BYTES = 1_000_000  # a recipe is a few KB


def plain_yaml(text: str) -> Any:
    """Parse YAML as a config: safe types only, no aliases."""
    return yaml.load(text, Loader=_PlainLoader)  # a SafeLoader subclass: safe types only


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); the value is parsed as YAML (numbers, lists, true/null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = plain_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, _number(value)


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; read such strings as numbers."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); intermediate mappings are created as needed."""
    out = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"override {key}: {p} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = to_dict(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a plain mapping: size-capped and parsed without YAML tags, so a config can never build
    objects."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is {p.stat().st_size:,} bytes; a recipe is at most {MAX_CONFIG_BYTES:,}")
    try:
        data = plain_yaml(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def builtin_config(name: str) -> Path:
    """Path of a recipe shipped in ``foundry3d/configs`` (``pretrain/tiny`` -> .../pretrain/tiny.yaml)."""
    root = Path(__file__).parent / "configs"
    p = root / (name if name.endswith(".yaml") else name + ".yaml")
    if not p.is_file():
        known = sorted(str(q.relative_to(root))[:-5] for q in root.rglob("*.yaml"))
        raise ConfigError(f"no built-in config {name!r}; known: {', '.join(known)}")
    return p


def load_config(
    cls: type[T],
    config: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> T:
    """Resolve a recipe: defaults, then the YAML file (path or built-in name), then overrides."""
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, dict):
        data = config
    else:
        p = Path(config)
        data = read_yaml(p if p.suffix in (".yaml", ".yml") or p.exists() else builtin_config(str(config)))
    return from_dict(cls, apply_overrides(data, overrides))


def partial_settings(config: str | Path | dict[str, Any]) -> list[str]:
    """A partial config (built-in name, YAML file or mapping) as the dotted ``key=value`` settings it makes, for
    reports: ``distill/quickstart`` -> ``["data.datasets=[...]", "data.cache_views=1", ...]``."""
    if isinstance(config, dict):
        data = config
    else:
        p = Path(config)
        data = read_yaml(p if p.suffix in (".yaml", ".yml") or p.exists() else builtin_config(str(config)))

    def flat(node: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for k, v in node.items():
            if isinstance(v, dict) and v:
                out += flat(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}={_plain(v)}")
        return out

    return flat(data, "")


def _plain(v: Any) -> str:
    """A value as a command-line override writes it: ``[a, b]``, ``true``, ``null``, ``1e-06``."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    return str(v)


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a config (dataclass or mapping) as plain YAML, atomically: the resolved config saved beside every run."""
    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def _field_notes(cls: type) -> dict[str, str]:
    """``field -> trailing comment`` of a dataclass's source lines (the recipe keys' one-line docs)."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            m = re.match(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
            if m:
                notes[m.group(1)] = m.group(2).strip()
    return notes


def describe_config(obj: Any, prefix: str = "") -> list[str]:
    """One line per recipe key: ``dotted.key: value  # what it means`` (nested sections flattened)."""
    lines: list[str] = []
    notes = _field_notes(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            lines += describe_config(value, key + ".")
            continue
        text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1_000_000).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{key}: {text}" + (f"  # {notes[f.name]}" if f.name in notes else ""))
    return lines
