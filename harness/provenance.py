"""Provenance stamped on every result: library versions, git commit, host, command, time."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness import __version__

LIBRARIES = ("torch", "transformers", "peft", "datasets", "tokenizers", "lm_eval", "bitsandbytes",
             "llmcompressor", "compressed-tensors", "rouge-score", "scikit-learn", "numpy", "ray")


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, object]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# libraries whose version can change a stage's numbers (the stage ids hash them, harness/orchestration/plan.py)
RESULT_LIBRARIES = ("torch", "transformers", "peft", "datasets", "tokenizers", "bitsandbytes", "llmcompressor",
                    "compressed-tensors", "rouge-score", "scikit-learn", "numpy")


def runtime_identity() -> dict[str, object]:
    """What the machine contributes to a result: the versions of the libraries that compute it,
    the device and the dtype models are loaded in. Part of every stage id, so a result from
    another machine or another torch is recomputed, not reused."""
    # lazy: the core is light at import (`harness ls` imports it); only a run's plan calls this
    import torch

    from harness.modeling import default_device, default_dtype

    versions = library_versions()
    device = default_device()
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.machine()
    return {"libraries": {k: versions.get(k) for k in RESULT_LIBRARIES}, "device": f"{device}:{name}",
            "dtype": str(default_dtype(device))}


def provenance(**extra: object) -> dict[str, object]:
    return {
        "harness_version": __version__,
        "git": git_commit(),
        "libraries": library_versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "command": sys.argv,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
