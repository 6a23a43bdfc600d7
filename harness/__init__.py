"""Quantization-robust unlearning harness: core (registries, config, evaluation plumbing, CLI).

Plugins live in the sibling top-level packages ``tasks``, ``methods``, ``quantizers`` and
``leaderboard``; this package holds what they share. Importing it imports nothing heavy.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes warns when it is imported on a CPU with AVX512-BF16 that it could not fetch an
# optional CPU kernel from the Hugging Face hub (the `kernels` package); the harness loads no code
# from a hub, and the warning would be the first line of every command's stderr
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
