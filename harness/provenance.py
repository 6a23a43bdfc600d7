"""Provenance stamped on every result: library versions, git commit, host, CPU, command, time."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness import __version__

LIBRARIES = ("torch", "transformers", "peft", "datasets", "tokenizers", "lm_eval", "bitsandbytes",
             "llmcompressor", "compressed-tensors", "auto-round", "gguf", "hqq", "llama_cpp_python", "rouge-score",
             "scikit-learn", "numpy", "ray")
# instruction sets that pick the CPU kernels of torch (oneDNN, MKL) and bitsandbytes: on the same
# code and versions, a GPTQ or nf4 result can differ between CPUs that differ here
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
# the variables that override which kernels torch's vector code and MKL run (docs/design.md: on one
# machine, torch's AVX512 and AVX2 kernels train the tiny world to different models)
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR")


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_identity() -> dict[str, object]:
    """The processor's model name and which of ``CPU_FLAGS`` it has (Linux; elsewhere the platform's
    processor string only)."""
    kernels = cpu_kernels()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or None, "flags": None, "kernels": kernels}
    fields = dict(line.split(":", 1) for line in info.split("\n\n", 1)[0].splitlines() if ":" in line)  # processor 0
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name"), "flags": [f for f in CPU_FLAGS if f in flags], "kernels": kernels}


def cpu_kernels() -> dict[str, object]:
    """The vector instruction set torch's CPU kernels run with, and any variable overriding it or MKL's."""
    import torch

    return {"torch": torch.backends.cpu.get_cpu_capability(),
            **{name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ}}


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
        "cpu": cpu_identity(),
        "command": sys.argv,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
