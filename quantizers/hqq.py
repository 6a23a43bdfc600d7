"""HQQ, Half-Quadratic Quantization (Badri & Shaji 2023, mobiusml's ``hqq`` package): ``hqq4``.

4-bit asymmetric, one scale and zero point per group of ``group_size`` consecutive input columns
(64 by default, HQQ's own), found without calibration data by HQQ's half-quadratic solver, which
fits the zero point to minimise a sparsity-promoting (lp, p < 1) norm of the rounding error
rather than min-max. ``hqq.core.quantize.HQQLinear`` quantizes each linear layer but ``lm_head``
on the CPU; its PyTorch forward multiplies by the dequantized weight, so the model keeps plain
linear layers holding exactly that weight (the same computation, in the model's dtype), and the
mechanism columns compare it weight by weight. With ``save_to`` the fake-quantized transformers
checkpoint is written (HQQ's own packed format needs its runtime to load). torch and ``hqq``
are imported in ``_quantize``, so that building the quantizer loads neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import require_positive
from harness.errors import HarnessError
from harness.plugins import QUANTIZERS
from harness.tensors import linear_names
from quantizers.base import QuantConfig, Quantizer


@dataclass
class HQQConfig(QuantConfig):
    group_size: int = 64  # input columns per scale and zero point

    def __post_init__(self) -> None:
        require_positive(self, "group_size", minimum=8)


@QUANTIZERS.register("hqq4", summary="4-bit HQQ, group 64, calibration-free half-quadratic zero points (hqq)")
class HQQ4(Quantizer):
    """4-bit HQQ: asymmetric groups whose zero points a half-quadratic solver fits."""

    family = "hqq"
    library = "hqq"
    paper = "Badri & Shaji 2023, Half-Quadratic Quantization of Large Machine Learning Models"
    bits = 4
    Config = HQQConfig

    def scale_group(self, in_features: int) -> int:
        return self.cfg.group_size

    def _quantize(self, model, tokenizer, calibration, save_to):
        import torch
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        names = linear_names(model)
        for name in names:  # checked for every layer before any work
            cols = model.get_submodule(name).in_features
            if cols % self.cfg.group_size:
                raise HarnessError(f"quantizer '{self.name}': layer {name} has {cols} input columns, not a multiple "
                                   f"of group_size {self.cfg.group_size}; pass --set group_size=N with N dividing it")
        config = BaseQuantizeConfig(nbits=self.bits, group_size=self.cfg.group_size)
        for name in names:
            layer = model.get_submodule(name)
            copy = torch.nn.Linear(layer.in_features, layer.out_features, bias=False)
            copy.weight.data = layer.weight.detach().float().clone()
            hqq = HQQLinear(copy, quant_config=config, compute_dtype=torch.float32, device="cpu")
            with torch.no_grad():
                layer.weight.copy_(hqq.dequantize().to(layer.weight.dtype))
        if save_to is not None:
            save_to.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(save_to)
            tokenizer.save_pretrained(save_to)
        return model
