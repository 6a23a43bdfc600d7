"""Typed settings from untyped YAML/CLI values: one builder for every config dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.errors import HarnessError


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass; unknown keys and bad values are one-line errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise HarnessError(f"{where}: {exc}") from exc
