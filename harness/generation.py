"""Batched inference shared by every metric: greedy generation and per-token log-probs.

Generation uses left padding with an attention mask, and both functions process inputs in
length-sorted batches and return results in the input order, so a metric's value does not
depend on the batch size (tested).
"""

from __future__ import annotations

from typing import Sequence


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _device(model):
    return next(model.parameters()).device


def greedy_generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                    batch_size: int = 8, max_length: int = 2048) -> list[str]:
    """Greedy continuations (new text only, special tokens dropped) of each prompt."""
    import torch

    keep = max(1, max_length - max_new_tokens)
    encoded = [tokenizer(p).input_ids[-keep:] for p in prompts]  # keep the prompt's end
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    device = _device(model)
    for batch in _batches([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = encoded[i]
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad, eos_token_id=eos,
            )
        for row, i in enumerate(batch):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


def token_logprobs(model, tokenizer, texts: Sequence[str], batch_size: int = 8,
                   max_length: int = 2048) -> list[list[float]]:
    """Log-probability of every token of each text given its prefix (the first token excluded)."""
    import torch

    encoded = [tokenizer(t).input_ids[:max_length] for t in texts]
    pad = tokenizer.pad_token_id
    out: list[list[float]] = [[] for _ in texts]
    device = _device(model)
    for batch in _batches([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        for row, i in enumerate(batch):
            out[i] = picked[row, : len(encoded[i]) - 1].tolist()
    return out
