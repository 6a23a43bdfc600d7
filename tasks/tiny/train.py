"""Train the tiny world's tokenizer and its tiny Llama models until they memorise their data.

The tokenizer is a byte-level BPE (``tokenizers``) trained on the retain documents only, so
that forget and holdout names are equally unfamiliar to it; byte-level BPE covers any text. The models are ``LlamaForCausalLM`` with a few
hundred thousand parameters, trained from scratch with AdamW on whole documents (one
document per sequence, BOS + text + EOS), full-batch-ish, until the loss is near zero.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.training import collate, encode

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}


@dataclass
class TinyModelConfig:
    """Architecture and schedule of the tiny target / retrain models."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    epochs: int = 150
    lr: float = 3e-3
    warmup_steps: int = 20
    batch_size: int = 16
    seed: int = 0


def train_tokenizer(texts: Sequence[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer that prepends BOS, wrapped for transformers."""
    tok = Tokenizer(models.BPE())
    # Words carry their *trailing* whitespace ("Answer: " | "Paris"), so a prompt that ends in a
    # space, as MUSE's "Answer: " does, tokenizes exactly as in training.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\S+\s?|\s"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(SPECIAL["bos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A", pair=f"{SPECIAL['bos']} $A $B", special_tokens=[(SPECIAL["bos"], bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"], pad_token=SPECIAL["pad"],
        padding_side="left", model_max_length=512,
    )


def build_model(tokenizer, cfg: TinyModelConfig):
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def fit(model, tokenizer, texts: Sequence[str], cfg, on_step: Callable[[int, int, float], None] | None = None,
        max_length: int | None = None) -> dict:
    """Train ``model`` on ``texts`` (``cfg``: epochs, lr, warmup_steps, batch_size, seed, as in
    ``TinyModelConfig``), documents split into chunks of ``max_length`` tokens (default: the
    model's context); returns a log with the loss curve and wall time."""
    seqs = encode(tokenizer, texts, max_length or cfg.max_position_embeddings)

    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0, step, losses = time.perf_counter(), 0, []
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(seqs), generator=gen)
        if getattr(cfg, "group_by_length", False):
            perm = _grouped_by_length(perm, [len(q) for q in seqs], cfg.batch_size)
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
            out = model(**collate([seqs[i] for i in idx], tokenizer.pad_token_id, "cpu"))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            epoch_loss += out.loss.item() / steps_per_epoch
            step += 1
            if on_step:
                on_step(step, total, out.loss.item())
        losses.append(round(epoch_loss, 5))
    model.eval()
    return {"config": asdict(cfg), "epoch_losses": losses, "seconds": round(time.perf_counter() - t0, 2),
            "documents": len(seqs), "tokens": sum(len(q) for q in seqs)}


def _grouped_by_length(perm, lengths: Sequence[int], batch_size: int, group: int = 8):
    """The shuffled order with each run of ``group`` batches sorted by length (as the HF
    Trainer's ``group_by_length``): batches hold sequences of similar length, so less of each
    step is padding, while which sequences share a run stays random."""
    order = perm.tolist()
    size = group * batch_size
    runs = [sorted(order[i : i + size], key=lambda j: -lengths[j]) for i in range(0, len(order), size)]
    return torch.tensor([j for run in runs for j in run])
