"""Unlearning methods, one small file per family, registered by name in ``harness.plugins.METHODS``.

A method is one file here: its class carries ``@METHODS.register("name", summary=...)``, and
``declare_builtins`` finds it by reading the decorators (``harness.registry.declared_in``),
so ``harness ls methods`` lists it without importing torch. Adding a method: see README.md here.
"""

from __future__ import annotations

from pathlib import Path


def declare_builtins(registry) -> None:
    from harness.registry import declared_in

    for name, target, summary in declared_in(Path(__file__).parent, __name__, "METHODS"):
        registry.add_lazy(name, target, summary)
