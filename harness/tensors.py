"""Tensor helpers shared by the harness and its plugins (the core's, importing no plugin): batch
padding, per-token NLL, the linear layers a quantizer converts, and the round-to-nearest grid.
Each helper imports torch itself: the core stays light to import (``harness ls`` imports it)."""

from __future__ import annotations

from typing import Sequence


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right"):
    """``(input_ids, attention_mask)``, each ``len(seqs) x longest``: every sequence written at
    the ``side`` it is aligned to ("left" for generation, whose new tokens follow the last
    column; "right" for scoring and training) and ``pad_id`` / 0 elsewhere."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, cols] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def token_nll(logits, labels):
    """Per-token negative log-likelihood (shifted: position t predicts token t+1) and the mask of
    scored tokens (labels -100 are not scored)."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return nll * mask, mask


def linear_names(model) -> list[str]:
    """Names of the linear layers a weight-only quantizer converts: all but ``lm_head``."""
    import torch

    return [name for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] != "lm_head"]


# -- the round-to-nearest integer grid, for methods that train against it ---------------------
# Hand-written because methods need it differentiable-around (fake quantization with a straight-
# through gradient) and per weight (the step of each weight's group); llm-compressor applies
# the same grid only to a whole model, in place. tests/test_robust_methods.py checks that it
# reproduces the deployed rtn3/rtn4/rtn8 weights exactly.

def _groups(w, group_size: int):
    """``w`` (rows x cols) viewed as rows x groups x group_size (one group per row if the
    row is narrower than a group, as llm-compressor does)."""
    rows, cols = w.shape
    size = group_size if 0 < group_size < cols else cols
    if cols % size:
        raise ValueError(f"{cols} columns are not a multiple of group_size {size}")
    return w.reshape(rows, cols // size, size)


def rtn_grid(w, bits: int, group_size: int):
    """Scale and zero point of every group (rows x groups x 1), asymmetric min-max with zero
    representable, on the signed integer range [-2^(bits-1), 2^(bits-1) - 1] (compressed-tensors')."""
    import torch

    g = _groups(w.detach().float(), group_size)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    mn = g.amin(-1, keepdim=True).clamp(max=0)
    mx = g.amax(-1, keepdim=True).clamp(min=0)
    scale = (mx - mn) / (hi - lo)
    scale = torch.where(scale == 0, torch.finfo(scale.dtype).eps, scale)
    zero = torch.round(torch.clamp(lo - mn / scale, lo, hi))
    return scale, zero


def fake_quantize(w, bits: int, group_size: int):
    """The weights rtn<bits> deploys (dequantized), same shape and dtype as ``w``; no gradient."""
    import torch

    scale, zero = rtn_grid(w, bits, group_size)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = torch.clamp(torch.round(_groups(w.detach().float(), group_size) / scale + zero), lo, hi)
    return ((q - zero) * scale).reshape(w.shape).to(w.dtype)


def grid_step(w, bits: int, group_size: int):
    """The quantization step (bin width) at every weight of ``w``: its group's scale."""
    scale, _ = rtn_grid(w, bits, group_size)
    return scale.expand(*_groups(w, group_size).shape).reshape(w.shape)
