"""Run one unlearning: (task, method, mode) -> an unlearned model, and its record on disk.

Settings are resolved in this order, later wins:
  1. code defaults: ``TrainConfig`` (MUSE full fine-tuning), the method's ``Config``, ``LoraSettings``;
  2. mode defaults: LoRA trains at lr 1e-4 (the seed paper); then the method's ``mode_defaults``;
  3. the task YAML's ``unlearning:`` section (``full`` / ``lora``, then ``methods: {name: {mode: ...}}``);
  4. explicit overrides (experiment file, CLI).
All settings live in one flat namespace; each key goes to the config that declares it, and a
key no config declares is an error.

Modes: ``full`` trains every parameter the method allows; ``lora`` trains a peft LoRA adapter on
all linear layers but ``lm_head`` (base frozen), saves it, and merges it into the base
(``merge_and_unload``): the merged model is what gets quantized.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from peft import LoraConfig, get_peft_model

from harness.config import build_config
from harness.errors import HarnessError
from harness.plugins import registry
from harness.store import check_replaceable, folder_aside, write_json
from harness.tensors import linear_names
from harness.training import Reference, TrainConfig, train

MODES = ("full", "lora")
LORA_MODE_DEFAULTS = {"lr": 1e-4}


@dataclass
class LoraSettings:
    """LoRA adapter shape (peft); targets default to every linear layer but lm_head."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=list)  # empty = all linear layers but lm_head


@dataclass
class UnlearnSettings:
    method: str
    mode: str
    train: TrainConfig
    method_cfg: Any
    lora: LoraSettings | None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "mode": self.mode, "train": dataclasses.asdict(self.train),
                "method_settings": dataclasses.asdict(self.method_cfg),
                "lora": dataclasses.asdict(self.lora) if self.lora else None}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def resolve_settings(task, method_name: str, mode: str, overrides: dict[str, Any] | None = None) -> UnlearnSettings:
    if mode not in MODES:
        raise HarnessError(f"unknown mode '{mode}'; modes are {', '.join(MODES)}")
    cls = registry("methods").get(method_name)
    merged: dict[str, Any] = {}
    if mode == "lora":
        merged.update(LORA_MODE_DEFAULTS)
    merged.update(cls.mode_defaults.get(mode, {}))
    section = getattr(task, "unlearning", None) or {}
    merged.update(section.get(mode, {}))
    merged.update(section.get("methods", {}).get(method_name, {}).get(mode, {}))
    merged.update(overrides or {})

    owners = {"train": _fields(TrainConfig), "method": _fields(cls.Config), "lora": _fields(LoraSettings)}
    unknown = sorted(k for k in merged if not any(k in names for names in owners.values()))
    if unknown:
        allowed = sorted(set().union(*owners.values()))
        raise HarnessError(f"unknown unlearning setting(s) {', '.join(unknown)} for {method_name}/{mode}; "
                           f"allowed: {', '.join(allowed)}")
    pick = lambda kind: {k: v for k, v in merged.items() if k in owners[kind]}  # noqa: E731
    lora = build_config(LoraSettings, pick("lora"), "lora") if mode == "lora" else None
    return UnlearnSettings(method_name, mode, build_config(TrainConfig, pick("train"), "training"),
                           build_config(cls.Config, pick("method"), f"method '{method_name}'"), lora)


def _linear_targets(model, method, lora: LoraSettings) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    if lora.lora_targets:
        names = [n for n in names if n.split(".")[-1] in lora.lora_targets]
    names = [n for n in names if method.trainable(f"{n}.weight")]
    if not names:
        raise HarnessError(f"LoRA: no linear layer matches targets {lora.lora_targets or 'all'} for this method")
    return names


def check_adapter_trained(peft_model) -> dict[str, int]:
    """Fail loudly if no LoRA B matrix moved from its zero init (the adapter never trained)."""
    counts = {"lora_B": 0, "nonzero": 0}
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            counts["lora_B"] += 1
            counts["nonzero"] += int(bool(p.detach().abs().sum() > 0))
    if counts["lora_B"] == 0 or counts["nonzero"] == 0:
        raise HarnessError("LoRA adapter did not train: every lora_B matrix is still zero "
                           "(with gradient checkpointing, inputs must require grads)")
    return counts


def unlearn(settings: UnlearnSettings, model, tokenizer, forget: list[str], retain: list[str] | None,
            on_step: Callable[[int, int, float], None] | None = None) -> tuple[Any, dict]:
    """Unlearn ``model`` (modified in place in full mode); returns the model to quantize and a log."""
    # seeded before anything draws random numbers (a method's setup, LoRA's init of A), so a run
    # does not depend on what the process did before it
    torch.manual_seed(settings.train.seed)
    method = registry("methods").get(settings.method)(**dataclasses.asdict(settings.method_cfg))
    method.configure(model)
    extra: dict[str, Any] = {}
    if settings.mode == "full":
        ref = Reference(model=copy.deepcopy(model).eval().requires_grad_(False)) if method.needs_reference_model else None
        linear = {f"{n}.weight" for n in linear_names(model)} if settings.train.only_linear else None
        for name, p in model.named_parameters():
            p.requires_grad_(method.trainable(name) and (linear is None or name in linear))
        dtype = next(model.parameters()).dtype
        precision = settings.train.resolved_precision(next(model.parameters()).device.type)
        if precision in ("mixed", "fp32"):
            model.float()  # fp32 master weights; cast back to the loaded dtype after training
        elif precision == "bf16":
            model.to(torch.bfloat16)
        log = train(model, tokenizer, method, forget, retain, settings.train, ref, on_step)
        return model.to(dtype), {**log, **extra, "precision": precision}


    lora = settings.lora
    config = LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=_linear_targets(model, method, lora), bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    if settings.train.gradient_checkpointing:
        peft_model.enable_input_require_grads()  # else checkpointed LoRA layers get no gradient
    ref = Reference(peft_model=peft_model) if method.needs_reference_model else None
    log = train(peft_model, tokenizer, method, forget, retain, settings.train, ref, on_step)
    extra["adapter"] = check_adapter_trained(peft_model)
    return peft_model, {**log, **extra}


def save_unlearned(out_dir: str | Path, model, tokenizer, mode: str, record: dict) -> Any:
    """Write the merged model (and the adapter for LoRA) and ``unlearn.json``; the folder is
    built aside and renamed into place last, so a half-written result is never read."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, "unlearn.json", "harness unlearn")
    with folder_aside(out_dir) as tmp:
        if mode == "lora":
            model.save_pretrained(tmp / "adapter")
            model = model.merge_and_unload()
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_json(tmp / "unlearn.json", record)
    return model
