"""Quantizers, one small file per family, registered by name in ``harness.plugins.QUANTIZERS``.

A quantizer is one file here: its class carries ``@QUANTIZERS.register("name", summary=...)``,
and ``declare_builtins`` finds it by reading the decorators (``harness.registry.declared_in``),
so ``harness ls quantizers`` lists it without importing torch. The contract is in ``base.py``;
llm-compressor (RTN, GPTQ, AWQ) is driven from ``llmc.py`` only, bitsandbytes from ``bnb.py``.
"""

from __future__ import annotations

from pathlib import Path


def declare_builtins(registry) -> None:
    from harness.registry import declared_in

    for name, target, summary in declared_in(Path(__file__).parent, __name__, "QUANTIZERS"):
        registry.add_lazy(name, target, summary)
