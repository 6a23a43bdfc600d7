"""Where the harness keeps its cache (prepared tiny world, reference evaluations).

``HARNESS_CACHE`` overrides the default ``~/.cache/quant-unlearn-harness``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("HARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quant-unlearn-harness"
    )
    return Path(root).expanduser()
