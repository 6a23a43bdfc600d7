"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark",
arXiv 2403.03218).

On forget data, push the residual stream after layer ``layer`` towards ``c * u`` (u a fixed
random unit vector, c the steering coefficient); on retain data, keep it where the frozen
target has it: ``gamma * MSE(h(x_f), c*u) + alpha * MSE(h(x_r), h_ref(x_r))``. As in the
paper, only the MLPs of layers ``layer - 2 .. layer`` train. ``steering_coef`` left at 0
means ``steering_scale`` times the target's mean activation norm at that layer on forget data
(the paper's fixed 6.5 was tuned to Zephyr-7B's activation scale).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from harness.plugins import METHODS
from methods.base import MethodConfig, UnlearningMethod


@dataclass
class RMUConfig(MethodConfig):
    alpha: float = 100.0  # retain weight
    layer: int = -1  # steered layer; -1 = the middle layer
    steering_coef: float = 0.0  # c; 0 = steering_scale x mean activation norm
    steering_scale: float = 4.0
    seed: int = 0


def _hidden(model, batch, layer: int) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return out.hidden_states[layer + 1].float()


def _masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    err = ((h - target) ** 2).mean(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1)


@METHODS.register("rmu", summary="steer middle-layer activations to a random vector (Li et al. 2024)")
class RMU(UnlearningMethod):
    """Steer middle-layer activations on forget data to a scaled random vector."""

    paper = "Li et al. 2024, arXiv 2403.03218"
    Config = RMUConfig
    retain_reg = "rmu"  # its own retain term, below
    needs_retain_set = True
    needs_reference_model = True

    def configure(self, model) -> None:
        n_layers = model.config.num_hidden_layers
        self.layer = self.cfg.layer if self.cfg.layer >= 0 else n_layers // 2
        gen = torch.Generator().manual_seed(self.cfg.seed)
        u = torch.rand(model.config.hidden_size, generator=gen)
        self.direction = u / u.norm()
        self.coef = self.cfg.steering_coef

    def trainable(self, param_name: str) -> bool:
        match = re.search(r"layers\.(\d+)\.mlp\.", param_name)
        return bool(match) and self.layer - 2 <= int(match.group(1)) <= self.layer

    def forget_loss(self, model, batch, ref):
        h = _hidden(model, batch, self.layer)
        mask = batch["attention_mask"].float()
        if self.coef <= 0:  # calibrate once, on the target's activations
            h_ref = ref.hidden(batch, self.layer)
            self.coef = self.cfg.steering_scale * float((h_ref.norm(dim=-1) * mask).sum() / mask.sum())
        target = (self.coef * self.direction).to(h.device, h.dtype)
        return _masked_mse(h, target.expand_as(h), mask)

    def retain_loss(self, model, batch, ref):
        return _masked_mse(_hidden(model, batch, self.layer), ref.hidden(batch, self.layer),
                           batch["attention_mask"].float())
