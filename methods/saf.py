"""SAF, straight-through quantization-aware forgetting (after DurableUn-SAF, Khan & Sohel 2026,
"DurableUn: Quantization-Induced Recovery Attacks in Machine Unlearning", arXiv 2605.02196).

NPO on forget + NLL on retain (``npo_gdr``), both computed by the model as it will be deployed:
every linear layer but ``lm_head`` forward-passes through round-to-nearest ``bits``-bit weights
in groups of ``group_size`` (the rtn<bits> grid the harness deploys, ``methods/deployed.py``),
and the gradient reaches the full-precision weights straight through the rounding (STE). The
optimiser thus keeps pushing until the *quantized* model has forgotten. In LoRA mode the
adapter's update is merged into the base weight before rounding, as deployment merges it.
The quantizer it simulates is a setting (rtn4, group 128 by default; a task whose rtn4 uses
other groups sets ``group_size``); the leaderboard shows how it does on the formats it did not
train against.

Where this departs from the paper, and why: only the abstract and summaries of the paper could
be read here, so this implements the principle they state (an STE through INT4 rounding inside
the unlearning objective), not the paper's exact recipe: no sharpness-aware (SAM-style) weight
perturbation, the NPO+GDR objective of this harness's baselines rather than the paper's own,
and integer round-to-nearest rather than NF4 (the paper quantizes in the NF4+LoRA regime;
round-to-nearest is the grid the harness can reproduce bit for bit).

The frozen reference in NPO's ratio is the target rounded the same way: the preference is the
deployed model's against the deployed target. Against the full-precision target the loss starts
saturated wherever rounding alone makes the forget text less likely (measured on SmolLM2-135M,
rtn4 group 64: NPO loss 0.36 at step 0 against 13.86, so training mostly fitted the retain NLL).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.plugins import METHODS
from methods.deployed import fake_quantized, linear_layers
from methods.npo import NPOConfig, NPOGDR


@dataclass
class SAFConfig(NPOConfig):
    bits: int = 4  # the simulated round-to-nearest grid: rtn<bits>
    group_size: int = 128  # columns per scale, as the simulated quantizer's group_size

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self.bits, self.group_size)


def check_grid(bits: int, group_size: int) -> None:
    if not (isinstance(bits, int) and 2 <= bits <= 8):
        raise HarnessError(f"bits must be an integer from 2 to 8, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise HarnessError(f"group_size must be a positive integer, got {group_size!r}")


def check_groups_fit(model, group_size: int, method: str) -> None:
    """One-line error before training when a layer's width is not a multiple of the group."""
    for layer in linear_layers(model):
        cols = layer.base.weight.shape[1]
        if group_size < cols and cols % group_size:
            raise HarnessError(f"method '{method}': layer {layer.name} has {cols} input columns, not a multiple of "
                               f"group_size {group_size}; pass --set group_size=N with N dividing it")


@METHODS.register("saf", summary="NPO+GDR through fake-quantized rtn4 weights, straight-through (DurableUn 2026)")
class SAF(NPOGDR):
    """NPO+GDR whose losses are the deployed (rounded) model's, with a straight-through gradient."""

    paper = "Khan & Sohel 2026, arXiv 2605.02196 (DurableUn-SAF)"
    Config = SAFConfig
    version = 2  # 2: NPO's reference is the rounded target (1: the full-precision one)

    def configure(self, model) -> None:
        check_groups_fit(model, self.cfg.group_size, self.name)

    def loss(self, model, forget, retain, ref):
        with contextlib.ExitStack() as deployed:
            deployed.enter_context(fake_quantized(model, self.cfg.bits, self.cfg.group_size))
            if ref is not None and ref.model is not None:  # full mode: a frozen copy (LoRA: the adapter disabled)
                deployed.enter_context(fake_quantized(ref.model, self.cfg.bits, self.cfg.group_size))
            return super().loss(model, forget, retain, ref)
