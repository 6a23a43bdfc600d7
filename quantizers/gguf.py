"""llama.cpp's legacy GGUF block formats as quantizers: ``gguf_q4_0``, ``gguf_q4_1``,
``gguf_q5_0``, ``gguf_q8_0``.

Every 32 consecutive input columns of a linear weight row (all linear layers but ``lm_head``)
form a block rounded by the ``gguf`` package's reference numpy implementation of the format,
bit-exact with ggml's C code; the model keeps plain linear layers holding the dequantized
weights, in its own dtype. With ``save_to`` the fake-quantized transformers checkpoint (what
``harness eval --model DIR`` loads) and ``model.gguf`` (the raw quantized blocks, for
llama.cpp; Llama models only) are written. torch and ``gguf`` are imported where weights are
rounded, so that building the quantizer loads neither (``quantizers/base.py``).
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.plugins import QUANTIZERS
from harness.tensors import linear_names
from quantizers.base import Quantizer
from quantizers.gguf_export import check_exportable, write_llama_gguf

BLOCK = 32  # columns per block in all four formats (ggml's QK4_0, QK4_1, QK5_0, QK8_0)


class _GGUF(Quantizer):
    family = "gguf"
    library = "gguf"
    paper = "llama.cpp (ggml) GGUF format"
    qtype_name = ""  # the gguf.GGMLQuantizationType member

    def scale_group(self, in_features: int) -> int:
        return BLOCK

    def _quantize(self, model, tokenizer, calibration, save_to):
        import gguf

        check_divisible_by_block(model, self.name)
        if save_to is not None:
            check_exportable(model, tokenizer)
        qtype = gguf.GGMLQuantizationType[self.qtype_name]
        packed = {name: fake_quantize(model.get_submodule(name).weight, qtype) for name in linear_names(model)}
        if save_to is not None:
            save(model, tokenizer, save_to, qtype, packed)
        return model


def check_divisible_by_block(model, quantizer: str) -> None:
    """One-line error when a layer's width is no multiple of 32 (every row is cut into blocks)."""
    for name in linear_names(model):
        cols = model.get_submodule(name).in_features
        if cols % BLOCK:
            raise HarnessError(f"quantizer '{quantizer}': layer {name} has {cols} input columns, "
                               f"not a multiple of the GGUF block size {BLOCK}")


def fake_quantize(weight, qtype):
    """Replace ``weight`` in place by its quantize-dequantize round trip; returns the raw blocks."""
    import gguf
    import torch

    w = weight.detach().float().cpu().numpy()
    raw = gguf.quants.quantize(w, qtype)
    deq = gguf.quants.dequantize(raw, qtype).reshape(w.shape)
    with torch.no_grad():
        weight.copy_(torch.from_numpy(deq).to(weight.dtype))
    return raw


def save(model, tokenizer, save_to, qtype, packed) -> None:
    save_to.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_to)
    tokenizer.save_pretrained(save_to)
    write_llama_gguf(save_to / "model.gguf", model, tokenizer, qtype, packed)


@QUANTIZERS.register("gguf_q4_0", summary="llama.cpp GGUF Q4_0: 4-bit, blocks of 32, fp16 absmax scale (gguf)")
class GGUFQ4_0(_GGUF):
    """llama.cpp's Q4_0: 4-bit symmetric, one fp16 scale per block of 32."""

    bits = 4
    qtype_name = "Q4_0"


@QUANTIZERS.register("gguf_q4_1", summary="llama.cpp GGUF Q4_1: 4-bit, blocks of 32, fp16 scale and min (gguf)")
class GGUFQ4_1(_GGUF):
    """llama.cpp's Q4_1: 4-bit asymmetric, fp16 scale and minimum per block of 32."""

    bits = 4
    qtype_name = "Q4_1"


@QUANTIZERS.register("gguf_q5_0", summary="llama.cpp GGUF Q5_0: 5-bit, blocks of 32, fp16 absmax scale (gguf)")
class GGUFQ5_0(_GGUF):
    """llama.cpp's Q5_0: 5-bit symmetric, one fp16 scale per block of 32."""

    bits = 5
    qtype_name = "Q5_0"


@QUANTIZERS.register("gguf_q8_0", summary="llama.cpp GGUF Q8_0: 8-bit, blocks of 32, fp16 absmax scale (gguf)")
class GGUFQ8_0(_GGUF):
    """llama.cpp's Q8_0: 8-bit symmetric, one fp16 scale per block of 32."""

    bits = 8
    qtype_name = "Q8_0"
