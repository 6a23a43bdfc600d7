"""GPTQ (Frantar et al. 2023, arXiv 2210.17323): ``gptq3``, ``gptq4``, ``gptq8``.

Quantizes each weight matrix column block by column block, updating the not-yet-quantized
columns to compensate the error, using the Hessian of the layer's inputs on calibration text
(the task's retain split by default). Same integer scheme as RTN (group 128, asymmetric), so
the two differ only in the algorithm. Applied by llm-compressor's ``GPTQModifier`` (imported in
``modifier()``, so that building the quantizer loads no library).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.plugins import QUANTIZERS
from quantizers.llmc import IntWeightConfig, LLMCompressorQuantizer, int_weight_scheme


@dataclass
class GPTQConfig(IntWeightConfig):
    block_size: int = 128  # columns updated per pass (llm-compressor's default)
    dampening_frac: float = 0.01  # added to the Hessian diagonal, as a fraction of its mean
    actorder: str | None = "static"  # activation ordering: "static", "group", "weight" or None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= float(self.dampening_frac) < 1:
            raise HarnessError(f"dampening_frac must be in [0, 1), got {self.dampening_frac}")


class _GPTQ(LLMCompressorQuantizer):
    family = "gptq"
    paper = "Frantar et al. 2023, arXiv 2210.17323"
    needs_calibration = True
    Config = GPTQConfig

    def modifier(self):
        from llmcompressor.modifiers.gptq import GPTQModifier

        return GPTQModifier(config_groups=int_weight_scheme(self.bits, self.cfg), ignore=["lm_head"],
                            block_size=int(self.cfg.block_size), dampening_frac=float(self.cfg.dampening_frac),
                            actorder=self.cfg.actorder)


@QUANTIZERS.register("gptq3", summary="3-bit GPTQ, group 128, asym, calibrated (llm-compressor)")
class GPTQ3(_GPTQ):
    """3-bit GPTQ, group 128, asymmetric, calibrated on the task's retain text."""

    bits = 3


@QUANTIZERS.register("gptq4", summary="4-bit GPTQ, group 128, asym, calibrated (llm-compressor)")
class GPTQ4(_GPTQ):
    """4-bit GPTQ, group 128, asymmetric, calibrated on the task's retain text."""

    bits = 4


@QUANTIZERS.register("gptq8", summary="8-bit GPTQ, group 128, asym, calibrated (llm-compressor)")
class GPTQ8(_GPTQ):
    """8-bit GPTQ, group 128, asymmetric, calibrated on the task's retain text."""

    bits = 8
