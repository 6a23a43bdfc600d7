"""Quantizers, one small file per family, registered by name in ``harness.plugins.QUANTIZERS``.

``BUILTINS`` maps each built-in name to its ``"module:Class"`` and a one-line summary, so that
``harness ls quantizers`` lists them without importing torch. The contract is in ``base.py``;
llm-compressor (RTN, GPTQ, AWQ) is driven from ``llmc.py`` only, bitsandbytes from ``bnb.py``.
"""

from __future__ import annotations

BUILTINS: dict[str, tuple[str, str]] = {
    "bf16": ("quantizers.bf16:BF16", "no quantization, bfloat16 weights (reference row)"),
    "rtn4": ("quantizers.rtn:RTN4", "4-bit round-to-nearest, group 128, asym (llm-compressor)"),
    "rtn8": ("quantizers.rtn:RTN8", "8-bit round-to-nearest, group 128, asym (llm-compressor)"),
    "gptq4": ("quantizers.gptq:GPTQ4", "4-bit GPTQ, group 128, asym, calibrated (llm-compressor)"),
    "gptq8": ("quantizers.gptq:GPTQ8", "8-bit GPTQ, group 128, asym, calibrated (llm-compressor)"),
    "awq4": ("quantizers.awq:AWQ4", "4-bit AWQ, group 128, asym, calibrated (llm-compressor)"),
    "nf4": ("quantizers.bnb:NF4", "4-bit NormalFloat, blocks of 64 (bitsandbytes)"),
    "fp4": ("quantizers.bnb:FP4", "4-bit float, blocks of 64, library defaults (bitsandbytes)"),
    "int8": ("quantizers.bnb:Int8", "LLM.int8, outlier threshold 6 (bitsandbytes)"),
}


def declare_builtins(registry) -> None:
    for name, (target, summary) in BUILTINS.items():
        registry.add_lazy(name, target, summary)
