"""The one training loop every unlearning method runs in, in both modes (full and LoRA).

AdamW, constant learning rate with optional linear warm-up, gradient-norm clipping at 1.0
(the HF Trainer default MUSE trained with), epochs over the forget set,
per-device batch size and gradient accumulation, forget and retain batches drawn together
(the retain set cycles), seed, optional gradient checkpointing. A method supplies only its
loss (``methods.base.UnlearningMethod``). A non-finite loss stops the run with an error that
names the method, the step and the value.

Early stopping (``stop_forget_nll``): every ``stop_check_every`` steps the loop measures the mean
per-token NLL of the whole forget set and stops once it reaches the bound. Gradient ascent and
NPO without a retain term have no fixed point: they forget, then erase everything, and a fixed
step count lands in the short stretch between the two only at the seed it was tuned on. A bound
on what they optimise (how unlikely the forget text has become) moves with the run: where that
stretch spans the same NLL range at every seed, it stops there at every seed (the tiny world's
YAML gives the ranges measured).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import torch

from harness.config import require_positive
from harness.errors import HarnessError
from harness.tensors import pad_batch, token_nll


@dataclass
class TrainConfig:
    """Training-loop settings (defaults: MUSE full fine-tuning, effective batch 32)."""

    lr: float = 1e-5
    epochs: int = 10
    batch_size: int = 4
    grad_accum: int = 8
    max_length: int = 2048
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # clip, as the HF Trainer that MUSE trains with does by default; 0 = off
    max_steps: int = 0  # > 0 stops after this many optimizer steps (tests, sweeps)
    seed: int = 0
    gradient_checkpointing: bool = False
    only_linear: bool = False  # full mode: train only the layers quantizers quantize (linear, not lm_head)
    # "mixed": fp32 master weights, bf16 autocast on CUDA (the HF Trainer's bf16 mode); "bf16":
    # train the bf16 weights themselves (half the memory, but an Adam step of lr 1e-5 is below
    # half a bf16 ulp for |w| > ~2e-3 and rounds away); "fp32". "auto": mixed on CUDA, else fp32.
    precision: str = "auto"
    stop_forget_nll: float = 0.0  # > 0: stop once the forget set's mean token NLL (nats) reaches it
    stop_check_every: int = 1  # optimizer steps between two such measurements

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise HarnessError(f"lr must be > 0, got {self.lr}")
        if self.stop_forget_nll < 0:
            raise HarnessError(f"stop_forget_nll must be >= 0 (0 = off), got {self.stop_forget_nll}")
        require_positive(self, "epochs", "batch_size", "grad_accum", "max_length", "stop_check_every")
        for name in ("warmup_steps", "max_steps", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:  # a negative warmup would make the lr negative: ascent turned into descent
                raise HarnessError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise HarnessError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def resolved_precision(self, device_type: str) -> str:
        if self.precision == "auto":
            return "mixed" if device_type == "cuda" else "fp32"
        return self.precision


PRECISIONS = ("auto", "mixed", "bf16", "fp32")


class Reference:
    """Frozen reference outputs (the target): a separate frozen model, or, in LoRA mode, the
    same model with its adapter disabled, which costs no extra memory."""

    def __init__(self, model=None, peft_model=None) -> None:
        self.model, self.peft_model = model, peft_model

    def _forward(self, batch: dict, hidden: bool):
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=hidden)
        with torch.no_grad():
            if self.peft_model is not None:
                with self.peft_model.disable_adapter():
                    return self.peft_model(**kwargs)
            return self.model(**kwargs)

    def logits(self, batch: dict) -> torch.Tensor:
        return self._forward(batch, hidden=False).logits

    def hidden(self, batch: dict, layer: int) -> torch.Tensor:
        return self._forward(batch, hidden=True).hidden_states[layer + 1].float()


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """BOS (if the tokenizer adds one) + text + EOS, split into consecutive chunks of at most
    ``max_length`` tokens, as MUSE trains: a whole book is many training sequences, not its
    first ``max_length`` tokens (MUSE-Books' forget set is 4 documents of ~1M tokens)."""
    chunks = []
    for text in texts:
        ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
        chunks += [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    return chunks


def collate(seqs: list[list[int]], pad_id: int, device) -> dict:
    """A training batch: right-padded ids, mask, and labels with padding ignored (-100)."""
    ids, mask = pad_batch(seqs, pad_id, side="right")
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "labels": ids.masked_fill(mask == 0, -100).to(device)}


def forget_set_nll(model, seqs: list[list[int]], pad_id: int, device, batch_size: int, autocast) -> float:
    """Mean per-token NLL of the training sequences ``seqs`` under ``model`` (eval mode, no grad)."""
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    with torch.no_grad(), autocast:
        for i in range(0, len(seqs), batch_size):
            batch = collate(seqs[i : i + batch_size], pad_id, device)
            nll, mask = token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                  batch["labels"])
            total, count = total + float(nll.sum()), count + int(mask.sum())
    model.train(was_training)
    return total / max(count, 1)


def _optimizer(model, method, cfg: TrainConfig):
    """AdamW over the trainable parameters, with the linear warm-up of ``cfg.warmup_steps``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HarnessError(f"method '{method.name}': no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = (lambda s: min(1.0, (s + 1) / cfg.warmup_steps)) if cfg.warmup_steps else (lambda s: 1.0)
    return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup)


def _micro_batches(forget_ids, retain_ids, cfg: TrainConfig, gen, pad_id: int,
                   device) -> Iterator[tuple[dict, dict | None]]:
    """``(forget batch, retain batch or None)`` for ever: each epoch a new shuffle of the forget
    set; retain sequences from their own endless shuffled stream, one per forget sequence. The
    shuffles are drawn from ``gen`` only when a batch is asked for, so a run that stops early
    draws exactly what it used."""

    def retain_stream():
        while True:
            for i in torch.randperm(len(retain_ids), generator=gen).tolist():
                yield retain_ids[i]

    retain = retain_stream() if retain_ids else None
    while True:
        order = torch.randperm(len(forget_ids), generator=gen).tolist()  # a new epoch
        for b in range(math.ceil(len(forget_ids) / cfg.batch_size)):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            yield (collate([forget_ids[i] for i in idx], pad_id, device),
                   collate([next(retain) for _ in idx], pad_id, device) if retain else None)


class _EarlyStop:
    """The forget-set NLL measured every ``stop_check_every`` steps (and before training) against
    ``stop_forget_nll``; off when that bound is 0."""

    def __init__(self, model, forget_ids, pad_id: int, device, cfg: TrainConfig, autocast, method_name: str) -> None:
        self.on = cfg.stop_forget_nll > 0
        self.cfg, self.checks = cfg, []  # [step, forget NLL] of each measurement, from step 0
        self.measure = lambda: forget_set_nll(model, forget_ids, pad_id, device, cfg.batch_size, autocast)
        if self.on and self.reached(0):
            raise HarnessError(f"method '{method_name}': the forget set's NLL is {self.checks[0][1]} before training, "
                               f"already past stop_forget_nll={cfg.stop_forget_nll}; raise the bound above it")

    def reached(self, step: int) -> bool:
        nll = self.measure()
        self.checks.append([step, round(nll, 4)])
        return nll >= self.cfg.stop_forget_nll

    def after(self, step: int) -> bool:
        return self.on and step % self.cfg.stop_check_every == 0 and self.reached(step)

    def record(self, stopped: bool) -> dict | None:
        return {"stopped": stopped, "bound": self.cfg.stop_forget_nll, "checks": self.checks} if self.on else None


def train(model, tokenizer, method, forget: Sequence[str], retain: Sequence[str] | None, cfg: TrainConfig,
          ref: Reference | None, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Unlearn in place; returns the log (per-step losses, steps, wall time)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    forget_ids = encode(tokenizer, forget, cfg.max_length)
    retain_ids = encode(tokenizer, retain, cfg.max_length) if retain and method.needs_retain_set else None
    total = math.ceil(cfg.epochs * math.ceil(len(forget_ids) / cfg.batch_size) / cfg.grad_accum)
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    params, opt, sched = _optimizer(model, method, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.resolved_precision(device.type) == "mixed")
    batches = _micro_batches(forget_ids, retain_ids, cfg, gen, tokenizer.pad_token_id, device)
    log: list[dict] = []
    t0 = time.perf_counter()
    early = _EarlyStop(model, forget_ids, tokenizer.pad_token_id, device, cfg, autocast, method.name)
    step = micro = 0
    stopped = False
    while step < total and not stopped:
        f_batch, r_batch = next(batches)
        method.start_step(step, total)
        with autocast:
            loss, parts = method.loss(model, f_batch, r_batch, ref)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise HarnessError(f"method '{method.name}': non-finite loss {value} at step {step + 1}; "
                               f"lower the learning rate (now {cfg.lr}) or the loss weights")
        method.backward(model, loss / cfg.grad_accum, f_batch, r_batch, ref)
        micro += 1
        if micro % cfg.grad_accum:
            continue
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        log.append({"step": step, "loss": round(value, 6), **{k: round(v, 6) for k, v in parts.items()}})
        if on_step:
            on_step(step, total, value)
        stopped = early.after(step)
    finished = method.finish(model)
    model.eval()
    out = {"config": asdict(cfg), "steps": step, "log": log, "seconds": round(time.perf_counter() - t0, 2)}
    if finished:
        out["finish"] = finished
    if early.on:
        out["early_stop"] = early.record(stopped)
    return out
