"""Quantizers, one small file per family, registered by name in ``harness.plugins.QUANTIZERS``.

A quantizer is one file here: its class carries ``@QUANTIZERS.register("name", summary=...)``,
and ``harness.plugins`` finds it by reading the decorators (``harness.registry.declared_in``),
so ``harness ls quantizers`` lists it without importing torch. The contract is in ``base.py``;
llm-compressor (RTN, GPTQ, AWQ) is driven from ``llmc.py`` only, bitsandbytes from ``bnb.py``.
"""

