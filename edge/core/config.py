"""YAML configuration loaded into frozen dataclasses, validated once at start.

Every component declares its settings as a frozen dataclass; this module turns a YAML mapping
into that dataclass and rejects unknown keys, wrong types and out-of-range values with one
line naming the file, the key path, what was expected and what was found, e.g.::

    config.yaml: camera.exposure_us: expected a number in [1, 1e+06], got -5

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``typing.Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` and nested dataclasses.
Ranges are declared with :func:`setting` (``field(metadata={"range": (lo, hi)})``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from edge.errors import ConfigError

__all__ = ["setting", "from_mapping", "load_yaml", "load_config", "to_mapping"]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, range: tuple[float, float] | None = None,  # noqa: A002
            default_factory: Any = _MISSING, doc: str = "") -> Any:
    """Declare a config field with an optional inclusive numeric ``range`` and a doc string."""
    meta = {"range": range, "doc": doc}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} items"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Fail(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def _convert(tp: Any, value: Any, path: str, rng: tuple[float, float] | None) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, rng)
            except _Fail as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _Fail(path, f"expected {_describe(tp)}, got {_got(value)}")
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Fail(path, f"expected {_describe(tp)}, got {_got(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Fail(path, f"expected {_describe(tp)}, got {_got(value)}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]", rng) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Fail(path, f"expected {_describe(tp)}, got {len(value)} items")
        return tuple(_convert(a, v, f"{path}[{i}]", rng) for i, (a, v) in
                     enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Fail(path, f"expected a mapping, got {_got(value)}")
        _, vt = get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Fail(path, f"expected string keys, got {_got(k)}")
            out[k] = _convert(vt, v, f"{path}.{k}", rng)
        return types.MappingProxyType(out)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Fail(path, f"expected true or false, got {_got(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Fail(path, f"expected an integer{_range_text(rng)}, got {_got(value)}")
        _check_range(value, rng, path, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Fail(path, f"expected a number{_range_text(rng)}, got {_got(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise _Fail(path, f"expected a finite number, got {_got(value)}")
        _check_range(value, rng, path, "a number")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _Fail(path, f"expected a string, got {_got(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field type {tp!r} at {path} is not supported")  # programming error


def _range_text(rng: tuple[float, float] | None) -> str:
    return "" if rng is None else f" in [{rng[0]:g}, {rng[1]:g}]"


def _check_range(value: float, rng: tuple[float, float] | None, path: str, kind: str) -> None:
    if rng is not None and not (rng[0] <= value <= rng[1]):
        raise _Fail(path, f"expected {kind}{_range_text(rng)}, got {_got(value)}")


def _build(cls: type[T], data: Any, path: str) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Fail(path or "<top>", f"expected a mapping, got {_got(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        key = unknown[0]
        where = f"{path}.{key}" if path else str(key)
        raise _Fail(where, f"unknown key; allowed keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub, f.metadata.get("range"))
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise _Fail(sub, f"missing required key ({_describe(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # cross-field checks in __post_init__
        raise _Fail(path or "<top>", str(exc)) from None


def from_mapping(cls: type[T], data: Any, *, source: str = "<config>", path: str = "") -> T:
    """Build the dataclass ``cls`` from a plain mapping, validating every key.

    Parameters
    ----------
    cls : dataclass type
        The (frozen) settings class.
    data : mapping or None
        Parsed YAML; ``None`` means all defaults.
    source : str
        Where the data came from (a file name), used in error messages.
    path : str
        Key path prefix of ``data`` inside the source.

    Raises
    ------
    ConfigError
        ``"<source>: <key.path>: <what was expected>, got <what was found>"``.
    """
    try:
        return _build(cls, data, path)
    except _Fail as exc:
        raise ConfigError(f"{source}: {exc.path}: {exc.message}") from None


def load_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file safely (no code execution), with one-line errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None


def load_config(cls: type[T], path: str | os.PathLike | None) -> T:
    """Load the YAML file at ``path`` into ``cls`` (all defaults when ``path`` is None)."""
    if path is None:
        return from_mapping(cls, {}, source="<defaults>")
    return from_mapping(cls, load_yaml(path), source=str(path))


def to_mapping(obj: Any) -> Any:
    """Turn a config dataclass back into plain YAML-able data (for logs and metrics)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


