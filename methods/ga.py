"""Gradient ascent and its MUSE variants (Shi et al. 2024, arXiv 2407.06460).

``ga``: minimise ``-NLL(forget)``. ``ga_gdr`` adds ``alpha * NLL(retain)`` (gradient descent
on retain), ``ga_klr`` adds ``alpha * KL(p_target || p_theta)`` on retain. The retain weight
alpha = 100 follows the seed paper (Abitante et al. 2026) for the GA variants.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.plugins import METHODS
from methods import losses
from methods.base import MethodConfig, UnlearningMethod


@dataclass
class GAConfig(MethodConfig):
    alpha: float = 100.0


@METHODS.register("ga", summary="gradient ascent on forget (MUSE)")
class GradientAscent(UnlearningMethod):
    """Gradient ascent on the forget set."""

    paper = "MUSE baseline (Shi et al. 2024, arXiv 2407.06460)"
    Config = GAConfig

    def forget_loss(self, model, batch, ref):
        return -losses.mean_nll(model, batch)


@METHODS.register("ga_gdr", summary="GA + retain NLL (MUSE)")
class GradientAscentGDR(GradientAscent):
    """Gradient ascent on forget + NLL on retain (GDR)."""

    retain_reg = "gdr"


@METHODS.register("ga_klr", summary="GA + KL to target on retain (MUSE)")
class GradientAscentKLR(GradientAscent):
    """Gradient ascent on forget + KL to the target on retain (KLR)."""

    retain_reg = "klr"
    mode_defaults = {"full": {"epochs": 5}, "lora": {"epochs": 5}}
