"""The three plugin registries, and the import of their built-in plugins.

Built-in methods and quantizers are declared lazily in their packages' ``__init__`` (name ->
``"module:Class"``), so ``harness ls`` imports no torch. Tasks are YAML files, read on demand.
"""

from __future__ import annotations

from harness.registry import Registry

METHODS: Registry = Registry("method", "harness.methods")
QUANTIZERS: Registry = Registry("quantizer", "harness.quantizers")
TASKS: Registry = Registry("task", "harness.tasks")

_builtins_loaded = False


def load_builtins() -> None:
    """Declare the built-in plugins (cheap: no plugin module is imported)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import methods
    import quantizers
    import tasks

    methods.declare_builtins(METHODS)
    quantizers.declare_builtins(QUANTIZERS)
    tasks.declare_builtins(TASKS)


def registry(kind: str) -> Registry:
    load_builtins()
    table = {"methods": METHODS, "quantizers": QUANTIZERS, "tasks": TASKS}
    if kind not in table:
        raise KeyError(kind)
    return table[kind]
