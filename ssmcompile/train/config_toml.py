"""TOML and dict overlays onto the training config dataclasses, type-checked field by field.

Unknown keys and wrongly typed values are ``ConfigError`` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig
from .config_limits import show
from .schedule import ScheduleError

# Any real config is a few hundred bytes; reading a huge file whole only to reject it would let
# one file cost unbounded memory and time.
MAX_CONFIG_BYTES = 1 << 20


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """``value`` converted to ``annotation`` (int → float, list → tuple), else ConfigError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {annotation}, got {show(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check_type(v, a, where) for v, a in zip(value, args, strict=True))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {show(value)} is too large for a float") from None
    if annotation in (int, float, str, bool) and (
        type(value) is annotation or (annotation is float and type(value) is float)
    ):
        return value
    raise ConfigError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, "
                      f"got {show(value)}")


def overlay(cls: type, base: Any, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {show(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} "
                          f"(known: {', '.join(sorted(names))})")
    changes = {}
    for key, value in data.items():
        annotation, where = hints[key], prefix + key
        if dataclasses.is_dataclass(annotation):
            changes[key] = overlay(annotation, getattr(base, key), value, where + ".")
        else:
            changes[key] = _check_type(value, annotation, where)
    try:
        return dataclasses.replace(base, **changes)
    except ScheduleError as err:
        raise ConfigError(f"{prefix.rstrip('.')}: {err}") from None


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """A TrainConfig from a TOML file (see the module docstring)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError("TOML config files need Python >= 3.11 (tomllib)") from None
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory: {p}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {p}: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: a config file is at most {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{p}: invalid TOML: nested too deeply") from None
    except ValueError as err:  # tomllib's own int() of a number too long to convert
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    return TrainConfig.from_dict(data)


__all__ = ["overlay", "load_config"]
