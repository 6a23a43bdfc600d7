"""The plugin written out in a package's README.md, executed as a module of its own, so that the
contract tests parametrized over the registry prove the documented recipe works."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path


def register_readme_example(package: str, name: str) -> None:
    """Run the first Python block of ``<package>/README.md`` (which registers ``name`` by its
    decorator only), once per process."""
    from harness.plugins import registry

    if name in registry(package):
        return
    text = (Path(__file__).parent.parent / package / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    module = sys.modules[f"readme_example_{package}"] = types.ModuleType(f"readme_example_{package}")
    exec(compile(code, f"{package}/README.md", "exec"), module.__dict__)
