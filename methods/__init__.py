"""Unlearning methods, one small file per family, registered by name in ``harness.plugins.METHODS``.

A method is one file here: its class carries ``@METHODS.register("name", summary=...)``, and
``harness.plugins`` finds it by reading the decorators (``harness.registry.declared_in``),
so ``harness ls methods`` lists it without importing torch. Adding a method: see README.md here.
"""

