"""Typed settings from untyped YAML/CLI values: one builder for every config dataclass.

Values are checked against the fields' annotations before the dataclass is built, so
``--set epochs=abc`` or ``generation: {batch_size: abc}`` is a one-line error naming the key
and the type it needs, never a ValueError from deep inside a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from harness.errors import HarnessError

_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
          list: "a list", tuple: "a list", dict: "a mapping", type(None): "null"}


def _accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (the shapes configs use; others pass)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, set):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    if isinstance(hint, type):
        return isinstance(value, hint) or (dataclasses.is_dataclass(hint) and isinstance(value, dict))
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    return _NAMES.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """One-line error for the first value that does not fit its field's annotation."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: leave the check to the class
        return
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not _accepts(value, hint):
            raise HarnessError(f"{where}: {key} must be {_describe(hint)}, got {value!r}")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass; unknown keys and bad values are one-line errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    check_types(cls, values, where)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{where}: {exc}") from exc


def require_positive(cfg: Any, *names: str, minimum: int = 1) -> None:
    """One-line error unless every named field of ``cfg`` is a whole number >= ``minimum`` (the
    check every config with counts or sizes needs, written once)."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise HarnessError(f"{name} must be {what}, got {value!r}")
