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
from typing import Callable, Sequence

import torch

from harness.config import require_positive
from harness.errors import HarnessError
from harness.tensors import pad_batch


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
    from harness.tensors import token_nll

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


def train(model, tokenizer, method, forget: Sequence[str], retain: Sequence[str] | None, cfg: TrainConfig,
          ref: Reference | None, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Unlearn in place; returns the log (per-step losses, steps, wall time)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    forget_ids = encode(tokenizer, forget, cfg.max_length)
    retain_ids = encode(tokenizer, retain, cfg.max_length) if retain else None
    micro_per_epoch = math.ceil(len(forget_ids) / cfg.batch_size)
    total = math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum)
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HarnessError(f"method '{method.name}': no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=cfg.resolved_precision(device.type) == "mixed")

    def retain_batches():
        while True:
            for i in torch.randperm(len(retain_ids), generator=gen).tolist():
                yield retain_ids[i]

    retain_stream = retain_batches() if retain_ids and method.needs_retain_set else None
    log: list[dict] = []
    t0 = time.perf_counter()
    checks: list[list[float]] = []  # [step, forget NLL] of each early-stopping measurement, from step 0

    def forget_nll_check() -> bool:
        nll = forget_set_nll(model, forget_ids, tokenizer.pad_token_id, device, cfg.batch_size, autocast)
        checks.append([step, round(nll, 4)])
        return nll >= cfg.stop_forget_nll

    step = 0
    if cfg.stop_forget_nll > 0 and forget_nll_check():
        raise HarnessError(f"method '{method.name}': the forget set's NLL is {checks[0][1]} before training, already "
                           f"past stop_forget_nll={cfg.stop_forget_nll}; raise the bound above it")
    stopped = False
    micro = 0
    while step < total and not stopped:
        order = torch.randperm(len(forget_ids), generator=gen).tolist()  # a new epoch
        for b in range(micro_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            f_batch = collate([forget_ids[i] for i in idx], tokenizer.pad_token_id, device)
            r_batch = (collate([next(retain_stream) for _ in idx], tokenizer.pad_token_id, device)
                       if retain_stream else None)
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
            if cfg.stop_forget_nll > 0 and step % cfg.stop_check_every == 0:
                stopped = forget_nll_check()
            if step >= total or stopped:
                break
    finished = method.finish(model)
    model.eval()
    out = {"config": asdict(cfg), "steps": step, "log": log, "seconds": round(time.perf_counter() - t0, 2)}
    if finished:
        out["finish"] = finished
    if cfg.stop_forget_nll > 0:
        out["early_stop"] = {"stopped": stopped, "bound": cfg.stop_forget_nll, "checks": checks}
    return out
