"""MUSE tasks: YAML task declarations, the data loader, the metrics and the tiny MUSE world.

Built-in tasks are the YAML files in ``tasks/configs``. A user's own MUSE-format task is a
YAML file in any folder passed with ``--include-path DIR`` (as in lm-eval); third-party
packages can also register tasks through the ``harness.tasks`` entry-point group (the entry
point names a ``TaskSpec``, or a function returning one).
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.plugins import TASKS, declare_task_folder, load_builtins
from harness.registry import import_target


def include_path(folder: str | Path) -> list[str]:
    """Register every task YAML found in ``folder`` (``--include-path``); returns their names."""
    load_builtins()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HarnessError(f"--include-path {folder}: no such folder; pass a folder holding task YAML files")
    names = declare_task_folder(folder, str(folder))
    if not names:
        raise HarnessError(f"--include-path {folder}: no *.yaml task files in it")
    return names


def prepare_task(task, force: bool = False) -> None:
    """Build a task's data and models if it declares a ``prepare`` function (the tiny world)."""
    if task.prepare:
        import_target(task.prepare)(task, force=force)


def get_task(name: str):
    """Return the ``TaskSpec`` registered as ``name`` (YAML parsed and validated on first use)."""
    # lazy: tasks.spec imports quantizers.calibration, which imports tasks.data and so this package (cycle)
    from tasks.spec import TaskSpec

    load_builtins()
    obj = TASKS.get(name)
    if callable(obj) and not isinstance(obj, TaskSpec):
        obj = obj()
    if isinstance(obj, (str, Path)):
        obj = TaskSpec.from_yaml(obj)
    if not isinstance(obj, TaskSpec):
        raise HarnessError(f"task '{name}' resolved to {type(obj).__name__}, not a TaskSpec")
    return obj
