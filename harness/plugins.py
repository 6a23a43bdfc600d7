"""The three plugin registries, and the declaration of their built-in plugins.

Built-ins are declared by reading files, not importing them: methods and quantizers by their
``@REGISTRY.register(...)`` decorators (``registry.declared_in``), tasks by their YAML files in
``tasks/configs`` (``registry.declared_tasks``). Each becomes a lazy entry (name ->
``"module:Class"``) imported on first use, so ``harness ls`` imports no torch, and this core
imports no plugin package (tests/test_layers.py).
"""

from __future__ import annotations

from harness.registry import Registry, declared_in, declared_tasks, package_folder

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
    for registry_, package, name in ((METHODS, "methods", "METHODS"), (QUANTIZERS, "quantizers", "QUANTIZERS")):
        for plugin, target, summary in declared_in(package_folder(package), package, name):
            registry_.add_lazy(plugin, target, summary)
    declare_task_folder(package_folder("tasks") / "configs", "builtin")


def declare_task_folder(folder, source: str) -> list[str]:
    """Register every task YAML in ``folder`` (lazily: parsed on first use); returns their names."""
    names = []
    for name, path, summary in declared_tasks(folder):
        TASKS.add_lazy(name, path, summary, source, loader="tasks.spec:TaskSpec.from_yaml")
        names.append(name)
    return names


def registry(kind: str) -> Registry:
    load_builtins()
    table = {"methods": METHODS, "quantizers": QUANTIZERS, "tasks": TASKS}
    if kind not in table:
        raise KeyError(kind)
    return table[kind]
