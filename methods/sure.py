"""SURE, Saliency-based Unlearning with a large learning Rate (Zhang et al. 2025, "Catastrophic
Failure of LLM Unlearning via Quantization", ICLR 2025, arXiv 2410.16454).

The loss is NPO + retain NLL (``npo_gdr``); at every step only the salient neurons update:
in each weight matrix, the rows (output neurons) whose forget-loss gradient norm is above that
matrix's ``saliency_percentile``-th percentile. A per-matrix threshold keeps every layer
updating its most salient neurons, where one global threshold would freeze whole layers whose
gradients are small in absolute terms. The paper pairs this with a
large learning rate, so that the update survives quantization; per-mode defaults reflect it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import HarnessError
from harness.plugins import METHODS
from methods.npo import NPOConfig, NPOGDR


@dataclass
class SUREConfig(NPOConfig):
    saliency_percentile: float = 90.0  # rows below this percentile of gradient norm do not update

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.saliency_percentile < 100:
            raise HarnessError(f"saliency_percentile must be in [0, 100), got {self.saliency_percentile}")


@METHODS.register("sure", summary="saliency-masked NPO+GDR, large lr (Zhang et al. 2025)")
class SURE(NPOGDR):
    """NPO+GDR updating only neurons salient for the forget loss."""

    paper = "Zhang et al. 2025, arXiv 2410.16454"
    Config = SUREConfig
    mode_defaults = {"full": {"lr": 1e-4}, "lora": {"lr": 1e-3}}

    def loss(self, model, forget, retain, ref):
        self._forget_term = self.cfg.gamma * self.forget_loss(model, forget, ref)
        total, parts = self._forget_term, {"forget": float(self._forget_term.detach()) / max(self.cfg.gamma, 1e-12)}
        if retain is not None and self.cfg.alpha > 0:
            r = self.retain_loss(model, retain, ref)
            total = total + self.cfg.alpha * r
            parts["retain"] = float(r.detach())
        return total, parts

    def backward(self, model, total, forget, retain, ref) -> None:
        params = [p for p in model.parameters() if p.requires_grad and p.dim() == 2]
        grads = torch.autograd.grad(self._forget_term, params, retain_graph=True, allow_unused=True)
        q = self.cfg.saliency_percentile / 100
        # With gradient accumulation, mask only this micro-batch's contribution.
        before = [p.grad.clone() if p.grad is not None else None for p in params]
        total.backward()
        for p, g, old in zip(params, grads, before):
            if p.grad is None:
                continue
            if g is None:  # no forget gradient reaches it: nothing is salient
                mask = torch.zeros_like(p.grad[:, :1])
            else:
                norms = g.norm(dim=1).float()
                mask = (norms >= torch.quantile(norms, q)).to(p.grad.dtype).unsqueeze(1)
            increment = p.grad - old if old is not None else p.grad
            p.grad.copy_((old if old is not None else 0) + increment * mask)
