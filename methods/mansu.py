"""MANSU's magnitude floor (after Sadhu, Seth & Sankarapu 2026, "Forgetting That Sticks:
Quantization-Permanent Unlearning via Circuit Attribution", arXiv 2605.15138).

The paper traces reversion to updates far below a quantization bin (47-828x below NF4's for its
baselines) and guarantees survival by a per-parameter magnitude floor. Here: NPO on forget + NLL
on retain (``npo_gdr``) trains as usual; then, in every linear layer but ``lm_head``, the
``floor_fraction`` percent of weights whose update is largest relative to their bin (the
rtn<bits> grid's step of the target's group, ``harness.tensors.grid_step``) get an update of at
least ``floor`` bins, in the direction they moved. A weight moved by a whole bin lands on
another code whatever the rounding, so that part of the update cannot be rounded away. In LoRA
mode the floor applies to the merged update (base + ``B @ A * scaling``): the raised remainder
is added to the base weight, so the merged model carries it (the saved adapter alone does not).

Where this departs from the paper, and why: only its abstract, introduction and summaries could
be read here, so this implements the principle stated there (the floor relative to the bin
width), not its circuit machinery: the weights floored are the largest updates per bin, not a
causally attributed circuit (EAP-IG), and retain knowledge is protected by NPO+GDR's retain term,
not a null-space projection with a diagonal-Fisher bound. The bin is round-to-nearest's (the
grid the harness reproduces exactly), not NF4's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.errors import HarnessError
from harness.plugins import METHODS
from harness.tensors import grid_step
from methods.deployed import linear_layers
from methods.npo import NPOConfig, NPOGDR
from methods.saf import check_grid, check_groups_fit


@dataclass
class MANSUConfig(NPOConfig):
    floor: float = 1.0  # minimum |update| of a floored weight, in bins of its group
    floor_fraction: float = 1.0  # percent of each layer's weights floored: those that moved most per bin
    bits: int = 4  # the grid whose bin is the unit: rtn<bits>
    group_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self.bits, self.group_size)
        if self.floor <= 0 or not 0 < self.floor_fraction <= 100:
            raise HarnessError(f"MANSU needs floor > 0 and 0 < floor_fraction <= 100, got {self.floor} and "
                               f"{self.floor_fraction}")


def floored(delta: torch.Tensor, step: torch.Tensor, floor: float, fraction: float) -> tuple[torch.Tensor, int]:
    """``delta`` with its ``fraction`` percent largest entries (relative to ``step``) raised to at
    least ``floor * step`` in magnitude, keeping their sign; and how many were raised. Entries
    that did not move are never selected."""
    score = (delta.abs() / step).flatten()
    k = max(1, math.ceil(fraction / 100 * score.numel()))
    threshold = torch.topk(score, k).values[-1]
    chosen = (delta.abs() / step >= threshold) & (delta != 0)
    raise_to = torch.sign(delta) * floor * step
    low = chosen & (delta.abs() < floor * step)
    return torch.where(low, raise_to, delta), int(low.sum())


@METHODS.register("mansu", summary="NPO+GDR, then the largest updates floored to a whole rtn4 bin (MANSU 2026)")
class MANSU(NPOGDR):
    """NPO+GDR whose largest updates (per quantization bin) are raised to at least a bin."""

    paper = "Sadhu, Seth & Sankarapu 2026, arXiv 2605.15138 (the magnitude floor)"
    Config = MANSUConfig

    def configure(self, model) -> None:
        check_groups_fit(model, self.cfg.group_size, self.name)
        # the target's weights and bins (full mode trains them in place; LoRA mode keeps them as
        # the base, but the floor is measured against the same copy in both modes)
        self.target = {layer.name: layer.base.weight.detach().clone() for layer in linear_layers(model)}

    @torch.no_grad()
    def finish(self, model) -> dict:
        raised = total = 0
        for layer in linear_layers(model):
            w0 = self.target[layer.name].to(layer.base.weight.device)
            merged = layer.weight().detach()
            delta = (merged - w0).float()
            new, count = floored(delta, grid_step(w0, self.cfg.bits, self.cfg.group_size), self.cfg.floor,
                                 self.cfg.floor_fraction)
            layer.base.weight.add_((new - delta).to(layer.base.weight.dtype))
            raised, total = raised + count, total + delta.numel()
        self.target = {}
        return {"floored_weights": raised, "floored_percent": round(100 * raised / max(total, 1), 4)}
