"""A generic plugin registry, one instance per plugin kind (methods, quantizers, tasks).

Plugins arrive three ways, all ending in the same table:

* ``@REGISTRY.register("name")`` on a class or object (the way a plugin file registers itself);
* ``REGISTRY.add_lazy("name", "module:attr", summary)`` for built-ins, found by reading their
  packages' decorators without importing them (``declared_in``), so that listing them imports
  nothing heavy (the lm-eval ``"module:Class"`` idea);
* third-party packages declaring an entry point in the registry's group
  (``harness.methods``, ``harness.quantizers``, ``harness.tasks``), also resolved lazily.

Duplicate names are rejected; an unknown name raises an error listing the known names and
suggesting the closest one.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import HarnessError
from harness.yamlio import read_text

T = TypeVar("T")


class UnknownPluginError(HarnessError, KeyError):
    """An unknown plugin name; the message lists what exists and the closest match."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DuplicatePluginError(HarnessError):
    """Two plugins claimed the same name in one registry."""


@dataclass
class Entry:
    """One registered plugin: the object itself, or a ``module:attr`` string not imported yet."""

    name: str
    target: Any
    summary: str = ""
    source: str = "builtin"
    loader: str | None = None  # "module:function" turning a lazy target (e.g. a YAML path) into the plugin

    @property
    def loaded(self) -> bool:
        return not isinstance(self.target, str)


def import_target(spec: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def declared_in(folder: Path, package: str, registry_name: str) -> list[tuple[str, str, str]]:
    """``(name, "module:Class", summary)`` for every class in ``folder``'s modules decorated with
    ``@<registry_name>.register("name"[, summary="..."])``, read from the source without importing
    it (so ``harness ls`` needs no torch, and the list cannot drift from the plugins: adding a
    plugin is adding its file). The summary defaults to the class docstring's first line."""
    found = []
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "register" and isinstance(deco.func.value, ast.Name)
                        and deco.func.value.id == registry_name and deco.args
                        and isinstance(deco.args[0], ast.Constant)):
                    continue
                given = {k.arg: k.value.value for k in deco.keywords if isinstance(k.value, ast.Constant)}
                doc = (ast.get_docstring(node) or "").strip().splitlines()
                found.append((deco.args[0].value, f"{package}.{path.stem}:{node.name}",
                              given.get("summary") or (doc[0] if doc else "")))
    return found


def declared_tasks(folder: Path) -> list[tuple[str, str, str]]:
    """``(name, path, description)`` for every task YAML in ``folder``, read line by line (the
    ``task:`` and ``description:`` keys; the file is parsed and validated only when used)."""
    found = []
    for path in sorted(Path(folder).glob("*.yaml")):
        keys: dict[str, str] = {}
        for line in read_text(path, "task YAML").splitlines():
            key, _, value = line.partition(":")
            if key in ("task", "description"):
                keys.setdefault(key, value.strip().strip("\"'"))
        found.append((keys.get("task", path.stem), str(path), keys.get("description", "")))
    return found


def package_folder(package: str) -> Path:
    """Where a top-level package's files are, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(f"package '{package}' is not installed; reinstall the project (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def _name_it(obj: Any, name: str) -> None:
    """Give a plugin class that has a ``name`` attribute but no value of its own the name it is
    registered under (a plugin's name is written once, in its decorator), so its messages say
    which plugin spoke."""
    if isinstance(obj, type) and hasattr(obj, "name") and not obj.__dict__.get("name"):
        obj.name = name


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"


class Registry(Generic[T]):
    """Name -> plugin table for one kind of plugin."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str | None = None, *, summary: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("npo")`` registers the decorated object."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "name", None) or getattr(obj, "__name__")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._add(Entry(key, obj, summary or (doc[0] if doc else ""), getattr(obj, "__module__", "")))
            return obj

        return decorator

    def add(self, name: str, obj: T, summary: str = "", source: str = "") -> T:
        """Register an object directly (for plugins built at run time, e.g. tasks from YAML)."""
        self._add(Entry(name, obj, summary, source))
        return obj

    def add_lazy(
        self, name: str, target: str, summary: str = "", source: str = "builtin", loader: str | None = None
    ) -> None:
        """Register ``name`` as ``"module:attr"`` (or, with ``loader``, any string that loader
        turns into the plugin, such as a YAML path), resolved only when the plugin is used."""
        self._add(Entry(name, target, summary, source, loader))

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None and old.loaded and not entry.loaded and _qualified(old.target) == entry.target:
            old.summary, old.source = entry.summary or old.summary, entry.source  # imported before declared
            return
        if old is not None:
            # A lazy entry being resolved by its own module's decorator is not a duplicate.
            same = not old.loaded and entry.loaded and old.target == _qualified(entry.target)
            if same or old.target is entry.target or (not old.loaded and old.target == entry.target):
                entry.summary = old.summary or entry.summary
                entry.source = old.source
            else:
                where = old.target if isinstance(old.target, str) else _qualified(old.target)
                raise DuplicatePluginError(
                    f"{self.kind} '{entry.name}' is already registered (by {where}); pick another name"
                )
        if entry.loaded:
            _name_it(entry.target, entry.name)
        self._entries[entry.name] = entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- discovery ----------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                dist = getattr(ep.dist, "name", "") if getattr(ep, "dist", None) else ""
                self._entries[ep.name] = Entry(ep.name, ep.value, f"third-party ({ep.value})", dist or "entry point")

    # -- lookup -------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._load_entry_points()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def get(self, name: str) -> T:
        """Return the plugin, importing it on first use."""
        self._load_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPluginError(self.unknown_message(name))
        if not entry.loaded:
            spec = entry.target
            try:
                obj = import_target(entry.loader)(spec) if entry.loader else import_target(spec)
            except (ImportError, AttributeError) as exc:
                raise HarnessError(f"{self.kind} '{name}' could not be loaded from {spec}: {exc}") from exc
            current = self._entries.get(name)
            if current is not None and current.loaded:  # its module registered it on import
                return current.target
            _name_it(obj, name)
            entry.target = obj
        return entry.target

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]}?" if close else ""
        listing = ", ".join(known) if known else "none registered"
        return f"unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {listing}"

    def resolve_selection(self, spec: str | list[str]) -> list[str]:
        """Expand ``"all"`` or ``"a,b"`` into validated names (unknown names raise)."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        items = [s.strip() for s in items if s.strip()]
        if items == ["all"]:
            return self.names()
        if not items:
            raise HarnessError(f"empty {self.kind} selection; name at least one or use 'all'")
        for item in items:
            if item not in self:
                raise UnknownPluginError(self.unknown_message(item))
        return items
