"""Quantize one model with one registered quantizer: build it from its name and settings, draw
calibration text from the task when it needs some, time it, and return the record that goes
with every result (the quantizer's full description plus the seconds it took)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.plugins import registry
from quantizers.calibration import from_task
from quantizers.weights import effective_weights

# bumped when the shared quantization code (calibration draw, weight views) changes results; each
# quantizer plugin has its own ``version`` too. Both are part of every evaluation stage id.
QUANTIZATION_VERSION = 1


def make_quantizer(name: str, settings: dict[str, Any] | None = None, task=None):
    """The quantizer of one row. ``settings`` are the run's for that row; a ``quantizer: BASE``
    key among them makes the row a named variant of the registered quantizer BASE (e.g.
    ``rtn4_g32: {quantizer: rtn4, group_size: 32}``). The task's own defaults for the registered
    quantizer (its YAML ``quantizers:`` block, e.g. group 64 where widths are not multiples of
    128) lie under them."""
    settings = dict(settings or {})
    base = settings.pop("quantizer", name)
    if not isinstance(base, str):
        raise HarnessError(f"quantizers.{name}.quantizer must name a registered quantizer, got {base!r}")
    defaults = dict((getattr(task, "quantizers", None) or {}).get(base) or {})
    return registry("quantizers").get(base)(**{**defaults, **settings})


def variant_names(settings: dict[str, Any]) -> list[str]:
    """The quantizer variants an experiment's ``quantizers:`` block declares (entries naming a
    base ``quantizer``)."""
    return [k for k, v in settings.items() if isinstance(v, dict) and "quantizer" in v]


def quantize_model(quantizer, model, tokenizer, task=None, calibration_settings=None,
                   save_to: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``(quantized copy of model, record)``; ``model`` is left unchanged."""
    calibration = None
    if quantizer.needs_calibration:
        if task is None:
            raise HarnessError(f"quantizer '{quantizer.name}' is calibrated; pass --task T to take "
                               f"calibration text from that task")
        calibration = from_task(task, calibration_settings)
    t0 = time.perf_counter()
    qmodel = quantizer.quantize(model, tokenizer, calibration, save_to=save_to)
    record = {**quantizer.describe(calibration), "seconds": round(time.perf_counter() - t0, 3)}
    return qmodel, record


def deployed_weights(quantizer, model, tokenizer, task=None, calibration_settings=None) -> dict[str, Any]:
    """The dequantized weights ``model`` would be deployed with under ``quantizer``."""
    qmodel, _ = quantize_model(quantizer, model, tokenizer, task, calibration_settings)
    return effective_weights(qmodel, copy=True)
