"""Evaluate one model on one MUSE task: VerbMem, KnowMem (forget, retain = Utility), PrivLeak,
and Knowledge retained, each exactly as defined in ``tasks/metrics.py``.

``raw_metrics`` runs the model; ``finish`` turns raw values into the reported ones using the
task's references (AUC_retrain, the target's KnowMem_forget), which ``tasks.reference``
computes once per task and caches.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from harness.errors import HarnessError
from harness.generation import greedy_generate, token_logprobs
from tasks import metrics as M
from tasks.data import load_split
from tasks.spec import TaskSpec

METRIC_NAMES = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "knowledge_retained")
# bumped when a metric's definition or the generation and scoring code change their values; part of
# every evaluation stage id and of the references' cache key (2: VerbMem's ground truth cut as MUSE
# cuts it, BOS included)
METRICS_VERSION = 2


@dataclass(frozen=True)
class TaskData:
    forget_qa: tuple
    retain_qa: tuple
    forget_icl: tuple
    retain_icl: tuple
    verbmem: tuple
    privleak_forget: tuple
    privleak_holdout: tuple


@lru_cache(maxsize=8)
def load_task_data(dataset: str) -> TaskData:
    """All evaluation splits of a MUSE dataset, validated (memoised per process)."""

    def qa(split):
        return tuple((r["question"], r["answer"]) for r in load_split(dataset, "knowmem", split))

    return TaskData(
        forget_qa=qa("forget_qa"),
        retain_qa=qa("retain_qa"),
        forget_icl=qa("forget_qa_icl"),
        retain_icl=qa("retain_qa_icl"),
        verbmem=tuple((r["prompt"], r["gt"]) for r in load_split(dataset, "verbmem", "forget")),
        privleak_forget=tuple(r["text"] for r in load_split(dataset, "privleak", "forget")),
        privleak_holdout=tuple(r["text"] for r in load_split(dataset, "privleak", "holdout")),
    )


def _knowmem(model, tok, task: TaskSpec, qa, icl, bs: int, early_stop: bool = True,
             share_prefix: bool = True) -> tuple[float, list[dict]]:
    g = task.generation
    prompts = [M.knowmem_prompt(icl, q) for q, _ in qa]
    outs = greedy_generate(model, tok, prompts, g.knowmem_max_new_tokens, bs, g.max_length,
                           stop=g.knowmem_stop if early_stop else (), heal_space=g.heal_trailing_space,
                           share_prefix=share_prefix)
    log = []
    for (q, a), out in zip(qa, outs):
        pred = M.cut_at_stop(out, g.knowmem_stop)
        log.append({"question": q, "answer": a, "prediction": pred, "rougeL_f1": M.rouge_l_f1(a, pred)})
    return M.mean([r["rougeL_f1"] for r in log]) * 100, log


def verbmem_ground_truth(tok, gt: str, max_tokens: int) -> str:
    """The ground truth VerbMem scores against, cut as MUSE's ``eval_verbmem`` cuts it: tokenized
    with the special tokens, the first ``max_tokens`` ids kept, decoded without them; with a
    tokenizer that adds BOS that leaves ``max_tokens - 1`` text tokens."""
    ids = tok(gt, add_special_tokens=True).input_ids[:max_tokens]
    return tok.decode(ids, skip_special_tokens=True)


def _verbmem(model, tok, task: TaskSpec, pairs, bs: int) -> tuple[float, list[dict]]:
    g = task.generation
    outs = greedy_generate(model, tok, [p for p, _ in pairs], g.verbmem_max_new_tokens, bs, g.max_length,
                           heal_space=g.heal_trailing_space)
    log = []
    for (prompt, gt), out in zip(pairs, outs):
        gt_short = verbmem_ground_truth(tok, gt, g.verbmem_gt_max_tokens)
        log.append({"prompt": prompt, "gt": gt_short, "prediction": out, "rougeL_f1": M.rouge_l_f1(gt_short, out)})
    return M.mean([r["rougeL_f1"] for r in log]) * 100, log


def _privleak_auc(model, tok, task: TaskSpec, data: TaskData, bs: int) -> tuple[float, dict]:
    g = task.generation
    stats = {}
    for split, texts in (("forget", data.privleak_forget), ("holdout", data.privleak_holdout)):
        lps = token_logprobs(model, tok, texts, bs, g.max_length)
        stats[split] = [M.min_k_statistic(lp, g.privleak_k) for lp in lps]
    return M.membership_auc(stats["forget"], stats["holdout"]), {"min_k": stats}


def with_context_length(task: TaskSpec, model) -> TaskSpec:
    """``task`` with ``generation.max_length: model`` resolved to the model's context length."""
    if task.generation.max_length != "model":
        return task
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        raise HarnessError(f"task '{task.task}': generation.max_length is 'model' but the model's config has no "
                           f"max_position_embeddings; set a number")
    resolved = copy.copy(task)  # a shallow copy: the task's own settings stay as declared
    resolved.generation = dataclasses.replace(task.generation, max_length=int(context))
    return resolved


def raw_metrics(model, tokenizer, task: TaskSpec, batch_size: int | None = None,
                with_logs: bool = False, early_stop: bool = True, share_prefix: bool = True) -> dict[str, Any]:
    """Run the model on every evaluation split; returns raw values (privleak as an AUC).
    ``early_stop=False`` generates every KnowMem answer to its token limit and
    ``share_prefix=False`` runs each KnowMem prompt's few-shot examples anew (same values,
    slower; benchmarks/smol_eval_speed.py compares the two ways)."""
    data = load_task_data(task.dataset)
    task = with_context_length(task, model)
    bs = batch_size or task.generation.batch_size
    seconds: dict[str, float] = {}
    logs: dict[str, Any] = {}
    out: dict[str, Any] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        value, log = fn(*args)
        seconds[name] = round(time.perf_counter() - t0, 3)
        out[name], logs[name] = value, log

    timed("verbmem_f", _verbmem, model, tokenizer, task, data.verbmem, bs)
    timed("knowmem_f", _knowmem, model, tokenizer, task, data.forget_qa, data.forget_icl, bs, early_stop, share_prefix)
    timed("knowmem_r", _knowmem, model, tokenizer, task, data.retain_qa, data.retain_icl, bs, early_stop, share_prefix)
    timed("privleak_auc", _privleak_auc, model, tokenizer, task, data, bs)
    out["seconds"] = seconds
    out["counts"] = {"verbmem_f": len(data.verbmem), "knowmem_f": len(data.forget_qa),
                     "knowmem_r": len(data.retain_qa), "privleak_forget": len(data.privleak_forget),
                     "privleak_holdout": len(data.privleak_holdout)}
    if with_logs:
        out["logs"] = logs
    return out


def finish(raw: dict[str, Any], auc_retrain: float, knowmem_f_target: float | None) -> dict[str, Any]:
    """Reported metrics from raw ones: PrivLeak vs AUC_retrain, Knowledge retained vs target."""
    result = dict(raw)
    result["auc_retrain"] = auc_retrain
    result["privleak"] = M.privleak(raw["privleak_auc"], auc_retrain)
    result["knowledge_retained"] = (
        M.knowledge_retained(raw["knowmem_f"], knowmem_f_target) if knowmem_f_target is not None else None
    )
    return result
