"""Running one stage in one process. A ``Worker`` keeps what several stages share: models
loaded once per process (target, retrain), tokenizers, task references, and the last unlearned
model, which its quantize-and-evaluate stages take from memory instead of reloading it, and
the target's deployed weights per quantizer (for the mechanism statistics), within a memory
budget (``HARNESS_MECHANISM_CACHE_MB``, default 2048; beyond it they are recomputed)."""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

from harness.plan import Stage
from harness.store import Store

UNLEARNED = "unlearned"  # folder of an unlearn stage holding model/ (and adapter/)


def _peak_memory() -> dict[str, float]:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)
    out = {"peak_rss_mb": round(rss, 1)}  # the process's high-water mark when the stage ended
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


class Worker:
    def __init__(self, exp, tasks: dict[str, Any], store: Store, on_step: Callable | None = None) -> None:
        self.exp, self.tasks, self.store = exp, tasks, store
        self.on_step = on_step
        self._models: dict[str, Any] = {}
        self._tokenizers: dict[str, Any] = {}
        self._refs: dict[str, dict] = {}
        self._unlearned: tuple[str, Any] | None = None
        self._deployed_targets: dict[tuple[str, str], dict] = {}

    # -- shared, loaded once per process -----------------------------------------------------
    def model(self, path: str):
        from harness.modeling import load_model

        if path not in self._models:
            self._models[path] = load_model(path)
        return self._models[path]

    def tokenizer(self, task):
        from harness.modeling import load_tokenizer

        if task.task not in self._tokenizers:
            self._tokenizers[task.task] = load_tokenizer(task.tokenizer_path)
        return self._tokenizers[task.task]

    def references(self, task) -> dict:
        from tasks.reference import task_references

        if task.task not in self._refs:
            self._refs[task.task] = task_references(task, batch_size=self.exp.batch_size)
        return self._refs[task.task]

    def deployed_target(self, task, quant: str, quantizer, calibration) -> dict:
        from harness.quantization import deployed_weights

        key = (task.task, quant)
        if key in self._deployed_targets:
            return self._deployed_targets[key]
        weights = deployed_weights(quantizer, self.model(task.target_model), self.tokenizer(task), task, calibration)
        self._remember_target(key, weights)
        return weights

    def _remember_target(self, key: tuple[str, str], weights: dict) -> None:
        budget = float(os.environ.get("HARNESS_MECHANISM_CACHE_MB", 2048)) * 2 ** 20
        size = lambda ws: sum(w.numel() * w.element_size() for w in ws.values())  # noqa: E731
        if size(weights) + sum(size(ws) for ws in self._deployed_targets.values()) <= budget:
            self._deployed_targets[key] = weights

    # -- stages ------------------------------------------------------------------------------
    def run(self, stage: Stage) -> dict[str, Any]:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        meta = {"kind": stage.kind, "label": stage.label, "config": stage.config,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

        def build(folder: Path) -> dict[str, Any]:
            result = self._unlearn(stage, folder) if stage.kind == "unlearn" else self._evaluate(stage, folder)
            return {**result, "seconds": round(time.perf_counter() - t0, 3), **_peak_memory()}

        return self.store.run(stage.id, build, meta)

    def _unlearn(self, stage: Stage, folder: Path) -> dict[str, Any]:
        import copy

        from harness.plugins import registry
        from harness.experiment import unlearn_settings
        from harness.unlearning import save_unlearned, unlearn
        from tasks.data import load_split

        task = self.tasks[stage.task]
        settings = unlearn_settings(self.exp, task, stage.method, stage.mode)
        forget = [r["text"] for r in load_split(task.dataset, "raw", "forget")]
        needs_retain = registry("methods").get(settings.method).needs_retain_set
        retain = [r["text"] for r in load_split(task.dataset, "raw", "retain1")] if needs_retain else None
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
        from harness.modeling import load_model

        task = self.tasks[stage.task]
        if stage.model != "unlearned":
            return self.model(task.model_path(stage.model))
        upstream = stage.deps[0]
        if self._unlearned is None or self._unlearned[0] != upstream:
            self._unlearned = (upstream, load_model(str(self.store.folder(upstream) / UNLEARNED / "model")))
        return self._unlearned[1]

    def _evaluate(self, stage: Stage, folder: Path) -> dict[str, Any]:
        from harness.quantization import make_quantizer, quantize_model
        from quantizers.calibration import settings_for
        from quantizers.mechanism import compare
        from quantizers.weights import effective_weights
        from tasks.evaluate import finish, raw_metrics

        task = self.tasks[stage.task]
        tok = self.tokenizer(task)
        model = self._source_model(stage)
        quantizer = make_quantizer(stage.quant, self.exp.quantizers.get(stage.quant))
        calibration = settings_for(task, self.exp.calibration)
        save_to = folder / "quantized" if self.exp.save_quantized else None
        qmodel, qrecord = quantize_model(quantizer, model, tok, task, calibration, save_to=save_to)
        t0 = time.perf_counter()
        raw = raw_metrics(qmodel, tok, task, self.exp.batch_size)
        eval_seconds = round(time.perf_counter() - t0, 3)
        mechanism = None
        if stage.model == "target":
            self._remember_target((task.task, stage.quant), {n: w.detach().clone() for n, w in effective_weights(qmodel).items()})
        elif stage.config.get("mechanism"):
            t1 = time.perf_counter()
            deployed = self.deployed_target(task, stage.quant, quantizer, calibration)
            mechanism = compare(self.model(task.target_model), model, deployed, effective_weights(qmodel))
            mechanism["seconds"] = round(time.perf_counter() - t1, 3)
        del qmodel
        refs = self.references(task)
        metrics = finish(raw, refs["auc_retrain"], refs["knowmem_f_target"])
        return {"metrics": metrics, "quantization": qrecord, "eval_seconds": eval_seconds, "mechanism": mechanism,
                "references": {k: v for k, v in refs.items() if k != "raw"},
                "calibration": dataclasses.asdict(calibration) if quantizer.needs_calibration else None}
