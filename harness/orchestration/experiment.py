"""An experiment: which tasks, methods, modes and quantizers to cross, with which settings.

Read from an optional YAML file, then overridden by command-line flags; unknown keys are an
error. Example (``experiments/example.yaml``)::

    tasks: [muse_tiny]
    methods: [npo_gdr, ga_klr]           # or "all"
    modes: [full, lora]
    quant: [bf16, rtn4, gptq4]           # or "all"
    reference: bf16                      # the unquantized evaluation every cell also gets (none: opt out)
    dtype: auto                          # auto (bf16 on GPU, fp32 on CPU) or fp32 (MUSE's), bf16, fp16
    seed: 0
    unlearning:                          # merged over each task's own defaults
      full: {lr: 1.0e-3}
      methods: {npo_gdr: {lora: {epochs: 4}}}
      tasks: {muse_tiny: {lora: {lora_r: 8}}}   # per task, laid over the above
    variants:                            # a method under other settings, run as its own row
      npo_gdr_slow: {method: npo_gdr, full: {lr: 1.0e-5}, lora: {lr: 1.0e-4}}
      npo_gdr_linear: {method: npo_gdr, modes: [full], full: {only_linear: true}}  # only in full mode
    quantizers: {rtn4: {group_size: 64}}
    calibration: {source: raw/retain1, samples: 64}
    models: {muse_tiny: {target_model: ./my_target, retrain_model: ./my_retrain}}
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tasks
from harness.config import build_config
from harness.errors import HarnessError
from harness.plugins import registry
from harness.yamlio import load_file

DEFAULT_TASKS = ["muse_tiny"]
MODEL_KEYS = ("target_model", "retrain_model", "tokenizer", "dataset")
DEFAULT_REFERENCE = "bf16"


@dataclass
class Experiment:
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    methods: list[str] | str = "all"
    modes: list[str] = field(default_factory=lambda: ["full", "lora"])
    quant: list[str] | str = "all"
    # every cell is also evaluated at the reference (added to ``quant`` when missing): the gap,
    # the score's target row and the mechanism's "before" are measured against it; None opts out
    reference: str | None = DEFAULT_REFERENCE
    seed: int | None = None  # overrides every unlearning run's seed when set
    unlearning: dict[str, Any] = field(default_factory=dict)  # {full|lora: {..}, methods: {m: {mode: {..}}}, tasks: {t: {..}}}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: {method, full: {..}, lora: {..}}
    quantizers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-quantizer settings
    calibration: dict[str, Any] = field(default_factory=dict)  # CalibrationSettings fields
    models: dict[str, dict[str, str]] = field(default_factory=dict)  # per task: target_model, ...
    batch_size: int | None = None  # evaluation batch size (results do not depend on it)
    dtype: str = "auto"  # models loaded in: auto (bf16 on GPU, fp32 on CPU), fp32 (MUSE's), bf16, fp16
    save_quantized: bool = False  # also write every quantized model's deployable checkpoint
    mechanism: bool = True  # weight-level statistics of each update against the quantized target
    out: str | None = None
    executor: str = "local"
    ray_address: str | None = None

    def identity(self) -> dict[str, Any]:
        """What decides the results (not where or how they are computed)."""
        data = dataclasses.asdict(self)
        for key in ("out", "executor", "ray_address", "batch_size"):
            data.pop(key)
        if data["reference"] == DEFAULT_REFERENCE:
            data.pop("reference")  # so folders of runs from before the field keep their fingerprint
        if data["dtype"] == "auto":
            data.pop("dtype")  # likewise (the stage ids hash the dtype in effect)
        return data

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def _split(value: Any) -> list[str] | str:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        return "all" if items == ["all"] else items
    return list(value)


def _reference(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if not isinstance(value, str) or not value.strip() or "," in value:
        raise HarnessError(f"reference: {value!r} is not one quantizer name; name one (e.g. bf16) or none")
    return value.strip()


def load_experiment(path: str | None, flags: dict[str, Any]) -> Experiment:
    """The YAML file (if any) with ``flags`` (those not None) laid over it."""
    raw: dict[str, Any] = {}
    if path:
        if not Path(path).exists():
            raise HarnessError(f"--config {path}: no such file")
        raw = load_file(path, "experiment file") or {}
        if not isinstance(raw, dict):
            raise HarnessError(f"{path}: an experiment file must be a mapping of settings")
    raw.update({k: v for k, v in flags.items() if v is not None})
    for key in ("tasks", "methods", "modes", "quant"):
        if key in raw:
            raw[key] = _split(raw[key])
            if raw[key] != "all" and (not raw[key] or not all(isinstance(x, str) and x for x in raw[key])):
                raise HarnessError(f"empty or malformed {key} selection; name at least one (or 'all')")
    if "reference" in raw:
        raw["reference"] = _reference(raw["reference"])
    if "tasks" in raw and raw["tasks"] == "all":
        raise HarnessError("tasks: name the tasks to run (e.g. muse_tiny); 'all' would include hub-sized ones")
    exp = build_config(Experiment, raw, path or "experiment")
    _check_shapes(exp, path or "experiment")
    return exp


def _check_shapes(exp: Experiment, where: str) -> None:
    for key in ("unlearning", "quantizers", "calibration", "models"):
        if not isinstance(getattr(exp, key), dict):
            raise HarnessError(f"{where}: '{key}' must be a mapping")
    _check_unlearning(exp.unlearning, f"{where}: unlearning", exp.tasks)
    for name, variant in exp.variants.items():
        if not isinstance(variant, dict) or not isinstance(variant.get("method"), str):
            raise HarnessError(f"{where}: variants.{name}: expected a mapping with 'method: <registered method>'")
        bad = sorted(set(variant) - {"method", "full", "lora", "modes"})
        if bad or not all(isinstance(variant.get(m, {}), dict) for m in ("full", "lora")):
            raise HarnessError(f"{where}: variants.{name}: unknown key(s) {', '.join(bad) or '(full/lora not mappings)'}; "
                               f"allowed: method, modes, full, lora")
        if not set(variant.get("modes", [])) <= {"full", "lora"}:
            raise HarnessError(f"{where}: variants.{name}.modes: a list of full and/or lora")
    for task, models in exp.models.items():
        if task not in exp.tasks:
            raise HarnessError(f"{where}: models.{task}: not one of the run's tasks ({', '.join(exp.tasks)})")
        unknown = sorted(set(models) - set(MODEL_KEYS)) if isinstance(models, dict) else ["(not a mapping)"]
        if unknown:
            raise HarnessError(f"{where}: models.{task}: unknown key(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(MODEL_KEYS)}")
    if exp.batch_size is not None and exp.batch_size < 1:
        raise HarnessError(f"{where}: batch_size must be at least 1, got {exp.batch_size}")
    from harness.modeling import set_dtype  # lazy: torch (this module is on `harness ls`'s path)

    set_dtype(exp.dtype)  # a bad name is one line here; the run's models load in it
    if exp.executor not in ("local", "ray"):
        raise HarnessError(f"unknown executor '{exp.executor}'; use local or ray")


def _check_unlearning(section: dict, where: str, task_names: list[str] | None) -> None:
    allowed = ("full", "lora", "methods", "tasks") if task_names is not None else ("full", "lora", "methods")
    for key, value in section.items():
        if key not in allowed or not isinstance(value, dict):
            raise HarnessError(f"{where}.{key}: expected {', '.join(f'.{a}' for a in allowed)} mappings")
    for task, per_task in section.get("tasks", {}).items():
        if task not in task_names:
            raise HarnessError(f"{where}.tasks.{task}: not one of the run's tasks ({', '.join(task_names)})")
        _check_unlearning(per_task, f"{where}.tasks.{task}", None)


def _lay_over(merged: dict, section: dict) -> None:
    for mode in ("full", "lora"):
        merged.setdefault(mode, {}).update(section.get(mode, {}))
    for method, per_mode in section.get("methods", {}).items():
        for mode, values in (per_mode or {}).items():
            merged.setdefault("methods", {}).setdefault(method, {}).setdefault(mode, {}).update(values or {})


def method_names(exp: Experiment) -> list[str]:
    """The run's method rows: registered methods (``all`` = every one) and declared variants."""
    if exp.methods == "all":
        return registry("methods").resolve_selection("all")
    plain = [m for m in exp.methods if m not in exp.variants]
    names = set(registry("methods").resolve_selection(plain)) if plain else set()
    for name in exp.variants:
        registry("methods").get(exp.variants[name]["method"])  # unknown base method: one-line error
    return [m for m in exp.methods if m in names or m in exp.variants]


def unlearn_settings(exp: Experiment, task, name: str, mode: str):
    """Resolved settings of one method row (a registered method or a variant of one) in ``mode``."""
    from harness.unlearning import resolve_settings  # lazy: torch (this module is on `harness ls`'s path)

    variant = exp.variants.get(name, {})
    overrides = dict(variant.get(mode, {}))
    if exp.seed is not None:
        overrides["seed"] = exp.seed
    return resolve_settings(task, variant.get("method", name), mode, overrides or None)


def task_for(exp: Experiment, name: str):
    """The task with the experiment's model paths and unlearning settings laid over its own."""
    task = tasks.get_task(name)
    changes: dict[str, Any] = dict(exp.models.get(name, {}))
    if exp.unlearning:
        merged = copy.deepcopy(task.unlearning)
        _lay_over(merged, exp.unlearning)
        _lay_over(merged, exp.unlearning.get("tasks", {}).get(name, {}))
        changes["unlearning"] = merged
    return dataclasses.replace(task, **changes) if changes else task
