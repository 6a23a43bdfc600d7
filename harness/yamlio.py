"""YAML as users write it, for every file and ``--set`` value the harness reads.

Written by hand because PyYAML (the YAML 1.1 schema) needs a dot in a float, so ``lr: 1e-4`` or
``--set lr=5e-4`` load as the *string* '1e-4' and fail later inside training; YAML 1.2 (and every
user) reads them as numbers. The loader below is PyYAML's safe loader plus YAML 1.2's exponent
form of a float. Files must be UTF-8; anything else is a one-line error naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError


class _Loader(yaml.SafeLoader):
    """The safe loader with ``1e-4``, ``5E+3``, ``-2e-5`` resolved as floats."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def parse(text: str, where: str) -> Any:
    """The YAML document in ``text``; a syntax error is one line naming ``where``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a subclass of SafeLoader)
    except yaml.YAMLError as exc:
        raise HarnessError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc


def read_text(path: str | Path, what: str = "file") -> str:
    """A text file as UTF-8; a missing file, a folder or other bytes are one line naming it."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"{path}: is a folder, not a {what}")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise HarnessError(f"{path}: no such {what}") from exc
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from exc


def load_file(path: str | Path, what: str = "YAML file") -> Any:
    return parse(read_text(path, what), str(path))
