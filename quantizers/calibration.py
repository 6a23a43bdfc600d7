"""Calibration text for GPTQ and AWQ, taken from the task (its retain split by default).

The source (``config/split`` of the task's MUSE dataset), the number of samples and their
token length are settings; what was actually used (including how many documents there were)
is recorded with every quantization. ``datasets`` is imported in ``tokenized`` only: ``harness ls``
imports this module (through ``harness.quantization``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from harness.config import build_config
from harness.errors import HarnessError
from tasks.data import load_split


@dataclass
class CalibrationSettings:
    source: str = "raw/retain1"  # a text split of the task's dataset: raw/* or privleak/*
    samples: int = 128  # documents drawn (all of them if the split has fewer)
    max_length: int = 512  # tokens per sample (longer documents are truncated)
    seed: int = 0  # which documents are drawn when the split has more than ``samples``

    def __post_init__(self) -> None:
        config, sep, split = self.source.partition("/")
        if not sep or not config or not split:
            raise HarnessError(f"calibration source {self.source!r} must be CONFIG/SPLIT, e.g. raw/retain1")
        if int(self.samples) < 1 or int(self.max_length) < 8:
            raise HarnessError("calibration needs samples >= 1 and max_length >= 8")


@dataclass
class Calibration:
    """Calibration documents, their token length, and the record of where they came from."""

    texts: list[str]
    max_length: int = 512
    record: dict[str, Any] = field(default_factory=dict)


def settings_for(task=None, overrides: dict[str, Any] | None = None) -> CalibrationSettings:
    """The task's calibration defaults (its YAML ``calibration:`` block) with ``overrides`` on top."""
    values = dict(getattr(task, "calibration", None) or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_config(CalibrationSettings, values, f"{task.task}: calibration" if task else "calibration")


def from_task(task, settings: CalibrationSettings | None = None) -> Calibration:
    """Draw the calibration documents from ``task`` as ``settings`` (default: the task's own) say."""
    settings = settings or settings_for(task)
    config, _, split = settings.source.partition("/")
    rows = load_split(task.dataset, config, split)
    if not rows or "text" not in rows[0]:
        raise HarnessError(f"calibration source {settings.source} of task '{task.task}' has no 'text' "
                           f"field; use a raw/* or privleak/* split")
    texts = [r["text"] for r in rows if r["text"].strip()]
    if len(texts) > settings.samples:
        texts = random.Random(settings.seed).sample(texts, settings.samples)
    record = {"task": task.task, "dataset": task.dataset, "source": settings.source,
              "samples": len(texts), "available": len(rows), "max_length": settings.max_length,
              "seed": settings.seed}
    return Calibration(texts, int(settings.max_length), record)


def tokenized(tokenizer, texts: list[str], max_length: int):
    """A ``datasets.Dataset`` of ``input_ids`` / ``attention_mask`` (what llm-compressor takes)."""
    from datasets import Dataset

    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def packed(tokenizer, texts: list[str], max_length: int):
    """The same documents as ``tokenized``, as ``len(texts)`` sequences of one length: each
    document truncated as there, all of them joined (end-of-text token between two, where the
    tokenizer has one) and cut into equal pieces of at most ``max_length`` tokens; the few
    tokens left over at the end are dropped. For a quantizer that batches calibration
    sequences and cannot pad them (AutoRound through llm-compressor, quantizers/autoround.py)."""
    from datasets import Dataset

    pieces = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = [token for i, ids in enumerate(pieces) for token in (sep if i else []) + list(ids)]
    length = min(int(max_length), len(stream) // len(texts))
    if length < 1:
        raise HarnessError(f"calibration has {len(stream)} tokens, too few for {len(texts)} sequences")
    ids = [stream[i * length:(i + 1) * length] for i in range(len(stream) // length)][:len(texts)]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * length for _ in ids]})
