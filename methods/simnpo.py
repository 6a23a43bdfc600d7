"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
for LLM Unlearning", arXiv 2410.07163): reference-free, length-normalised NPO,
``-(2/beta) * mean logsigmoid(-(beta/|y|) * log pi_theta(y|x) - margin)``, plus the retain NLL.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.plugins import METHODS
from methods import losses
from methods.base import MethodConfig, UnlearningMethod


@dataclass
class SimNPOConfig(MethodConfig):
    alpha: float = 1.0
    beta: float = 2.5  # inverse temperature
    margin: float = 0.0  # reward margin (gamma in the paper)


@METHODS.register("simnpo", summary="reference-free length-normalised NPO (Fan et al. 2024)")
class SimNPO(UnlearningMethod):
    """Reference-free length-normalised NPO + retain NLL."""

    paper = "Fan et al. 2024, arXiv 2410.07163"
    Config = SimNPOConfig
    retain_reg = "gdr"

    def forget_loss(self, model, batch, ref):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = losses.sequence_nll(logits, batch["labels"])
        return losses.simnpo_loss(nll, losses.sequence_lengths(batch["labels"]), self.cfg.beta, self.cfg.margin)
