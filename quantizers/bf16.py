"""``bf16``: no quantization, the reference row. The weights are rounded to bfloat16 (what the
model is deployed in), and evaluated in the harness's compute dtype. torch is imported in
``_quantize``, so that building the quantizer loads no library."""

from __future__ import annotations

from harness.plugins import QUANTIZERS
from quantizers.base import Quantizer


@QUANTIZERS.register("bf16", summary="no quantization, bfloat16 weights (reference row)")
class BF16(Quantizer):
    """No quantization: weights in bfloat16 (the reference row)."""

    family = "none"
    paper = "-"
    library = "torch"

    def _quantize(self, model, tokenizer, calibration, save_to):
        import torch

        dtype = next(model.parameters()).dtype
        model.to(torch.bfloat16)
        if save_to is not None:
            model.save_pretrained(save_to)
            if tokenizer is not None:
                tokenizer.save_pretrained(save_to)
        return model.to(dtype)
