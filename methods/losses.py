"""Loss math shared by the unlearning methods (written once, unit-tested).

A batch is a dict with ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding),
as built by ``harness.training``. Sequence-level quantities sum token log-probs over the
sequence, as NPO defines them (MUSE's ``get_batch_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.tensors import token_nll  # the core's; methods use it from here too


def mean_nll(model, batch: dict) -> torch.Tensor:
    """Mean token NLL over the batch (the usual LM loss)."""
    nll, mask = token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"])
    return nll.sum() / mask.sum().clamp(min=1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence NLL, summed over tokens: ``-log pi(y|x)``."""
    nll, _ = token_nll(logits, labels)
    return nll.sum(dim=1)


def sequence_lengths(labels: torch.Tensor) -> torch.Tensor:
    return (labels[:, 1:] != -100).sum(dim=1).clamp(min=1)


def npo_loss(nll_theta: torch.Tensor, nll_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): ``(2/beta) * mean log(1 + (pi_theta / pi_ref)^beta)``.

    With ``log pi = -nll`` this is ``-(2/beta) * logsigmoid(beta * (nll_theta - nll_ref))``.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_theta - nll_ref)).mean()


def simnpo_loss(nll_theta: torch.Tensor, lengths: torch.Tensor, beta: float, margin: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO,
    ``-(2/beta) * mean logsigmoid(-(beta/|y|) * log pi_theta(y|x) - margin)``."""
    log_pi = -nll_theta
    return -(2.0 / beta) * F.logsigmoid(-(beta / lengths) * log_pi - margin).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-averaged ``KL(p_ref || p_theta)`` over the scored positions."""
    mask = labels[:, 1:] != -100
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def label_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logit of each next token (shifted, as ``token_nll``), 0 where the label is ignored."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    return logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
