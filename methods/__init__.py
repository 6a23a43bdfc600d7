"""Unlearning methods, one small file each, registered by name in ``harness.plugins.METHODS``.

``BUILTINS`` maps each built-in name to its ``"module:Class"`` and a one-line summary, so that
``harness ls methods`` lists them without importing torch.
"""

from __future__ import annotations

BUILTINS: dict[str, tuple[str, str]] = {}


def declare_builtins(registry) -> None:
    for name, (target, summary) in BUILTINS.items():
        registry.add_lazy(name, target, summary)
