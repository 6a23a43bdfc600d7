"""Tensor helpers shared by training and evaluation: padding token sequences into a batch."""

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
