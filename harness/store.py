"""The artifact store of one run: a folder per completed stage, keyed by the stage's hash.

A stage builds its artifacts in ``stages/.tmp/<id>-<pid>`` and, as its last act, writes
``stage.json`` there and renames the folder to ``stages/<id>`` (an atomic rename), so a stage
folder exists only if complete and a crash leaves at most a temporary folder, cleared on the
next run. A stage that raised leaves ``stages/<id>.failed.json`` and is retried next time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import HarnessError

STAGE_FILE = "stage.json"


def check_replaceable(path: Path, marker: str, writer: str) -> None:
    """Refuse to replace ``path`` unless the harness wrote it: a folder that exists, is not empty
    and lacks ``marker`` (the record ``writer`` leaves in every folder it writes) is the user's,
    and is never deleted, with or without --overwrite."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not (path / marker).is_file():
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


LOCK_FILE = ".lock"


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` (an OS file lock, released even if the process is killed) for a run:
    a second run on the same folder stops in one line naming the process that holds it."""
    import fcntl
    import time

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
        shutil.rmtree(self.stages / ".tmp", ignore_errors=True)

    def run(self, stage_id: str, build: Callable[[Path], dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
        """Run ``build(tmp_folder) -> result`` and commit it; on error record the failure and re-raise."""
        tmp = self.stages / ".tmp" / f"{stage_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        failed = self.stages / f"{stage_id}.failed.json"
        try:
            result = build(tmp)
            record = {**meta, "id": stage_id, "status": "done", "token": uuid.uuid4().hex,
                      "host": socket.gethostname(), "pid": os.getpid(), "result": result}
            write_json(tmp / STAGE_FILE, record)
            final = self.folder(stage_id)
            if final.exists():  # an --overwrite rerun, or a racing worker that finished first
                shutil.rmtree(final)
            os.replace(tmp, final)
            failed.unlink(missing_ok=True)
            return record
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.record_failure(stage_id, meta, f"{type(exc).__name__}: {exc}".splitlines()[0],
                                    traceback.format_exc())
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
