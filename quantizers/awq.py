"""AWQ, activation-aware weight quantization (Lin et al. 2024, arXiv 2306.00978): ``awq4``.

Searches, per layer, a per-channel scaling of the weights (folded into the preceding norm or
linear layer) that protects the channels with large activations on calibration text, then
quantizes with the same integer scheme as RTN (group 128, asymmetric). Applied by
llm-compressor's ``AWQModifier``, the maintained successor of AutoAWQ (imported in ``modifier()``,
so that building the quantizer loads no library).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import require_positive
from harness.plugins import QUANTIZERS
from quantizers.llmc import IntWeightConfig, LLMCompressorQuantizer, int_weight_scheme


@dataclass
class AWQConfig(IntWeightConfig):
    n_grid: int = 20  # scaling exponents tried per layer (llm-compressor's default)
    duo_scaling: bool = True  # scale by activations and weights together

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "n_grid")


@QUANTIZERS.register("awq4", summary="4-bit AWQ, group 128, asym, calibrated (llm-compressor)")
class AWQ4(LLMCompressorQuantizer):
    """4-bit AWQ, group 128, asymmetric, calibrated on the task's retain text."""

    family = "awq"
    paper = "Lin et al. 2024, arXiv 2306.00978"
    bits = 4
    needs_calibration = True
    rescales_channels = True
    Config = AWQConfig

    def modifier(self):
        """AWQ's scaling search, then the quantization it searched for (llm-compressor's recipe)."""
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(n_grid=int(self.cfg.n_grid), duo_scaling=bool(self.cfg.duo_scaling)),
                QuantizationModifier(config_groups=int_weight_scheme(self.bits, self.cfg), ignore=["lm_head"])]
