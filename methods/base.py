"""The contract of an unlearning method: a typed config, capability flags, and a loss.

A method supplies ``forget_loss`` (and inherits the retain regulariser it names); the shared
training loop (``harness.training``) does everything else, in both modes. The total loss is
``gamma * forget_loss + alpha * retain_loss`` (docs/design.md, "The method contract").

Capability flags are class attributes that the runner reads instead of checking names:
``needs_reference_model`` (a frozen copy of the target is provided as ``ref``),
``needs_retain_set`` (``raw/retain1`` batches are drawn with every forget batch), ``modes``
(the training modes it supports; the runner skips the other cells and records why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.config import build_config  # noqa: F401  (re-exported for method authors)
from harness.errors import HarnessError
from methods import losses


@dataclass
class MethodConfig:
    """Loss weights: total = gamma * forget_loss + alpha * retain_loss."""

    gamma: float = 1.0  # weight of the forget loss
    alpha: float = 0.0  # weight of the retain regulariser (unused without one)

    def __post_init__(self) -> None:
        for name in ("gamma", "alpha"):
            if getattr(self, name) < 0:
                raise HarnessError(f"{type(self).__name__}.{name} must be >= 0, got {getattr(self, name)}")


class UnlearningMethod:
    """Base class; subclasses set ``name``, ``paper``, maybe ``Config`` and ``retain_reg``."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1  # bump when this method's code changes its result: part of its stage ids
    paper: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    retain_reg: ClassVar[str | None] = None  # None, "gdr" (retain NLL) or "klr" (KL to the target)
    needs_reference_model: ClassVar[bool] = False
    needs_retain_set: ClassVar[bool] = False
    modes: ClassVar[tuple[str, ...]] = ("full", "lora")  # the runner skips the others, saying why
    # per-mode defaults of the training loop and method settings (override the MUSE defaults)
    mode_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.retain_reg is not None:
            cls.needs_retain_set = True
        if cls.retain_reg == "klr":
            cls.needs_reference_model = True

    def __init__(self, **settings: Any) -> None:
        self.cfg = build_config(self.Config, settings, f"method '{self.name}'")

    # -- hooks ------------------------------------------------------------------------------
    def configure(self, model) -> None:
        """Called once with the model before anything else (e.g. to pick a layer by depth)."""

    def trainable(self, param_name: str) -> bool:
        """Whether a parameter may train (full mode) or be adapted (LoRA mode)."""
        return True

    def start_step(self, step: int, total: int) -> None:
        """Called before each optimizer step's loss (``step`` from 0 of ``total``): for a loss
        whose weights follow a schedule (SAF ramps up its quantized term)."""

    def forget_loss(self, model, batch: dict, ref) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, model) -> dict | None:
        """Called once after the last optimizer step, with the trained model (the peft model in
        LoRA mode); may edit it (MANSU floors its update here). What it returns goes into the
        training log."""
        return None

    def retain_loss(self, model, batch: dict, ref) -> torch.Tensor:
        if self.retain_reg == "gdr":
            return losses.mean_nll(model, batch)
        if self.retain_reg == "klr":
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return losses.kl_to_reference(logits, ref.logits(batch), batch["labels"])
        raise HarnessError(f"method '{self.name}' has no retain regulariser")

    def loss(self, model, forget: dict, retain: dict | None, ref) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss of one step, and its parts for the log."""
        f = self.forget_loss(model, forget, ref)
        total, parts = self.cfg.gamma * f, {"forget": float(f.detach())}
        if retain is not None and self.retain_reg is not None and self.cfg.alpha > 0:
            r = self.retain_loss(model, retain, ref)
            total = total + self.cfg.alpha * r
            parts["retain"] = float(r.detach())
        return total, parts

    def backward(self, model, total: torch.Tensor, forget: dict, retain: dict | None, ref) -> None:
        """Back-propagate one micro-batch (SURE overrides this to mask gradients)."""
        total.backward()
