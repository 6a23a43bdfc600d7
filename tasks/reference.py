"""Per-task reference values, computed once and cached: AUC_retrain and the target's KnowMem.

* ``auc_retrain``: the task's published ``reference_auc`` if it declares one (MUSE News
  0.4772, Books 0.5393), otherwise the Min-40% AUC of the task's own retrain model.
* ``knowmem_f_target``: KnowMem_forget of the target, the denominator of Knowledge retained.

The cache key covers the task's settings and the model files (size and mtime of a local
folder's files), so a re-prepared model is re-measured.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.modeling import load_model, load_tokenizer
from harness.paths import cache_dir
from harness.provenance import runtime_identity
from harness.store import write_json
from tasks.data import model_stamp
from tasks.evaluate import METRICS_VERSION, raw_metrics
from tasks.spec import TaskSpec


def _cache_file(task: TaskSpec) -> Path:
    stamp = json.dumps([task.eval_identity(), model_stamp(task.target_model), model_stamp(task.retrain_model or ""),
                        METRICS_VERSION, runtime_identity()], sort_keys=True, default=str)
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return cache_dir() / "references" / f"{task.task}-{key}.json"


def task_references(task: TaskSpec, known: dict[str, dict] | None = None,
                    batch_size: int | None = None) -> dict[str, Any]:
    """Reference values for ``task``; ``known`` may hold raw metrics of "target"/"retrain" already run."""
    path = _cache_file(task)
    if path.is_file():
        return json.loads(path.read_text())
    known = dict(known or {})

    def raw(which: str) -> dict:
        if which not in known:
            tok = load_tokenizer(task.tokenizer_path)
            model = load_model(task.model_path(which))
            known[which] = raw_metrics(model, tok, task, batch_size)
            del model
        return known[which]

    refs: dict[str, Any] = {"task": task.task, "knowmem_f_target": raw("target")["knowmem_f"]}
    if task.reference_auc is not None:
        refs.update(auc_retrain=float(task.reference_auc), auc_source="published reference_auc")
    else:
        refs.update(auc_retrain=raw("retrain")["privleak_auc"], auc_source=f"retrain model {task.retrain_model}")
    refs["raw"] = {k: {m: v for m, v in r.items() if m != "logs"} for k, r in known.items()}
    write_json(path, refs)
    return refs
