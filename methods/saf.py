"""SAF, DurableUn's quantization-aware forgetting (Khan & Sohel 2026, "DurableUn: Quantization-
Induced Recovery Attacks in Machine Unlearning", arXiv 2605.02196, Eq. 3; read in the paper's
PDF and its code, github.com/neurips26/DurableUnl, src/durableun/saf.py).

The paper's objective, per optimizer step t of T:

    L(theta) = -NLL_f(theta) - a(t) * NLL_f(Q(theta)) + lambda * NLL_r(theta)

gradient ascent on the forget set (``gamma``), the same ascent through the 4-bit weights
``Q(theta)`` with a straight-through gradient (the optimiser sees the deployed model), and the
retain NLL (``alpha`` = lambda) at full precision. ``a(t)`` is 0 for the first ``quant_warmup``
of the steps (plain GA; the paper's 100 of 300) and then rises linearly to ``quant_weight`` by
twice that point (the paper's step 200): ``a(t) = quant_weight * min(1, 2 (t - t_w) / (T - t_w))``.
lambda defaults to the paper's rule ``max(1, quant_weight + 1)``; ``quant_weight`` to 1, its
MUSE-News setting (3 on TOFU).

Where this departs from the paper, and why:
- The rounding is the rtn<bits> grid the harness deploys (``methods/deployed.py``: asymmetric,
  groups of ``group_size``, every linear layer but ``lm_head``), a setting, not the paper's
  symmetric per-row absmax/7 INT4 over every linear layer: a method should train against a
  format someone deploys, and the leaderboard shows how it does on the others.
- In LoRA mode the adapter's update is merged into the base weight before rounding, as
  deployment merges it; the paper rounds the adapter's A and B matrices separately on an NF4
  base (QLoRA), a setting in which, it reports, merged NF4 models show no recovery anyway.
- The straight-through gradient is exact here (``w + (Q(w) - w).detach()``); the paper's code
  swaps the weights' storage and restores it before the backward pass, so its backward runs
  partly with the unrounded weights.
- The training loop is this harness's (its optimiser, schedule and per-task learning rates and
  step counts, not the paper's 300 steps at 5e-5 with a cosine schedule), as for every method.
- The paper's "sharpness-aware" name has no perturbation behind it in its code (the ``rho``
  it passes is never used), so there is none here either.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.plugins import METHODS
from methods import losses
from methods.deployed import fake_quantized, linear_layers
from methods.ga import GAConfig, GradientAscentGDR


@dataclass
class SAFConfig(GAConfig):
    alpha: float | None = None  # retain weight lambda; None: the paper's max(1, quant_weight + 1)
    quant_weight: float = 1.0  # a(t)'s final value: weight of the ascent through the rounded model
    quant_warmup: float = 1 / 3  # share of the steps with a(t) = 0 (plain GA), the paper's 100 of 300
    bits: int = 4  # the simulated round-to-nearest grid: rtn<bits>
    group_size: int = 128  # columns per scale, as the simulated quantizer's group_size

    def __post_init__(self) -> None:
        if self.quant_weight < 0 or not 0 <= self.quant_warmup < 1:
            raise HarnessError(f"SAF needs quant_weight >= 0 and 0 <= quant_warmup < 1, got {self.quant_weight} "
                               f"and {self.quant_warmup}")
        if self.alpha is None:
            self.alpha = max(1.0, self.quant_weight + 1)
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


@METHODS.register("saf", summary="GA, also through fake-quantized rtn4 weights (straight-through), + retain NLL (DurableUn)")
class SAF(GradientAscentGDR):
    """Gradient ascent at full precision and through the rounded model, plus retain NLL."""

    paper = "Khan & Sohel 2026, arXiv 2605.02196 (DurableUn-SAF, Eq. 3)"
    Config = SAFConfig
    version = 3  # 3: the paper's objective (2: NPO+GDR through the rounded model, against the rounded target)

    quant_scale = 0.0  # a(t) of the step being trained (start_step)
    deployed_nll: float | None = None  # the rounded model's forget NLL at the last step, for the log

    def configure(self, model) -> None:
        check_groups_fit(model, self.cfg.group_size, self.name)

    def start_step(self, step: int, total: int) -> None:
        warm = self.cfg.quant_warmup * total
        ramp = 2 * (step + 1 - warm) / max(total - warm, 1)  # steps counted from 1, as the paper's
        self.quant_scale = self.cfg.quant_weight * min(1.0, max(0.0, ramp))

    def forget_loss(self, model, batch, ref):
        ascent = -losses.mean_nll(model, batch)
        self.deployed_nll = None
        if self.quant_scale == 0:
            return ascent
        with fake_quantized(model, self.cfg.bits, self.cfg.group_size):
            deployed = losses.mean_nll(model, batch)
        self.deployed_nll = float(deployed.detach())
        return ascent - self.quant_scale * deployed

    def loss(self, model, forget, retain, ref):
        """The shared loss; the log also gets a(t) and, once it is on, the rounded model's forget NLL."""
        total, parts = super().loss(model, forget, retain, ref)
        parts["quant_scale"] = self.quant_scale
        if self.deployed_nll is not None:
            parts["forget_nll_rounded"] = self.deployed_nll
        return total, parts
