"""Stage configs: dataclasses with working defaults, overridden by YAML and `--set a.b=value`.

Every stage describes its options as a (possibly nested) dataclass so that defaults live in
one place, a run can be reproduced from the saved YAML, and the command line, a config file
and tests all reach the same fields. Fields marked ``secret(...)`` never reach a log or a
saved file.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facesift.common.atomic import atomic_write_text

T = TypeVar("T")
REDACTED = "***"


def secret(default: Any = None) -> Any:
    """A dataclass field whose value is redacted whenever the config is shown or saved."""
    return dataclasses.field(default=default, metadata={"secret": True})


def bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A numeric field that must lie in [lo, hi] (either end open when None).

    Checked when the config is resolved, so a bad value stops the command (exit 2) before any
    work starts, instead of a batch of zero dividing by itself an hour in. NaN never passes.
    """
    return dataclasses.field(default=default, metadata={"range": (lo, hi)})


def bounded_list(default: list, lo: float | None = None, hi: float | None = None) -> Any:
    """A list field whose every element must lie in [lo, hi]; must not be empty."""
    return dataclasses.field(default_factory=lambda: list(default), metadata={"range": (lo, hi), "nonempty": True})


def check_range(value: Any, lo: float | None, hi: float | None, where: str) -> None:
    """The check `bounded` fields get; for values a config cannot declare (a CLI-only flag)."""
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError(f"{where}: NaN is not a value")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            span = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                    else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
            raise ValueError(f"{where}: {v!r} is out of range (must be {span})")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The two options every stage accepts."""
    parser.add_argument("--config", type=Path, help="YAML file with overrides (a stage section or flat keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field, e.g. --set model.arch=resnet50 (repeatable)")


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


@dataclasses.dataclass(frozen=True)
class _CliValue:
    """A `--set` value: YAML-parsed for typed fields, verbatim for string fields ("0123" stays "0123")."""
    raw: str
    parsed: Any


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML/CLI value into the field's declared type, with an error that names the field."""
    tp = _strip_optional(tp)
    if isinstance(value, _CliValue):
        value = value.raw if tp in (str, Path) and value.parsed is not None else value.parsed
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # "2e3" from YAML, 4.0 from arithmetic
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                number = float(str(value).strip())  # "12", "2e3"; "1.5" is refused, not rounded
            except ValueError:
                number = math.nan
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError(f"{where}: expected a whole number, got {value!r}")
            return int(number)
        return value
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected float, got {value!r}") from None
    if tp is str:
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _build(cls: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; "
                         f"known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nonempty") and f.name in kwargs and not kwargs[f.name]:
            raise ValueError(f"{f'{where}.' if where else ''}{f.name}: needs at least one value")
        if "range" in f.metadata and f.name in kwargs:
            check_range(kwargs[f.name], *f.metadata["range"], f"{where}.{f.name}" if where else f.name)
    return cls(**kwargs)


def to_dict(cfg: Any, redact: bool = True) -> dict:
    """Plain dict of a config tree, secrets replaced by '***' unless redact=False."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value, redact)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        if redact and f.metadata.get("secret") and value:
            value = REDACTED
        out[f.name] = value
    return out


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def parse_override(text: str) -> tuple[list[str], _CliValue]:
    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), _CliValue(raw, value)


def resolve(cls: type[T], config_file: str | Path | None = None, overrides: list[str] | None = None,
            section: str | None = None, **fields: Any) -> T:
    """Defaults <- YAML file <- explicit keyword fields (CLI flags) <- `--set` overrides.

    A YAML file may hold one stage's keys at top level or several stages under their section
    names (``crawl:``, ``pretrain:`` ...), so one file can configure a whole pipeline.
    `--set` keys may be prefixed with the section name (``--set crawl.rate=100``).
    """
    data: dict[str, Any] = to_dict(cls(), redact=False)
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping at top level")
        if section and section in loaded and section not in data:
            loaded = loaded[section]
        data = _merge(data, loaded)
    data = _merge(data, {k: v for k, v in fields.items() if v is not None})
    for text in overrides or []:
        path, value = parse_override(text)
        if section and path[0] == section and section not in data and len(path) > 1:
            path = path[1:]
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {text}: {part!r} is not a config section")
            node = node[part]
        if path[-1] not in node:
            raise ValueError(f"--set {text}: unknown key {'.'.join(path)!r}")
        node[path[-1]] = value
    return _build(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config beside a stage's outputs (secrets redacted), atomically."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg, redact=True), sort_keys=False))
    return path


def env_or(value: str | None, *names: str) -> str | None:
    """A value from config, else the first set environment variable of `names`."""
    if value:
        return value
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None
