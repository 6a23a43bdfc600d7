"""One explicit CPU thread count per process, so the same stage computes the same floats.

Measured on torch 2.13 (CPU wheel, MKL): a process that never calls ``torch.set_num_threads``
and one that calls ``torch.set_num_threads(2)`` on a 2-core machine, where the default is
already 2, train the tiny world's model to different weights (3 epochs: different SHA-256 of the
parameters; 80 epochs: KnowMem_forget 79.1 vs 79.7). Setting it explicitly also sets MKL's own
thread count, which otherwise follows MKL's default. Libraries set it on their own too
(auto_round's weight handler does, and restores it). So a result depended on what else the
process had run before: a stage evaluated after a GPTQ stage, or after a test that changed the
thread count, could differ by a greedy token from the same stage in a fresh process (a resumed
run). Every process that computes results pins the count once (``pin``) and re-pins it after
each stage (``repin``); once set explicitly, the history no longer matters (measured: setting 1
then 2, with work in between, gives the same weights as setting 2).

``HARNESS_THREADS`` chooses the count; the default is torch's own default for the machine.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from harness.errors import HarnessError

_pinned: int | None = None


def requested() -> int | None:
    raw = os.environ.get("HARNESS_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise HarnessError(f"HARNESS_THREADS={raw!r}: give a whole number of threads >= 1, or unset it")
    return int(raw)


def pin() -> int:
    """Set torch's intra-op thread count explicitly, once per process; returns it."""
    global _pinned
    import torch  # lazy here and below: the core stays light to import (`harness ls` imports it)

    if _pinned is None:
        _pinned = requested() or torch.get_num_threads()
    torch.set_num_threads(_pinned)
    return _pinned


def repin() -> None:
    """Undo whatever a library or a stage did to the thread count (no-op when never pinned)."""
    import torch

    if _pinned is not None:  # always: a library may have set MKL's count behind torch's back
        torch.set_num_threads(_pinned)


def pinned() -> int | None:
    return _pinned


@contextlib.contextmanager
def fixed(count: int) -> Iterator[None]:
    """Run a block at exactly ``count`` threads (a build that must be the same on every
    machine), then return to the process's pinned count."""
    import torch

    pin()  # the process's own count is known before the block changes it
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(pin())
