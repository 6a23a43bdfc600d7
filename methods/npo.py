"""Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868) and MUSE variants.

Sequence-level NPO with beta = 0.1: ``(2/beta) * mean log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta)``
over forget sequences, pi_ref the frozen target. ``npo_gdr`` / ``npo_klr`` add the retain NLL
or the KL to the target on retain, weighted by alpha = 0.1 (the seed paper's setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.plugins import METHODS
from methods import losses
from methods.base import MethodConfig, UnlearningMethod


@dataclass
class NPOConfig(MethodConfig):
    alpha: float = 0.1
    beta: float = 0.1  # inverse temperature of the preference loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise HarnessError(f"NPO beta must be > 0, got {self.beta}")


@METHODS.register("npo", summary="negative preference optimisation, beta 0.1 (Zhang et al. 2024)")
class NPO(UnlearningMethod):
    """Negative preference optimisation against the frozen target."""

    paper = "Zhang et al. 2024, arXiv 2404.05868"
    Config = NPOConfig
    needs_reference_model = True

    def forget_loss(self, model, batch, ref):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = losses.sequence_nll(logits, batch["labels"])
        nll_ref = losses.sequence_nll(ref.logits(batch), batch["labels"])
        return losses.npo_loss(nll, nll_ref, self.cfg.beta)


@METHODS.register("npo_gdr", summary="NPO + retain NLL (MUSE)")
class NPOGDR(NPO):
    """NPO on forget + NLL on retain (GDR)."""

    retain_reg = "gdr"


@METHODS.register("npo_klr", summary="NPO + KL to target on retain (MUSE)")
class NPOKLR(NPO):
    """NPO on forget + KL to the target on retain (KLR)."""

    retain_reg = "klr"
    mode_defaults = {"full": {"epochs": 5}, "lora": {"epochs": 5}}
