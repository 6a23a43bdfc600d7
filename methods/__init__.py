"""Unlearning methods, one small file per family, registered by name in ``harness.plugins.METHODS``.

``BUILTINS`` maps each built-in name to its ``"module:Class"`` and a one-line summary, so that
``harness ls methods`` lists them without importing torch. Adding a method: see README.md here.
"""

from __future__ import annotations

BUILTINS: dict[str, tuple[str, str]] = {
    "ga": ("methods.ga:GradientAscent", "gradient ascent on forget (MUSE)"),
    "ga_gdr": ("methods.ga:GradientAscentGDR", "GA + retain NLL (MUSE)"),
    "ga_klr": ("methods.ga:GradientAscentKLR", "GA + KL to target on retain (MUSE)"),
    "npo": ("methods.npo:NPO", "negative preference optimisation, beta 0.1 (Zhang et al. 2024)"),
    "npo_gdr": ("methods.npo:NPOGDR", "NPO + retain NLL (MUSE)"),
    "npo_klr": ("methods.npo:NPOKLR", "NPO + KL to target on retain (MUSE)"),
    "simnpo": ("methods.simnpo:SimNPO", "reference-free length-normalised NPO (Fan et al. 2024)"),
    "rmu": ("methods.rmu:RMU", "steer middle-layer activations to a random vector (Li et al. 2024)"),
    "sure": ("methods.sure:SURE", "saliency-masked NPO+GDR, large lr (Zhang et al. 2025)"),
}


def declare_builtins(registry) -> None:
    for name, (target, summary) in BUILTINS.items():
        registry.add_lazy(name, target, summary)
