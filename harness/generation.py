"""Batched inference shared by every metric: greedy generation and per-token log-probs.

Generation uses left padding with an attention mask, and both functions process inputs in
length-sorted batches and return results in the input order, so a metric's value does not
depend on the batch size (tested). Prompts that begin with the same tokens (KnowMem's few-shot
examples) have that shared prefix run through the model once; each batch starts from a copy of
its key/value cache (tested to generate the same text as without it).
"""

from __future__ import annotations

from typing import Sequence

from harness.tensors import pad_batch


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _device(model):
    return next(model.parameters()).device


MIN_SHARED_PREFIX = 16  # tokens; below this a cached prefix saves less than its copies cost


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """How many leading token ids every sequence shares, leaving each at least one id of its own
    (the model must be run on one new token per row before it generates)."""
    if not encoded:
        return 0
    n = min(len(e) for e in encoded) - 1
    first = encoded[0]
    for e in encoded[1:]:
        n = next((i for i in range(n) if e[i] != first[i]), n)
    return max(n, 0)


def _prefix_cache(model, prefix: list[int], device):
    """The key/value cache of ``prefix`` (a batch of one), to be copied into each batch."""
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values


def greedy_generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                    batch_size: int = 8, max_length: int = 2048, stop: Sequence[str] = (),
                    heal_space: bool = False, share_prefix: bool = True) -> list[str]:
    """Greedy continuations (new text only, special tokens dropped) of each prompt.

    With ``stop``, a row stops generating once its new text (after any healed spaces) holds one
    of those strings, and a batch once every row has. The text up to the first stop string is
    the same as without it, so a metric that cuts there (KnowMem) is unchanged; it only skips
    the tokens the metric would throw away.

    With ``heal_space``, a prompt's trailing spaces are not fed as tokens of their own: the model
    continues the prompt without them, and the spaces are taken off the front of its
    continuation (whitespace token healing). Byte-level BPE tokenizers (GPT-2, Llama 3,
    SmolLM2) attach a word's leading space to the word (" Paris"), so MUSE's prompt ending
    "Answer: " would otherwise end in a lone space token such models never saw before a word,
    and they answer something else (SmolLM2-135M: "1322" instead of "Paris"). The text the
    model produces after the prompt is the same string either way.

    With ``share_prefix``, the token ids every prompt begins with (at least
    ``MIN_SHARED_PREFIX`` of them) are run once, and each batch generates from a copy of that
    cache; rows are padded between the prefix and their own tokens, masked as left padding is.
    The prompts' token ids are the same either way (the prefix is found in token space)."""
    import copy

    import torch

    keep = max(1, max_length - max_new_tokens)
    tails = [p[len(p.rstrip(" ")):] if heal_space else "" for p in prompts]
    encoded = [tokenizer(p[: len(p) - len(t)]).input_ids[-keep:] for p, t in zip(prompts, tails)]  # keep the end
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    device = _device(model)
    stop = [s for s in stop if s]
    shared = shared_prefix_length(encoded) if share_prefix else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    prefix_ids = list(encoded[0][:shared])
    prefix_cache = _prefix_cache(model, prefix_ids, device) if shared else None
    for batch in _batches([len(e) for e in encoded], batch_size):
        ids, mask = pad_batch([encoded[i][shared:] for i in batch], pad, side="left")
        kwargs = {}
        if shared:
            prefix = torch.tensor([prefix_ids]).expand(len(batch), -1)
            ids, mask = torch.cat([prefix, ids], 1), torch.cat([torch.ones_like(prefix), mask], 1)
            with torch.inference_mode():
                kwargs["past_key_values"] = copy.deepcopy(prefix_cache)
                kwargs["past_key_values"].batch_repeat_interleave(len(batch))
        width = ids.shape[1]
        criteria = [_StopInNewText(tokenizer, stop, width, [tails[i] for i in batch])] if stop else None
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad, eos_token_id=eos, stopping_criteria=criteria, **kwargs,
            )
        for row, i in enumerate(batch):
            text = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            out[i] = text[len(tails[i]):] if tails[i] and text.startswith(tails[i]) else text
    return out


class _StopInNewText:
    """Per-row stopping criterion: the row's generated text (prompt excluded, healed spaces taken
    off) contains a stop string. Hand-written because transformers' ``StopStringCriteria`` also
    matches strings that straddle the prompt's end (": " + the first new token), which would
    stop a row before the text a metric keeps. Decoding <= 32 new tokens a step is cheap."""

    def __init__(self, tokenizer, stops: Sequence[str], width: int, tails: Sequence[str]) -> None:
        self.tokenizer, self.stops, self.width, self.tails = tokenizer, list(stops), width, list(tails)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        done = [any(s in (t[len(tail):] if tail and t.startswith(tail) else t) for s in self.stops)
                for t, tail in zip(texts, self.tails)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def token_logprobs(model, tokenizer, texts: Sequence[str], batch_size: int = 8,
                   max_length: int = 2048) -> list[list[float]]:
    """Log-probability of every token of each text given its prefix (the first token excluded)."""
    import torch

    encoded = [tokenizer(t).input_ids[:max_length] for t in texts]
    pad = tokenizer.pad_token_id
    out: list[list[float]] = [[] for _ in texts]
    device = _device(model)
    for batch in _batches([len(e) for e in encoded], batch_size):
        ids, mask = pad_batch([encoded[i] for i in batch], pad, side="right")
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        for row, i in enumerate(batch):
            out[i] = picked[row, : len(encoded[i]) - 1].tolist()
    return out
