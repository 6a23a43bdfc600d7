"""lm-eval (0.4.13) hooks for the MUSE KnowMem / VerbMem tasks in this folder.

Everything is delegated to the harness (``tasks.data.load_split``, ``tasks.metrics``) so that
lm-eval and ``tasks.evaluate.raw_metrics`` score the same prompts the same way; the parity
test (``tests/test_lm_eval_parity.py``) checks that they agree to 1e-6.
"""

from __future__ import annotations

from functools import lru_cache

import datasets

from harness.modeling import load_tokenizer
from tasks import get_task
from tasks import metrics as M
from tasks.data import load_split
from tasks.evaluate import verbmem_ground_truth


@lru_cache(maxsize=None)
def _spec(muse_task: str):
    return get_task(muse_task)


@lru_cache(maxsize=None)
def _tokenizer(path: str):
    return load_tokenizer(path)


def knowmem_dataset(muse_task: str, muse_split: str, **_metadata) -> dict[str, datasets.Dataset]:
    """KnowMem QA of ``muse_split`` (forget / retain), each prompt led by ALL its ICL pairs.

    lm-eval calls this as ``fn(**metadata, **dataset_kwargs)``; metadata (version, model
    args, config_source) is not needed here.
    """
    spec = _spec(muse_task)
    icl = [(r["question"], r["answer"]) for r in load_split(spec.dataset, "knowmem", f"{muse_split}_qa_icl")]
    rows = [
        {"muse_task": muse_task, "question": r["question"], "answer": r["answer"],
         "prompt": M.knowmem_prompt(icl, r["question"])}
        for r in load_split(spec.dataset, "knowmem", f"{muse_split}_qa")
    ]
    return {"test": datasets.Dataset.from_list(rows)}


def verbmem_dataset(muse_task: str, muse_split: str = "forget", **_metadata) -> dict[str, datasets.Dataset]:
    """VerbMem prompts with the reference cut as MUSE cuts it (``tasks.evaluate.verbmem_ground_truth``)."""
    spec = _spec(muse_task)
    tok = _tokenizer(spec.tokenizer_path)
    n = spec.generation.verbmem_gt_max_tokens
    rows = []
    for r in load_split(spec.dataset, "verbmem", muse_split):
        rows.append({"muse_task": muse_task, "prompt": r["prompt"], "gt": r["gt"],
                     "reference": verbmem_ground_truth(tok, r["gt"], n)})
    return {"test": datasets.Dataset.from_list(rows)}


def knowmem_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    # lm-eval already stops at the `until` strings; cutting again keeps the MUSE rule
    # (generate, then cut at the first stop) in one place even if `until` is overridden.
    pred = M.cut_at_stop(results[0], _spec(doc["muse_task"]).generation.knowmem_stop)
    return {"rougeL_f1": M.rouge_l_f1(doc["answer"], pred) * 100}


def verbmem_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"rougeL_f1": M.rouge_l_f1(doc["reference"], results[0]) * 100}
