"""The contract of a quantizer: a typed config, capability flags, and ``quantize``.

``quantize(model, tokenizer, calibration, save_to)`` never changes ``model``; it returns a new
model that the evaluation code runs like any other (weights fake-quantized into plain linear
layers, or the library's own quantized layers where the format cannot be expressed as
weights alone, e.g. LLM.int8's outlier decomposition). With ``save_to`` it also writes the
library's deployable checkpoint there. ``describe()`` is the full record of what was done
(scheme, bits, group size, calibration, library and version), stored with every result.

Capability flags the runner and the tests read instead of checking names: ``bits`` (None for
no quantization), ``needs_calibration`` (GPTQ, AWQ: text from the task), ``library``,
``requires_accelerator`` (skipped, with the reason recorded, on a machine without one).

torch and each quantizer's library are imported inside the methods that need them, here and in
every quantizer, so that building a quantizer (its settings are checked when a task or a run is
loaded) loads none of them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from harness.config import build_config
from harness.errors import HarnessError
from harness.tensors import linear_names


@dataclass
class QuantConfig:
    """Settings shared by every quantizer (none yet); families subclass it."""


class Quantizer:
    """Base class; subclasses set ``name``, ``bits``, ``library`` and implement ``_quantize``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    library: ClassVar[str | None] = None  # the pip distribution doing the work
    bits: ClassVar[int | None] = None
    version: ClassVar[int] = 1  # bump when this plugin's code changes its output: part of every stage id using it
    needs_calibration: ClassVar[bool] = False
    requires_accelerator: ClassVar[bool] = False  # the runner skips it on a CPU-only machine
    # True when the quantizer rescales input channels and folds the inverse into the layer before
    # (AWQ): its linear weights are then not comparable one by one with the model's own
    rescales_channels: ClassVar[bool] = False
    Config: ClassVar[type] = QuantConfig

    def __init__(self, **settings: Any) -> None:
        self.cfg = build_config(self.Config, settings, f"quantizer '{self.name}'")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this quantizer cannot run here (None when it can)."""
        if cls.requires_accelerator:
            import torch

            if not torch.accelerator.is_available():
                return f"quantizer '{cls.name}' needs a GPU and none is available"
        return None

    def scale_group(self, in_features: int) -> int:
        """Input columns that share one scale (for the contract test's distinct-value check)."""
        return in_features

    def levels(self, name: str, in_features: int) -> tuple[int, int]:
        """(distinct values at most, input columns sharing them) in layer ``name``'s deployed
        weight, for the contract test; a mix of formats (llama.cpp's K-quants) answers per layer."""
        return 2 ** self.bits, self.scale_group(in_features)

    def describe(self, calibration=None) -> dict[str, Any]:
        """Everything needed to reproduce this quantization (``calibration``: what was used)."""
        version = None
        if self.library:
            try:
                version = metadata.version(self.library)
            except metadata.PackageNotFoundError:
                version = None
        return {"name": self.name, "family": self.family, "bits": self.bits, "paper": self.paper,
                "library": self.library, "library_version": version, "config": dataclasses.asdict(self.cfg),
                "calibration": calibration.record if self.needs_calibration and calibration else None}

    def quantize(self, model, tokenizer=None, calibration=None, save_to: str | Path | None = None):
        """A quantized copy of ``model`` ready to evaluate; ``model`` itself is left unchanged."""
        if self.needs_calibration and (calibration is None or not calibration.texts):
            raise HarnessError(f"quantizer '{self.name}' needs calibration text; pass --task so it "
                               f"can take it from the task's retain split")
        if self.needs_calibration and tokenizer is None:
            raise HarnessError(f"quantizer '{self.name}' needs the model's tokenizer for calibration")
        work = copy.deepcopy(model)
        out = self._quantize(work, tokenizer, calibration, Path(save_to) if save_to else None)
        return out.eval()

    def _quantize(self, model, tokenizer, calibration, save_to: Path | None):
        raise NotImplementedError


def check_divisible(model, group_size: int, quantizer: str) -> None:
    """One-line error (before any work) when a layer's width is not a multiple of the group."""
    for name in linear_names(model):
        cols = model.get_submodule(name).in_features
        if cols >= group_size and cols % group_size:
            raise HarnessError(f"quantizer '{quantizer}': layer {name} has {cols} input columns, not a "
                               f"multiple of group_size {group_size}; pass --set group_size=N with N dividing it")
