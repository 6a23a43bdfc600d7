"""llama.cpp's K-quant mixes as quantizers, by llama.cpp's own C code: ``gguf_q4_k_m`` (Q4_K_M,
the format Ollama pulls by default) and ``gguf_q3_k_m``.

The ``gguf`` package rounds only the legacy block formats in numpy (``quantizers/gguf.py``); the
K-quants exist only in ggml's C code, so the model is written as an F32 llama GGUF
(``quantizers/gguf_export.py``), quantized by ``llama_model_quantize`` from ``llama-cpp-python``
(its bundled llama.cpp, the same code path as the ``llama-quantize`` tool, no importance matrix),
and read back with the ``gguf`` reader, whose numpy dequantization of every K-quant type is
ggml's. The linear layers of the decoder blocks take the dequantized weights; embeddings, norms and
``lm_head`` are left as every other quantizer here leaves them.

A mix, not one format: llama.cpp picks a type per tensor (Q4_K_M: Q6_K for half the ``attn_v``
and ``ffn_down`` tensors, Q4_K elsewhere), and a K-quant needs rows of a multiple of 256 columns
(super-blocks). A narrower tensor falls back to a legacy type (Q4_K -> Q5_0, Q6_K -> Q8_0,
Q3_K -> Q4_0), as ``llama-quantize`` does: on SmolLM2-135M (hidden 576) every tensor but
``ffn_down`` (1536 columns) falls back, which is what a user who pulls its Q4_K_M gets. The types
each layer got are in the quantization record (``tensor_types``) and bound the contract test's
distinct-value check (``levels``).

``llama-cpp-python`` is an optional extra (``pip install -e '.[llamacpp]'``: a source build of
llama.cpp, docs/usage.md says what it costs); without it these quantizers say so and are skipped.
"""

from __future__ import annotations

import ctypes
import importlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.plugins import QUANTIZERS
from harness.tensors import linear_names
from quantizers.base import Quantizer
from quantizers.gguf import check_divisible_by_block
from quantizers.gguf_export import check_exportable, gguf_tensor_names, unpermute, write_llama_gguf

EXTRA = "pip install -e '.[llamacpp]'"
# (values per weight group, columns per group) of each type a K-quant mix may give a tensor:
# K-quants scale sub-blocks of 16 (Q3_K, Q6_K) or 32 (Q4_K, Q5_K) columns
LEVELS = {"Q3_K": (8, 16), "Q4_K": (16, 32), "Q5_K": (32, 32), "Q6_K": (64, 16), "Q4_0": (16, 32),
          "Q4_1": (16, 32), "Q5_0": (32, 32), "Q5_1": (32, 32), "Q8_0": (256, 32)}


class _LlamaCpp(Quantizer):
    family = "gguf"
    library = "llama_cpp_python"
    paper = "llama.cpp (ggml) K-quants"
    ftype_name = ""  # the llama_cpp.LLAMA_FTYPE_MOSTLY_* member

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.tensor_types: dict[str, str] = {}  # module name -> GGML type, of the last quantization

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            importlib.import_module("llama_cpp")
        except ImportError:
            return f"quantizer '{cls.name}' needs llama-cpp-python (llama.cpp's C code); install it with {EXTRA}"
        return None

    def scale_group(self, in_features: int) -> int:
        return 16  # the narrowest sub-block any type of the mix scales (Q3_K, Q6_K)

    def levels(self, name: str, in_features: int) -> tuple[int, int]:
        """(distinct values at most, columns per group) of layer ``name``, by the type it got."""
        return LEVELS[self.tensor_types[name]]

    def describe(self, calibration=None) -> dict[str, Any]:
        return {**super().describe(calibration), "ftype": self.ftype_name,
                "tensor_types": dict(Counter(self.tensor_types.values()))}

    def _quantize(self, model, tokenizer, calibration, save_to):
        reason = self.unavailable_reason()
        if reason:
            raise HarnessError(reason)
        check_divisible_by_block(model, self.name)
        check_exportable(model, tokenizer)
        with tempfile.TemporaryDirectory(prefix="harness-llamacpp-") as tmp:
            source, out = Path(tmp) / "f32.gguf", Path(tmp) / "model.gguf"
            write_llama_gguf(source, model, tokenizer)
            run_llama_quantize(source, out, self.ftype_name)
            self.tensor_types = load_linear_weights(model, out)
            if save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(save_to)
                tokenizer.save_pretrained(save_to)
                (save_to / "model.gguf").write_bytes(out.read_bytes())
        return model


def run_llama_quantize(source: Path, out: Path, ftype_name: str) -> None:
    """``llama_model_quantize`` (what ``llama-quantize`` runs) on ``source``; llama.cpp's log is
    kept and its last lines raised as a one-line error if it fails."""
    import llama_cpp
    import torch

    log: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level, text, user_data):  # llama.cpp prints a line per tensor: kept, not shown
        log.append(text.decode(errors="replace"))

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = torch.get_num_threads()
    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    finally:  # llama.cpp's default logger back, whatever happened
        llama_cpp.llama_log_set(llama_cpp.llama_log_callback(0), ctypes.c_void_p(0))
    if rc != 0 or not out.exists():
        tail = " ".join("".join(log).split())[-300:]
        raise HarnessError(f"llama.cpp could not quantize to {ftype_name} (code {rc}): {tail}")


def load_linear_weights(model, path: Path) -> dict[str, str]:
    """Copy the dequantized linear weights of the GGUF at ``path`` into ``model`` (Q/K rows
    un-permuted); returns each layer's GGML type."""
    import gguf
    import torch

    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    cfg, types = model.config, {}
    names = gguf_tensor_names(model)
    for module_name in linear_names(model):
        tensor = tensors[f"{names[module_name]}.weight"]
        weight = model.get_submodule(module_name).weight
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(weight.shape)
        n_head = cfg.num_attention_heads if module_name.endswith("q_proj") else \
            cfg.num_key_value_heads if module_name.endswith("k_proj") else None
        w = unpermute(w, n_head) if n_head else w
        with torch.no_grad():
            weight.copy_(torch.from_numpy(w.copy()).to(weight.dtype))
        types[module_name] = tensor.tensor_type.name
    return types


@QUANTIZERS.register("gguf_q4_k_m", summary="llama.cpp Q4_K_M (Ollama's default): 4-bit K-quant mix by llama.cpp's C code (llama-cpp-python)")
class GGUFQ4_K_M(_LlamaCpp):
    """llama.cpp's Q4_K_M: Q4_K (super-blocks of 256, 6-bit scales and mins per 32), Q6_K for
    half the ``attn_v`` and ``ffn_down`` tensors; narrower tensors fall back to Q5_0 / Q8_0."""

    bits = 4
    ftype_name = "Q4_K_M"


@QUANTIZERS.register("gguf_q3_k_m", summary="llama.cpp Q3_K_M: 3-bit K-quant mix by llama.cpp's C code (llama-cpp-python)")
class GGUFQ3_K_M(_LlamaCpp):
    """llama.cpp's Q3_K_M: Q3_K, with Q4_K / Q5_K for ``attn_v`` and some ``ffn_down``; narrower
    tensors fall back to legacy types."""

    bits = 3
    ftype_name = "Q3_K_M"
