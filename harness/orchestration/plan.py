"""Planning: tasks x methods x modes x quantizers expanded into a graph of stages.

* ``unlearn``: once per (task, method, mode), never once per quantizer;
* ``evaluate``: quantize-and-evaluate once per (unlearned model, quantizer), plus baseline
  rows for the task's target and retrain models at every quantizer.

Every stage has an id that hashes what its result depends on, and only that, so a completed
stage is found again by the next run and anything that could change it gets a new stage:

* an unlearning: the resolved settings of its method and mode, the method's code version
  (``version`` on the method class) and the training code's (``TRAINING_VERSION``), the task's
  version, dataset content and tokenizer (``TaskSpec.train_identity``), the target model;
* an evaluation: its upstream stage (or the baseline model's files), the quantizer's settings,
  calibration and code versions (its ``version``, ``QUANTIZATION_VERSION``), the metrics' code
  version (``METRICS_VERSION``), the mechanism's (``MECHANISM_VERSION``), the task's evaluation
  settings, dataset content and tokenizer (``TaskSpec.eval_identity``) and the target and
  retrain models its references come from;
* both: the runtime (versions of the libraries that compute results, device, dtype).

Changing one method's settings therefore recomputes only that method's stages; a new metric
version recomputes the evaluations and no unlearning. Cells whose plugins cannot combine
(capability flags) are listed in ``skipped`` with the reason. Building the plan validates every
name and setting, so bad input fails before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.orchestration.experiment import method_names, task_for, unlearn_settings
from harness.plugins import registry
from harness.provenance import runtime_identity
from harness.quantization import QUANTIZATION_VERSION, make_quantizer, variant_names
from quantizers.calibration import settings_for
from tasks import evaluate as task_evaluation  # its METRICS_VERSION read at plan time (tests patch it)
from tasks.data import model_stamp

MECHANISM_VERSION = 2  # bumped when the mechanism figures change, so stages recompute them
TRAINING_VERSION = 2  # bumped when the training code changes results (2: LoRA init seeded by the run)


@dataclass
class Stage:
    id: str
    kind: str  # "unlearn" or "evaluate"
    task: str
    method: str | None = None  # None for the baseline rows
    mode: str | None = None
    quant: str | None = None
    model: str = "unlearned"  # "unlearned", "target" or "retrain"
    deps: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    needs_gpu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        who = f"{self.method}/{self.mode}" if self.method else self.model
        return f"{self.task} {who}" + (f" @ {self.quant}" if self.quant else "")


@dataclass
class Plan:
    stages: dict[str, Stage]
    skipped: list[dict[str, Any]]
    tasks: dict[str, Any]
    reference: str | None = None  # the quantizer every cell is also evaluated at (gap, score)
    reference_added: bool = False  # True when the run did not name it: evaluated on top of the request

    def of_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages.values() if s.kind == kind]

    def counts(self) -> dict[str, int]:
        evals = self.of_kind("evaluate")
        return {"unlearning runs": len(self.of_kind("unlearn")),
                "quantizations": sum(1 for s in evals if s.quant != "bf16"),
                "evaluations": len(evals), "skipped cells": len(self.skipped)}


def _slug(name: str) -> str:
    """A plugin name made safe for a folder name (the hash keeps ids unique)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]


def _hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _names(kind: str, spec) -> list[str]:
    return registry(kind).resolve_selection(spec)


def quantizer_rows(exp) -> list[str]:
    """The run's quantizer rows: registered quantizers (``all`` = every one) and the variants its
    ``quantizers:`` block declares (``name: {quantizer: BASE, ...settings}``), in the order named,
    with the run's reference (bf16 unless named; none opts out) first when it was not named."""
    variants = variant_names(exp.quantizers)
    for name in variants:
        if name in registry("quantizers").names():
            raise HarnessError(f"quantizers.{name}: a variant needs a name of its own ({name} is a registered "
                               f"quantizer); e.g. {name}_custom: {{quantizer: {name}, ...}}")
        registry("quantizers").get(exp.quantizers[name]["quantizer"])  # unknown base: one-line error
    if exp.quant == "all":
        rows = _names("quantizers", "all")
    else:
        plain = [q for q in exp.quant if q not in variants]
        names = set(_names("quantizers", plain)) if plain else set()
        rows = [q for q in exp.quant if q in names or q in variants]
    ref = exp.reference
    if ref is not None and ref not in rows:
        if ref not in variants and ref not in registry("quantizers").names():
            raise HarnessError(f"reference: unknown quantizer '{ref}'; name a registered quantizer or variant "
                               f"(e.g. bf16), or none to run without an unquantized reference")
        rows = [ref] + rows  # the reference comes first, as in the leaderboard
    return rows


def build_plan(exp) -> Plan:
    """The stage graph of ``exp``; raises a one-line ``HarnessError`` on any bad name or setting."""
    # lazy: torch, and `harness ls` imports this module (cli -> commands -> runner)
    from harness.unlearning import MODES

    methods, quants = method_names(exp), quantizer_rows(exp)
    unknown_modes = [m for m in exp.modes if m not in MODES]
    if unknown_modes:
        raise HarnessError(f"unknown mode(s) {', '.join(unknown_modes)}; modes are {', '.join(MODES)}")
    tasks = {name: task_for(exp, name) for name in _names("tasks", exp.tasks)}
    planner = _Planner(exp, tasks, quants)
    for task in tasks.values():
        for model in ("target", "retrain"):
            if model == "retrain" and not task.retrain_model:
                continue
            path = task.model_path(model)
            planner.evaluations(task, {"model": model, "stamp": model_stamp(path)}, None, model)  # content, not location
        for method in methods:
            for mode in exp.modes:
                up = planner.unlearning(task, method, mode)
                if up is not None:
                    planner.evaluations(task, {"stage": up.id}, up, "unlearned", method, mode)
    added = exp.reference is not None and exp.quant != "all" and exp.reference not in exp.quant
    return Plan(planner.stages, planner.skipped, tasks, exp.reference, added)


class _Planner:
    """What every stage of one plan shares (the validated grid, each task's quantizers, the
    runtime identity, the references' stamps), and the stages and skipped cells added so far."""

    def __init__(self, exp, tasks: dict[str, Any], quants: list[str]) -> None:
        import torch  # lazy: as MODES above

        unknown_q = sorted(set(exp.quantizers) - set(quants))
        if unknown_q:
            raise HarnessError(f"quantizers: settings given for {', '.join(unknown_q)}, which the run does not use")
        self.exp, self.quants = exp, quants
        # per task: a task's own quantizer defaults (e.g. group 64 for 576-wide layers) lie under the run's
        self.per_task = {name: {q: make_quantizer(q, exp.quantizers.get(q), task) for q in quants}
                         for name, task in tasks.items()}
        self.gpu = torch.cuda.is_available()
        self.runtime = runtime_identity()
        self.eval_ids = {name: task.eval_identity() for name, task in tasks.items()}
        self.references = {name: {"target": model_stamp(task.target_model),
                                  "retrain": model_stamp(task.retrain_model) if task.retrain_model else None}
                           for name, task in tasks.items()}
        self.stages: dict[str, Stage] = {}
        self.skipped: list[dict[str, Any]] = []

    def add(self, stage: Stage) -> Stage:
        self.stages[stage.id] = stage
        return stage

    def unlearning(self, task, method: str, mode: str) -> Stage | None:
        """The unlearn stage of one cell (None when the method does not train in that mode)."""
        exp = self.exp
        cls = registry("methods").get(exp.variants.get(method, {}).get("method", method))
        if mode not in exp.variants.get(method, {}).get("modes", [mode]):
            return None  # a variant declared for other modes only: not a cell of this grid
        if mode not in cls.modes:
            self.skipped += [{"task": task.task, "method": method, "mode": mode, "quant": q,
                              "reason": f"method '{method}' does not train in {mode} mode"} for q in self.quants]
            return None
        settings = unlearn_settings(exp, task, method, mode)
        config = {"kind": "unlearn", "versions": {"training": TRAINING_VERSION, "method": cls.version},
                  "task": task.train_identity(), "target": model_stamp(task.target_model),
                  "settings": settings.to_dict(), "runtime": self.runtime}
        return self.add(Stage(f"unlearn-{_slug(task.task)}-{_slug(method)}-{mode}-{_hash(config)}", "unlearn",
                              task.task, method, mode, None, "unlearned", [], config, self.gpu))

    def evaluations(self, task, source: dict[str, Any], upstream: Stage | None, model: str, method=None, mode=None):
        """One evaluate stage per quantizer row of ``source`` (a task's model, or an unlearn stage)."""
        calibration = settings_for(task, self.exp.calibration)
        for q, quantizer in self.per_task[task.task].items():
            reason = quantizer.unavailable_reason()
            if reason:
                self.skipped.append({"task": task.task, "method": method or model, "mode": mode, "quant": q,
                                     "reason": reason})
                continue
            config = {"kind": "evaluate", "task": self.eval_ids[task.task], "references": self.references[task.task],
                      "source": source, "quant": q, "quant_config": dataclasses.asdict(quantizer.cfg),
                      "versions": {"metrics": task_evaluation.METRICS_VERSION, "quantization": QUANTIZATION_VERSION,
                                   "quantizer": quantizer.version},
                      "save_quantized": self.exp.save_quantized,
                      "mechanism": MECHANISM_VERSION if self.exp.mechanism and model == "unlearned" else None,
                      "calibration": dataclasses.asdict(calibration) if quantizer.needs_calibration else None,
                      "runtime": self.runtime}
            who = f"{_slug(method)}-{mode}" if method else model
            self.add(Stage(f"eval-{_slug(task.task)}-{who}-{_slug(q)}-{_hash(config)}", "evaluate", task.task, method,
                           mode, q, model, [upstream.id] if upstream else [], config, self.gpu))
