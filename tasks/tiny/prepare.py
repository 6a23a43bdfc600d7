"""Build the tiny MUSE world into the cache: dataset folder, tokenizer, target and retrain models.

Deterministic (fixed seeds, a fixed thread count) and cached: a second call returns at once.
Everything is built aside and renamed into place as the last act (``harness.store.folder_aside``),
so an interrupted prepare leaves nothing half-written behind.

    harness prepare muse_tiny            # ~1-2 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from harness import threads
from harness.paths import cache_dir
from harness.provenance import provenance
from harness.store import check_replaceable, folder_aside, write_json
from tasks.data import write_muse_folder
from tasks.tiny.train import TinyModelConfig, build_model, fit, train_tokenizer
from tasks.tiny.world import muse_splits

WORLD_VERSION = 4  # bump when the generator or training changes, to rebuild caches
SEED = 0
# The world is trained at exactly this many torch threads on every machine (float sums depend
# on it; harness/threads.py): the same target and retrain whenever one machine builds it. Another
# CPU's kernels build another world (docs/design.md, "Another CPU, another world").
BUILD_THREADS = 2
TRAIN_CONFIG = TinyModelConfig(epochs=80, lr=3e-3, seed=SEED)


def is_prepared(root: Path) -> bool:
    stamp = root / "prepare.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("world_version") == WORLD_VERSION


def prepare(task=None, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build (or reuse) the tiny world; ``task`` is its TaskSpec (its dataset's parent is the root)."""
    root = Path(task.dataset).parent if task is not None else cache_dir() / "muse_tiny"
    if is_prepared(root) and not force:
        return root
    check_replaceable(root, "prepare.json", "harness prepare")  # e.g. a user task's own data folder
    with folder_aside(root) as tmp:
        _build(tmp, log)
    return root


def _build(tmp: Path, log: Callable[[str], None]) -> None:
    t0 = time.perf_counter()
    splits = muse_splits(SEED)
    write_muse_folder(tmp / "data", splits)
    log(f"tiny world written: {sum(len(v) for c in splits.values() for v in c.values())} rows in the MUSE layout")

    raw = splits["raw"]
    retain = [r["text"] for s in ("retain1", "retain2") for r in raw[s]]
    forget = [r["text"] for r in raw["forget"]]
    # The tokenizer sees retain text only: trained on forget text too, it would give forget
    # names whole-word tokens and holdout names fragments, so even a model that never saw the
    # forget set would find forget text likelier than holdout text (a PrivLeak artefact).
    tokenizer = train_tokenizer(retain)
    torch.manual_seed(SEED)
    logs = {}
    for name, texts in (("target", forget + retain), ("retrain", retain)):
        model = build_model(tokenizer, TRAIN_CONFIG)
        with threads.fixed(BUILD_THREADS):
            logs[name] = fit(model, tokenizer, texts, TRAIN_CONFIG)
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
        log(f"{name}: {logs[name]['documents']} documents, final loss {logs[name]['epoch_losses'][-1]:.4f}, "
            f"{logs[name]['seconds']:.0f}s")
    stamp = {"world_version": WORLD_VERSION, "seed": SEED, "threads": BUILD_THREADS, "training": logs,
             "seconds": round(time.perf_counter() - t0, 1), "provenance": provenance()}
    write_json(tmp / "prepare.json", stamp)
