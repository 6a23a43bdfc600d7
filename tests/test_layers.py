"""The layers stay visible: the project's import graph (every import, at the top of a file or
inside a function, read from the source) has no cycle, and the core that plugins build on
imports no plugin package, and nothing but the leaderboard (which renders a run folder) imports
the orchestration that sits on top. A package's own ``__init__`` runs before its modules whatever
they import, so a module importing its parent package is not counted as an edge."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "methods", "quantizers", "leaderboard")
PLUGINS = ("tasks", "methods", "quantizers", "leaderboard")
# what plugins import from the harness: errors, settings, registries, paths, the cache's
# atomic writes, provenance, progress lines, thread pinning and the shared tensor helpers
CORE = ("harness.errors", "harness.config", "harness.registry", "harness.plugins", "harness.paths",
        "harness.yamlio", "harness.store", "harness.provenance", "harness.progress", "harness.threads",
        "harness.tensors")
ORCHESTRATION = "harness.orchestration"
# the leaderboard renders a run folder: it reads the orchestration's results rows
READS_RUNS = ("leaderboard",)
ENTRY_POINT = "harness.__main__"  # python -m harness: the command line itself


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            else:
                continue
            for target in filter(None, map(resolve, names)):
                if target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root), on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_plugin_package():
    graph = import_graph()
    assert set(CORE) <= set(graph)
    leaks = {m: sorted(t for t in graph[m] if t.split(".")[0] in PLUGINS) for m in CORE}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_nothing_below_the_orchestration_imports_it():
    graph = import_graph()
    assert any(m.startswith(ORCHESTRATION + ".") for m in graph)
    below = {m: sorted(t for t in targets if t.startswith(ORCHESTRATION)) for m, targets in graph.items()
             if not m.startswith(ORCHESTRATION) and m.split(".")[0] not in READS_RUNS and m != ENTRY_POINT}
    assert {m: t for m, t in below.items() if t} == {}
