"""QUAIL, quantization-aware unlearning with a logit-space hinge (Mishra & Mehreen 2026, "QUAIL:
Quantization Aware Unlearning for Mitigating Misinformation in LLMs", arXiv 2601.15538).

GA + GDR (``ga_gdr``) plus a hinge that holds every forget token's logit at least ``margin``
below the frozen target's: ``hinge_weight * mean relu(margin - (z_target[y] - z[y]))`` over the
scored forget tokens (y the text's next token). Once the unlearned logits sit that far from the
target's, the perturbation that rounding the weights adds cannot carry them back.

Where this departs from the paper, and why: only its abstract and summaries could be read here.
They state the principle (a hinge keeping forget logits apart from the original model's by at
least half a quantization step, added to GA+GDR), not the distance or the margin's unit. A
weight-space step is not a logit-space distance, so here the margin is in nats on the label
token's logit, and its default comes from measuring what rounding does to those logits: rtn4
moves the target's forget-token logits by 0.19 nats on average (95th percentile 0.55) on the
tiny world and by 2.7 (95th percentile 7.4) on SmolLM2-135M (group 64). The one-sided
distance (the label logit must fall, not merely change) is this harness's choice: a two-sided
one can be met by raising the label's logit, which forgets nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import HarnessError
from harness.plugins import METHODS
from methods import losses
from methods.ga import GAConfig, GradientAscentGDR


@dataclass
class QUAILConfig(GAConfig):
    hinge_weight: float = 1.0  # weight of the hinge, next to GA's (gamma) and the retain NLL's (alpha)
    margin: float = 8.0  # nats the forget tokens' logits must fall below the target's (~ rtn4's p95 shift on a 135M model)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hinge_weight < 0 or self.margin <= 0:
            raise HarnessError(f"QUAIL needs hinge_weight >= 0 and margin > 0, got {self.hinge_weight} and {self.margin}")


@METHODS.register("quail", summary="GA+GDR + hinge holding forget logits a margin below the target's (QUAIL 2026)")
class QUAIL(GradientAscentGDR):
    """GA + retain NLL + a logit-space hinge against the frozen target."""

    paper = "Mishra & Mehreen 2026, arXiv 2601.15538"
    Config = QUAILConfig
    needs_reference_model = True

    def forget_loss(self, model, batch, ref):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, mask = losses.token_nll(logits, batch["labels"])
        ascent = -nll.sum() / mask.sum().clamp(min=1)
        drop = losses.label_logits(ref.logits(batch), batch["labels"]) - losses.label_logits(logits, batch["labels"])
        hinge = (torch.relu(self.cfg.margin - drop) * mask).sum() / mask.sum().clamp(min=1)
        return ascent + self.cfg.hinge_weight * hinge
