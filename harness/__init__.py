"""Quantization-robust unlearning harness: core (registries, config, evaluation plumbing, CLI).

Plugins live in the sibling top-level packages ``tasks``, ``methods``, ``quantizers`` and
``leaderboard``; this package holds what they share. Importing it imports nothing heavy.
"""

__version__ = "0.1.0"
