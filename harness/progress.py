"""Progress display: a rich bar with the running loss on a terminal, plain log lines otherwise
(where other libraries' progress bars are switched off, so a log holds only the harness's lines)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from functools import partialmethod
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape  # names shown in rich bars are text, never markup
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def quiet_third_party_bars() -> None:
    """Outside a terminal, switch off the progress bars of transformers and huggingface_hub (their
    own switches) and of every other tqdm user (llm-compressor's calibration bars): tqdm reads
    defaults from ``TQDM_*`` variables only when first imported, so its constructor gets
    ``disable=True`` as a default instead (a caller's explicit argument still wins)."""
    if sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by transformers' logging when imported
    # imported after the variable is set: huggingface_hub reads it on its first import
    import huggingface_hub.utils
    from tqdm import tqdm

    huggingface_hub.utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if not getattr(tqdm, "_quiet_by_harness", False):
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)
        tqdm._quiet_by_harness = True


@contextmanager
def training_bar(label: str) -> Iterator[Callable[[int, int, float], None]]:
    """Yields ``on_step(step, total, loss)``."""
    if not sys.stderr.isatty():
        start = time.perf_counter()

        def plain(step: int, total: int, loss: float) -> None:
            if step == 1 or step == total or step % max(1, total // 10) == 0:
                spent = time.perf_counter() - start
                left = f", ~{_minutes(spent / step * (total - step))} left" if step < total else ""
                print(f"{label}: step {step}/{total} loss {loss:.4f} ({_minutes(spent)}{left})",
                      file=sys.stderr, flush=True)

        yield plain
        return

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(escape(label), total=None, loss="-")

        def rich_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        yield rich_step


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f}s"


class RunProgress:
    """The run's display: cells done / total, the current stage and a training loss bar (rich
    on a terminal); one log line per stage event otherwise."""

    def __init__(self, plan, store) -> None:
        self.total = len(plan.of_kind("evaluate"))
        self.done = sum(store.is_complete(s.id) for s in plan.of_kind("evaluate"))
        self.tty = sys.stderr.isatty()
        self._bar = None

    def __enter__(self) -> "RunProgress":
        if self.tty:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True))
            self._bar.__enter__()
            self._cells = self._bar.add_task("cells", total=self.total, completed=self.done, info="")
            self._train = self._bar.add_task("training", total=None, info="", visible=False)
        else:
            self._log(f"run: {self.done} of {self.total} cells already done")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def started(self, stage) -> None:
        if self._bar is not None:
            self._bar.update(self._cells, info=escape(f"{stage.kind} {stage.label}"))
            self._bar.update(self._train, visible=stage.kind == "unlearn", completed=0, total=None, info="")
        else:
            self._log(f"[{self.done}/{self.total}] {stage.kind} {stage.label} ...")

    def finished(self, stage, record: dict) -> None:
        result = record["result"]
        if stage.kind == "evaluate":
            self.done += 1
            m = result["metrics"]
            info = f"KnowMem_f {m['knowmem_f']:.1f} Utility {m['knowmem_r']:.1f} in {result['seconds']:.1f}s"
        else:
            info = f"{result['steps']} steps in {result['seconds']:.1f}s"
        if self._bar is not None:
            self._bar.update(self._cells, completed=self.done, info=escape(info))
            self._bar.update(self._train, visible=False)
        else:
            self._log(f"[{self.done}/{self.total}] done {stage.label}: {info}")

    def failed(self, stage, error: str) -> None:
        self.done += stage.kind == "evaluate"
        self._log(f"FAILED {stage.kind} {stage.label}: {error}")

    def skipped(self, stage, reason: str) -> None:
        self.done += stage.kind == "evaluate"
        if self._bar is not None:
            self._bar.update(self._cells, completed=self.done)
        else:
            self._log(f"skipped {stage.label}: {reason}")

    def on_step(self, stage, step: int, total: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._train, completed=step, total=total, info=f"loss {loss:.4f}",
                             description=escape(f"training {stage.method}/{stage.mode}"))
        elif step == 1 or step == total or step % max(1, total // 5) == 0:
            self._log(f"  {stage.method}/{stage.mode}: step {step}/{total} loss {loss:.4f}")
