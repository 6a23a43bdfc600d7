"""The one place that drives llm-compressor (RTN, GPTQ, AWQ) and its compressed-tensors format.

Every llm-compressor quantizer is a recipe modifier run by ``oneshot`` on an in-memory model,
with the same integer weight scheme (group-wise, asymmetric with zero point by default, all
linear layers but ``lm_head``). After ``oneshot`` the model computes with fake-quantized
weights through a wrapped ``forward``; ``materialize`` writes those quantize-dequantize
weights into plain ``nn.Linear`` layers, so evaluation runs the same code (and speed) as any
model. The compressed checkpoint (``save_to``) is written before that, from the
compressed-tensors state, and loads in vLLM and in ``transformers``.

Workarounds for llm-compressor 0.14, each guarded and only here:

* ``oneshot`` re-reads the model's config from ``config.name_or_path``, which fails for an
  in-memory model built or trained here; we point it at a copy of the in-memory config.
* AWQ pins its activation cache to page-locked memory, which raises without an accelerator;
  pinning only speeds up host-to-device copies, so on a CPU-only machine it is skipped.

torch, llm-compressor and compressed-tensors are imported inside the functions: building a
quantizer (its settings are checked when a task or a run is loaded) loads none of them, and
llm-compressor's log level is set (below) before its first import.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import require_positive
from quantizers.base import QuantConfig, Quantizer, check_divisible
from quantizers.calibration import Calibration, tokenized

# llm-compressor logs every lifecycle step at INFO and warns on each call that it is running
# on CPU; keep errors only unless the user asks for more (its own environment variable).
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")


@dataclass
class IntWeightConfig(QuantConfig):
    group_size: int = 128  # input columns sharing one scale and zero point
    symmetric: bool = False  # False: asymmetric with a zero point (the default everywhere here)

    def __post_init__(self) -> None:
        require_positive(self, "group_size")


def int_weight_scheme(bits: int, cfg: IntWeightConfig) -> dict[str, Any]:
    """compressed-tensors ``config_groups`` for weight-only group-wise integer quantization."""
    return {"group_0": {"targets": ["Linear"], "weights": {
        "num_bits": bits, "type": "int", "strategy": "group", "group_size": int(cfg.group_size),
        "symmetric": bool(cfg.symmetric), "dynamic": False}}}


@contextlib.contextmanager
def _config_on_disk(model):
    """Point ``config.name_or_path`` at a folder holding the in-memory config (see above)."""
    old = model.config.name_or_path
    with tempfile.TemporaryDirectory(prefix="harness-cfg-") as folder:
        model.config.save_pretrained(folder)
        model.config.name_or_path = folder
        try:
            yield
        finally:
            model.config.name_or_path = old


@contextlib.contextmanager
def _no_pinning_without_accelerator():
    import torch

    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def run_oneshot(model, modifier, tokenizer=None, calibration: Calibration | None = None, dataset=None):
    """Apply one llm-compressor modifier to ``model`` in place (calibrated when given text;
    ``dataset``: its tokenized form when not ``tokenized``'s one document per sequence)."""
    from llmcompressor import oneshot

    kwargs: dict[str, Any] = {}
    if calibration is not None:
        if dataset is None:
            dataset = tokenized(tokenizer, calibration.texts, calibration.max_length)
        kwargs = dict(tokenizer=tokenizer, dataset=dataset, num_calibration_samples=len(dataset),
                      max_seq_length=calibration.max_length, shuffle_calibration_samples=False)
    from compressed_tensors.offload import remove_dispatch

    device = next(model.parameters()).device
    # its tqdm bars (several per layer) would bury the run's own progress display
    quiet = contextlib.redirect_stderr(io.StringIO()) if os.environ["LLM_COMPRESSOR_LOG_LEVEL"].upper() == "ERROR" \
        else contextlib.nullcontext()
    with _config_on_disk(model), _no_pinning_without_accelerator(), quiet:
        oneshot(model=model, recipe=modifier, **kwargs)
    # oneshot leaves every module behind an offloading cache; a plain module tree again
    return remove_dispatch(model).to(device)


def materialize(model):
    """Replace fake quantization (wrapped forward + scale/zero-point) by the dequantized
    weights themselves; returns the model with plain linear layers."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize
    from compressed_tensors.quantization.quant_metadata import QuantizationMetadata

    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None:
                continue
            if scheme.weights is not None:
                dequantized = forward_quantize(module, module.weight.data, "weight", scheme.weights)
                module.weight.data.copy_(dequantized)
            QuantizationMetadata.clear_quantization(module)
            for attr in ("quantization_scheme", "quantization_status", "quantization_enabled"):
                if hasattr(module, attr):
                    delattr(module, attr)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model


def save_compressed(model, tokenizer, folder: Path) -> None:
    """The compressed-tensors checkpoint (vLLM-servable), from the still-quantized model.
    Saving packs ``model``'s weights in place (llm-compressor's wrapped ``save_pretrained``
    always acts on the model it wrapped, even from a copy), so ``model`` is spent after it."""
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # its writer offloads internally and warns about it
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
        model.save_pretrained(folder, save_compressed=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


class LLMCompressorQuantizer(Quantizer):
    """An integer weight-only scheme applied by one llm-compressor modifier."""

    library = "llmcompressor"
    Config = IntWeightConfig

    def scale_group(self, in_features: int) -> int:
        return min(int(self.cfg.group_size), in_features)

    def modifier(self):
        raise NotImplementedError

    def after_oneshot(self, model) -> None:
        """Repair what the modifier left in ``model`` before it is dequantized or saved (none here)."""

    def calibration_dataset(self, tokenizer, calibration: Calibration):
        """The calibration text as ``oneshot`` gets it: one document per sequence, unpadded."""
        return tokenized(tokenizer, calibration.texts, calibration.max_length)

    def _quantize(self, model, tokenizer, calibration, save_to):
        check_divisible(model, int(self.cfg.group_size), self.name)
        if self.needs_calibration:
            model = run_oneshot(model, self.modifier(), tokenizer, calibration,
                                self.calibration_dataset(tokenizer, calibration))
        else:
            model = run_oneshot(model, self.modifier())
        self.after_oneshot(model)
        if save_to is None:
            return materialize(model)
        evaluated = materialize(copy.deepcopy(model))
        save_compressed(model, tokenizer, save_to)
        return evaluated
