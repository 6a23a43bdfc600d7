"""The artifact store of one run: a folder per completed stage, keyed by the stage's hash.

A stage builds its artifacts in a hidden temporary sibling (``folder_aside``, the one way the
harness writes any folder) and, as its last act, writes ``stage.json`` there and renames the
folder to ``stages/<id>`` (an atomic rename), so a stage folder exists only if complete and a
crash leaves at most a temporary folder, cleared on the next run. A stage that raised leaves ``stages/<id>.failed.json`` and is retried next time.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import time
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import HarnessError

STAGE_FILE = "stage.json"


def check_replaceable(path: Path, marker: str, writer: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to replace ``path`` unless the harness wrote it: a folder that exists, holds
    anything but ``ignore`` and lacks ``marker`` (the record ``writer`` leaves in every folder it
    writes) is the user's, and is never deleted, with or without --overwrite."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{path} is a file; pass a folder")
    if path.exists() and any(p.name not in ignore for p in path.iterdir()) and not (path / marker).is_file():
        raise HarnessError(f"{path} exists and was not written by {writer} (it has no {marker}); "
                           f"move it away or choose another folder")


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def to_json(data: Any, indent: int | None = 2) -> str:
    """JSON that strict parsers and browsers accept: NaN and infinities become null (Python's
    json writes the invalid tokens NaN / Infinity); other objects are written as strings."""
    return json.dumps(_finite(data), indent=indent, default=str, allow_nan=False)


def temporary(path: Path) -> Path:
    """A sibling name for building ``path`` aside, unique to this process and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_text(path: Path, text: str) -> None:
    """The one atomic file write of the harness: a process-unique temporary file, flushed to
    disk (fsync), then renamed over ``path``, so a reader or a crash sees the old file or the
    new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (``write_text``), NaN-free (``to_json``)."""
    write_text(path, to_json(data))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clear_dead_temporaries(folder: Path, name: str = "*") -> None:
    """Remove the temporaries (``temporary``) in ``folder`` left by processes that died; a
    temporary of a living process (a concurrent writer) is left alone."""
    for leftover in Path(folder).glob(f".{name}.tmp-*"):
        pid = leftover.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself reaches the disk
    finally:
        os.close(fd)


@contextmanager
def folder_aside(final: Path) -> Iterator[Path]:
    """The one way the harness writes a folder: yield a process-unique hidden sibling
    (``temporary``) to build in; when the block ends without error, rename it to ``final`` as
    the last act (an existing ``final`` is renamed away first and then deleted, so ``final`` is
    at every moment the old folder, the new one, or briefly absent, never half of one). On an
    error nothing of the new folder is left. Callers check ``check_replaceable`` before, and
    write their record file (``write_json``, fsync'd) last inside the block, so a folder without
    its record is never mistaken for a finished one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_dead_temporaries(final.parent, final.name)
    tmp = temporary(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(built: Path, final: Path) -> None:
    """Rename the finished folder ``built`` to ``final`` (a sibling): an existing ``final`` is
    renamed away first and deleted after, and the renames are flushed to disk."""
    final = Path(final)
    old = temporary(final) if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(built, final)
    _fsync_folder(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


LOCK_FILE = ".lock"


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` (an OS file lock, released even if the process is killed) for a run:
    a second run on the same folder stops in one line naming the process that holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise HarnessError(f"{root} is in use by {holder}; wait for that run to end, or pass another --out") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.stages = self.root / "stages"

    def folder(self, stage_id: str) -> Path:
        return self.stages / stage_id

    def is_complete(self, stage_id: str) -> bool:
        """A committed stage whose record reads back (a file emptied by a crash is not done)."""
        try:
            return self.record(stage_id).get("status") == "done"
        except (OSError, ValueError, AttributeError):
            return False

    def record(self, stage_id: str) -> dict[str, Any]:
        return json.loads((self.folder(stage_id) / STAGE_FILE).read_text())

    def failure(self, stage_id: str) -> dict[str, Any] | None:
        path = self.stages / f"{stage_id}.failed.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def record_failure(self, stage_id: str, meta: dict[str, Any], error: str, trace: str = "") -> None:
        """Leave ``<id>.failed.json`` (read into the results rows); the stage is retried next run."""
        write_json(self.stages / f"{stage_id}.failed.json",
                   {**meta, "id": stage_id, "status": "failed", "error": error, "traceback": trace})

    def clear_temporary(self) -> None:
        """Called under the run's lock: temporaries of dead processes go (a Ray worker of this
        run may still be alive, and keeps its own)."""
        shutil.rmtree(self.stages / ".tmp", ignore_errors=True)  # the layout before folder_aside
        if self.stages.is_dir():
            clear_dead_temporaries(self.stages)

    def run(self, stage_id: str, build: Callable[[Path], dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
        """Run ``build(tmp_folder) -> result`` and commit it; on error record the failure and re-raise."""
        failed = self.stages / f"{stage_id}.failed.json"
        try:
            # an --overwrite rerun, or a racing worker that finished first, is replaced whole
            with folder_aside(self.folder(stage_id)) as tmp:
                result = build(tmp)
                record = {**meta, "id": stage_id, "status": "done", "token": uuid.uuid4().hex,
                          "host": socket.gethostname(), "pid": os.getpid(), "result": result}
                write_json(tmp / STAGE_FILE, record)
            failed.unlink(missing_ok=True)
            return record
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.record_failure(stage_id, meta, f"{type(exc).__name__}: {exc}".splitlines()[0],
                                    traceback.format_exc())
            raise
