"""The generic registry: decorators, duplicates, lazy built-ins, entry points, suggestions."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness.errors import HarnessError
from harness.registry import DuplicatePluginError, Registry, UnknownPluginError


def test_decorator_registration_and_lookup():
    reg = Registry("method")

    @reg.register("npo_gdr")
    class NpoGdr:
        """NPO with a retain loss."""

    assert reg.get("npo_gdr") is NpoGdr
    assert reg.entries()[0].summary == "NPO with a retain loss."


def test_duplicate_names_rejected():
    reg = Registry("method")
    reg.register("ga")(type("A", (), {}))
    with pytest.raises(DuplicatePluginError, match="already registered"):
        reg.register("ga")(type("B", (), {}))


def test_unknown_name_suggests_closest():
    reg = Registry("method")
    for name in ("ga", "npo", "npo_gdr", "npo_klr"):
        reg.add(name, object())
    with pytest.raises(UnknownPluginError) as info:
        reg.get("npo_gd")
    msg = str(info.value)
    assert "Did you mean npo_gdr?" in msg and "ga, npo, npo_gdr, npo_klr" in msg
    assert isinstance(info.value, HarnessError)


def test_lazy_entry_imported_on_use_only():
    reg = Registry("thing")
    reg.add_lazy("od", "collections:OrderedDict", "ordered dict")
    assert not reg.entries()[0].loaded
    import collections

    assert reg.get("od") is collections.OrderedDict


def test_selection_all_and_errors():
    reg = Registry("quantizer")
    for name in ("rtn4", "nf4"):
        reg.add(name, object())
    assert reg.resolve_selection("all") == ["nf4", "rtn4"]
    assert reg.resolve_selection("rtn4, nf4") == ["rtn4", "nf4"]
    with pytest.raises(HarnessError, match="empty"):
        reg.resolve_selection(" , ")
    with pytest.raises(UnknownPluginError, match="Did you mean rtn4"):
        reg.resolve_selection("rtn3")


def test_entry_point_discovery(monkeypatch):
    ep = SimpleNamespace(name="my_method", value="collections:Counter", dist=SimpleNamespace(name="my-pkg"))
    monkeypatch.setattr("harness.registry.metadata.entry_points", lambda group: [ep] if group == "harness.methods" else [])
    reg = Registry("method", "harness.methods")
    assert "my_method" in reg.names()
    import collections

    assert reg.get("my_method") is collections.Counter
    assert reg.entries()[0].source == "my-pkg"


def test_ls_imports_nothing_heavy():
    code = ("import sys; from harness.orchestration.cli import main; main(['ls']); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "muse_tiny" in result.stdout and "muse_news" in result.stdout


def test_built_ins_are_what_their_files_register_and_nothing_is_written_twice():
    """The lazy listing is read from the decorators, so it cannot drift from the plugins: each
    listed target, imported, is the class registered under that name, and that class knows
    its name without declaring it again."""
    import re
    from pathlib import Path

    from harness.plugins import registry
    from harness.registry import import_target

    root = Path(__file__).parent.parent
    for kind in ("methods", "quantizers"):
        reg = registry(kind)
        builtins = [e for e in reg.entries() if e.source == "builtin"]
        assert len(builtins) >= 9
        for entry in builtins:
            target = entry.target if isinstance(entry.target, str) else None
            cls = reg.get(entry.name)
            if target:
                assert import_target(target) is cls
            assert cls.name == entry.name and entry.summary
        for path in (root / kind).glob("*.py"):
            assert not re.search(r'^    name = "', path.read_text(), re.M), f"{path} writes a plugin's name twice"
