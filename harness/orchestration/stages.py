"""Running one stage in one process. A ``Worker`` keeps what several stages share: models
loaded once per process (target, retrain), tokenizers, task references, and the last unlearned
model, which its quantize-and-evaluate stages take from memory instead of reloading it, and
the target's deployed weights per quantizer (for the mechanism statistics), within a memory
budget (``HARNESS_MECHANISM_CACHE_MB``, default 2048; beyond it they are recomputed)."""

from __future__ import annotations

import copy
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from harness.modeling import load_model, load_tokenizer, set_dtype
from harness.orchestration.experiment import unlearn_settings
from harness.orchestration.plan import Stage
from harness.plugins import registry
from harness.provenance import provenance, runtime_identity
from harness.quantization import make_quantizer, quantize_model
from harness.store import Store
from harness.threads import pin, repin
from harness.unlearning import save_unlearned, unlearn
from quantizers.calibration import settings_for
from quantizers.mechanism import WEIGHT_FIGURES, compare, forget_nll, forget_texts, function_kept
from quantizers.weights import effective_weights
from tasks.data import training_texts
from tasks.evaluate import finish, raw_metrics, with_context_length
from tasks.reference import task_references

UNLEARNED = "unlearned"  # folder of an unlearn stage holding model/ (and adapter/)


def _peak_memory() -> dict[str, float]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)
    out = {"peak_rss_mb": round(rss, 1)}  # the process's high-water mark when the stage ended
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


class Worker:
    def __init__(self, exp, tasks: dict[str, Any], store: Store, on_step: Callable | None = None) -> None:
        set_dtype(exp.dtype)  # in a Ray worker too: the dtype the plan's ids were computed for
        pin()  # one explicit thread count for every stage of this process (harness/threads.py)
        self.exp, self.tasks, self.store = exp, tasks, store
        self.on_step = on_step
        self._models: dict[str, Any] = {}
        self._tokenizers: dict[str, Any] = {}
        self._refs: dict[str, dict] = {}
        self._unlearned: tuple[str, Any] | None = None
        self._target_views: dict[tuple[str, str | None], dict] = {}
        self._forget_sample: dict[str, list[str]] = {}
        self._unlearned_nll: tuple[str, float] | None = None

    # -- shared, loaded once per process -----------------------------------------------------
    def model(self, path: str):
        if path not in self._models:
            self._models[path] = load_model(path)
        return self._models[path]

    def tokenizer(self, task):
        if task.task not in self._tokenizers:
            self._tokenizers[task.task] = load_tokenizer(task.tokenizer_path)
        return self._tokenizers[task.task]

    def references(self, task) -> dict:
        if task.task not in self._refs:
            self._refs[task.task] = task_references(task, batch_size=self.exp.batch_size)
        return self._refs[task.task]

    # -- the mechanism: the target's view under each quantizer, and forget-loss figures --------
    def _forget_nll(self, model, task) -> float:
        if task.task not in self._forget_sample:
            self._forget_sample[task.task] = forget_texts(task)
        g = with_context_length(task, model).generation
        return forget_nll(model, self.tokenizer(task), self._forget_sample[task.task], g.max_length,
                          self.exp.batch_size or task.generation.batch_size)

    def target_nll(self, task) -> float:
        key = (task.task, None)
        if key not in self._target_views:
            self._target_views[key] = {"nll": self._forget_nll(self.model(task.target_model), task)}
        return self._target_views[key]["nll"]

    def target_view(self, task, quant: str, quantizer, calibration, qmodel=None) -> dict:
        """The quantized target's deployed weights and forget NLL (computed once, kept within
        the memory budget)."""
        key = (task.task, quant)
        if key in self._target_views:
            return self._target_views[key]
        if qmodel is None:
            qmodel, _ = quantize_model(quantizer, self.model(task.target_model), self.tokenizer(task), task, calibration)
        view = {"weights": effective_weights(qmodel, copy=True),
                "nll": self._forget_nll(qmodel, task)}
        budget = float(os.environ.get("HARNESS_MECHANISM_CACHE_MB", 2048)) * 2 ** 20
        size = lambda v: sum(w.numel() * w.element_size() for w in v.get("weights", {}).values())  # noqa: E731
        if size(view) + sum(size(v) for v in self._target_views.values()) <= budget:
            self._target_views[key] = view
        return view

    def mechanism(self, stage: Stage, task, model, qmodel, quantizer, calibration) -> dict[str, Any]:
        t0 = time.perf_counter()
        view = self.target_view(task, stage.quant, quantizer, calibration)
        out = compare(self.model(task.target_model), model, view["weights"], effective_weights(qmodel))
        if quantizer.rescales_channels:  # weights in another parametrisation: only the function compares
            out.update(dict.fromkeys(WEIGHT_FIGURES))
        upstream = stage.deps[0] if stage.deps else stage.id
        if self._unlearned_nll is None or self._unlearned_nll[0] != upstream:
            self._unlearned_nll = (upstream, self._forget_nll(model, task))
        out.update(function_kept(self.target_nll(task), self._unlearned_nll[1], view["nll"], self._forget_nll(qmodel, task)))
        out["forget_sample"] = len(self._forget_sample[task.task])
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    # -- stages ------------------------------------------------------------------------------
    def run(self, stage: Stage) -> dict[str, Any]:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()

        # the provenance of the process that computes this stage: a later run that reuses the
        # stage reports this commit, these versions and this device, not its own
        runtime = runtime_identity()
        meta = {"kind": stage.kind, "label": stage.label, "config": stage.config,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "provenance": provenance(seed=self.exp.seed, threads=torch.get_num_threads(), device=runtime["device"],
                                         dtype=runtime["dtype"])}

        def build(folder: Path) -> dict[str, Any]:
            try:
                result = self._unlearn(stage, folder) if stage.kind == "unlearn" else self._evaluate(stage, folder)
            finally:
                repin()  # a library may have changed the thread count (harness/threads.py)
            return {**result, "seconds": round(time.perf_counter() - t0, 3), **_peak_memory()}

        return self.store.run(stage.id, build, meta)

    def _unlearn(self, stage: Stage, folder: Path) -> dict[str, Any]:
        task = self.tasks[stage.task]
        settings = unlearn_settings(self.exp, task, stage.method, stage.mode)
        forget = training_texts(task.dataset, "forget")
        needs_retain = registry("methods").get(settings.method).needs_retain_set
        retain = training_texts(task.dataset, "retain1") if needs_retain else None
        tok = self.tokenizer(task)
        self._unlearned = None  # free the previous one before training the next
        model = copy.deepcopy(self.model(task.target_model))
        step = (lambda s, total, loss: self.on_step(stage, s, total, loss)) if self.on_step else None
        model, log = unlearn(settings, model, tok, forget, retain, step)
        record = {"task": task.task, "target_model": task.target_model, "settings": settings.to_dict(),
                  "training": log}
        merged = save_unlearned(folder / UNLEARNED, model, tok, stage.mode, record)
        self._unlearned = (stage.id, merged.eval())
        last = log["log"][-1] if log["log"] else {}
        return {"settings": settings.to_dict(), "steps": log["steps"], "train_seconds": log["seconds"],
                "final_loss": last.get("loss"), **({"adapter": log["adapter"]} if "adapter" in log else {})}

    def _source_model(self, stage: Stage):
        task = self.tasks[stage.task]
        if stage.model != "unlearned":
            return self.model(task.model_path(stage.model))
        upstream = stage.deps[0]
        if self._unlearned is None or self._unlearned[0] != upstream:
            self._unlearned = (upstream, load_model(str(self.store.folder(upstream) / UNLEARNED / "model")))
        return self._unlearned[1]

    def _evaluate(self, stage: Stage, folder: Path) -> dict[str, Any]:
        task = self.tasks[stage.task]
        tok = self.tokenizer(task)
        model = self._source_model(stage)
        quantizer = make_quantizer(stage.quant, self.exp.quantizers.get(stage.quant), task)
        calibration = settings_for(task, self.exp.calibration)
        save_to = folder / "quantized" if self.exp.save_quantized else None
        qmodel, qrecord = quantize_model(quantizer, model, tok, task, calibration, save_to=save_to)
        t0 = time.perf_counter()
        raw = raw_metrics(qmodel, tok, task, self.exp.batch_size)
        eval_seconds = round(time.perf_counter() - t0, 3)
        mechanism = None
        if stage.model == "target" and self.exp.mechanism:
            self.target_view(task, stage.quant, quantizer, calibration, qmodel)
        elif stage.config.get("mechanism"):
            mechanism = self.mechanism(stage, task, model, qmodel, quantizer, calibration)
        del qmodel
        refs = self.references(task)
        metrics = finish(raw, refs["auc_retrain"], refs["knowmem_f_target"])
        return {"metrics": metrics, "quantization": qrecord, "eval_seconds": eval_seconds, "mechanism": mechanism,
                "references": {k: v for k, v in refs.items() if k != "raw"},
                "calibration": dataclasses.asdict(calibration) if quantizer.needs_calibration else None}
