"""YAML configuration loaded into frozen dataclasses, validated once at start.

Every component declares its settings as a frozen dataclass; this module turns a YAML mapping
into that dataclass and rejects unknown keys, wrong types and out-of-range values with one
line naming the file, the key path, what was expected and what was found, e.g.::

    config.yaml: camera.exposure_us: expected a number in [1, 1e+06], got -5

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``typing.Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` and nested dataclasses.
Ranges are declared with :func:`setting` (``field(metadata={"range": (lo, hi)})``).

:func:`load_yaml` is the one YAML reader of every hsi-edge file (configs, model cards,
calibration records): safe (no code execution), it refuses duplicate keys (YAML would silently
keep the last one) and nesting deeper than :data:`MAX_DEPTH`, and its errors name the file, line
and column but never echo the file's contents (a path pointed at the wrong file must not print
that file).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from edge.errors import ConfigError

__all__ = ["setting", "from_mapping", "load_yaml", "load_config", "to_mapping", "MAX_DEPTH"]

#: Deepest nesting of lists/mappings accepted in a YAML file (real files use fewer than 10).
MAX_DEPTH = 64

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
        # at the top level the "value" is the whole file: name its type, never its contents
        got = _got(data) if path else f"a {type(data).__name__} (is it the right file?)"
        raise _Fail(path or "<top>", f"expected a mapping, got {got}")
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


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any, first: Any):
        super().__init__()
        self.problem = (f"duplicate key {_got(key)} (first at line {first.line + 1}); each "
                        f"key may appear once")
        self.problem_mark = mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (merge keys ``<<`` allowed)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark, seen[key])
                    seen[key] = key_node.start_mark
                except TypeError:           # unhashable key: SafeLoader reports it
                    pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads ``1e3`` and ``1e+06`` as strings: its float pattern wants a dot.
# Messages print ranges that way ("expected a number in [10, 1e+06]"), so a user who writes
# what the message says must be understood: exponent floats as in YAML 1.2.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _depth(data: Any) -> int:
    """Nesting depth of lists/mappings (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def load_yaml(path: str | os.PathLike, *, what: str = "config file") -> Any:
    """Read a YAML file safely (no code execution), with one-line errors.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for messages (``"model card"``, ``"calibration record"``).

    Raises
    ------
    ConfigError
        Missing or unreadable file, invalid YAML, a duplicate key or nesting deeper than
        :data:`MAX_DEPTH` -- with file, line and column where known, never file contents.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: cannot read {what}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    too_deep = ConfigError(f"{p}: not valid as a {what}: lists/mappings nested deeper than "
                           f"{MAX_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise too_deep from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    if _depth(data) > MAX_DEPTH:
        raise too_deep
    return data


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


