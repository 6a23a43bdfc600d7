"""Progress display: a rich bar with the running loss on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def training_bar(label: str) -> Iterator[Callable[[int, int, float], None]]:
    """Yields ``on_step(step, total, loss)``."""
    if not sys.stderr.isatty():
        def plain(step: int, total: int, loss: float) -> None:
            if step == 1 or step == total or step % max(1, total // 10) == 0:
                print(f"{label}: step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(label, total=None, loss="-")

        def rich_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        yield rich_step
