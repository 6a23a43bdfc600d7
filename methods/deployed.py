"""The deployed model as quantization-aware methods see it, in both training modes.

``linear_layers(model)`` yields every quantized linear layer (all but ``lm_head``) with the
weight the deployed model would compute with: the layer's own weight in full mode, the base
weight plus the adapter's update (``B @ A * scaling``, what ``merge_and_unload`` adds) in LoRA
mode. ``fake_quantized(model, bits, group_size)`` runs the model's forward passes through
round-to-nearest weights (``harness.tensors.fake_quantize``, the rtn<bits> grid the harness
deploys) with a straight-through gradient: the loss is the quantized model's, the gradient
flows to the full-precision weights (or adapters) as if rounding were the identity.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from harness.tensors import fake_quantize


@dataclass
class LinearLayer:
    name: str  # the layer's name in the plain (merged) model, as quantizers and mechanism name it
    module: torch.nn.Module  # nn.Linear, or peft's LoRA Linear around it
    lora: bool

    @property
    def base(self) -> torch.nn.Linear:
        return self.module.base_layer if self.lora else self.module

    def delta(self) -> torch.Tensor | None:
        """The adapter's update of the base weight (LoRA mode; None in full mode or when the
        adapter is disabled or merged)."""
        if not self.lora or self.module.disable_adapters or self.module.merged:
            return None
        names = [a for a in self.module.active_adapters if a in self.module.lora_A]
        return sum(self.module.get_delta_weight(a) for a in names) if names else None

    def weight(self) -> torch.Tensor:
        """The weight the merged model would hold (differentiable)."""
        d = self.delta()
        return self.base.weight if d is None else self.base.weight + d


def _plain_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


def linear_layers(model) -> Iterator[LinearLayer]:
    """Every linear layer but ``lm_head``, once (a LoRA-wrapped layer as its wrapper)."""
    from peft.tuners.lora import LoraLayer

    # a LoRA wrapper's base layer and its adapter matrices (lora_A, lora_B) are not layers of their own
    wrapped = {id(inner) for m in model.modules() if isinstance(m, LoraLayer) for inner in m.modules() if inner is not m}
    for name, module in model.named_modules():
        if name.endswith("lm_head"):
            continue
        if isinstance(module, LoraLayer) and isinstance(module.base_layer, torch.nn.Linear):
            yield LinearLayer(_plain_name(name), module, lora=True)
        elif isinstance(module, torch.nn.Linear) and id(module) not in wrapped:
            yield LinearLayer(_plain_name(name), module, lora=False)


def straight_through(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """``fake_quantize(w)`` in the forward pass, identity in the backward pass."""
    return w + (fake_quantize(w, bits, group_size) - w).detach()


@contextlib.contextmanager
def fake_quantized(model, bits: int, group_size: int):
    """Inside, the model computes with rtn<bits> weights (straight-through gradient). In LoRA
    mode the adapter's update is merged before rounding, as deployment merges it (its dropout is
    not applied on this path); with the adapter disabled (the reference) the frozen base weight
    is rounded, so the reference is the deployed target, not the full-precision one."""
    patched = []
    for layer in linear_layers(model):
        original = layer.module.forward

        def forward(x, *args, _layer=layer, _original=original, **kwargs):
            if _layer.lora and _layer.delta() is None:
                w = fake_quantize(_layer.base.weight.detach(), bits, group_size)
            else:
                w = straight_through(_layer.weight(), bits, group_size)
            return F.linear(x, w.to(x.dtype), _layer.base.bias)

        layer.module.forward = forward
        patched.append(layer.module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
