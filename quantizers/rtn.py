"""Round-to-nearest (RTN) integer weights: ``rtn3``, ``rtn4``, ``rtn8``.

Each group of ``group_size`` input columns of a weight row gets a scale and a zero point from
its min and max (asymmetric by default); every weight is rounded to the nearest of the
2^bits levels. No calibration. Applied by llm-compressor's ``QuantizationModifier``, whose
checkpoints vLLM serves (imported in ``modifier()``, so that building the quantizer loads no
library).
"""

from __future__ import annotations

from harness.plugins import QUANTIZERS
from quantizers.llmc import LLMCompressorQuantizer, int_weight_scheme


class _RTN(LLMCompressorQuantizer):
    family = "rtn"
    paper = "round-to-nearest, group-wise min-max (e.g. Dettmers & Zettlemoyer 2023)"

    def modifier(self):
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return QuantizationModifier(config_groups=int_weight_scheme(self.bits, self.cfg), ignore=["lm_head"])


@QUANTIZERS.register("rtn3", summary="3-bit round-to-nearest, group 128, asym (llm-compressor)")
class RTN3(_RTN):
    """3-bit round-to-nearest, group 128, asymmetric."""

    bits = 3


@QUANTIZERS.register("rtn4", summary="4-bit round-to-nearest, group 128, asym (llm-compressor)")
class RTN4(_RTN):
    """4-bit round-to-nearest, group 128, asymmetric."""

    bits = 4


@QUANTIZERS.register("rtn8", summary="8-bit round-to-nearest, group 128, asym (llm-compressor)")
class RTN8(_RTN):
    """8-bit round-to-nearest, group 128, asymmetric."""

    bits = 8
