"""``harness inspect``: how much of a model's update against a reference survives a quantizer,
per layer and in total (the statistics of ``quantizers.mechanism``), plus the same figures
the leaderboard shows for each cell."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from harness.quantization import quantize_model
from quantizers.mechanism import compare, forget_nll, function_kept
from quantizers.weights import effective_weights
from tasks.evaluate import with_context_length


def inspect_update(model, reference, tokenizer, quantizer, task=None, calibration=None,
                   forget_texts: list[str] | None = None) -> dict[str, Any]:
    """Mechanism statistics of ``model`` against ``reference`` under ``quantizer``, per layer,
    and (with ``forget_texts``) the share of the forget-loss rise the quantized model keeps."""
    q_ref, _ = quantize_model(quantizer, reference, tokenizer, task, calibration)
    q_model, _ = quantize_model(quantizer, model, tokenizer, task, calibration)
    stats = compare(reference, model, effective_weights(q_ref), effective_weights(q_model), per_layer=True)
    if quantizer.rescales_channels:
        stats["note"] = (f"{quantizer.name} rescales input channels before rounding: the per-weight figures "
                         f"compare two parametrisations; trust the forget-loss figure")
    if forget_texts:
        if task:
            g = with_context_length(task, model).generation
        max_length, batch_size = (g.max_length, g.batch_size) if task else (2048, 8)
        nll = [forget_nll(m, tokenizer, forget_texts, max_length, batch_size) for m in (reference, model, q_ref, q_model)]
        stats.update(function_kept(*nll), forget_sample=len(forget_texts))
    return stats


def print_report(title: str, stats: dict[str, Any], show_layers: bool) -> None:
    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table = Table(title=title, title_justify="left")
    for col in ("layer", "weights", "values changed %", "codes changed %", "update RMS", "step", "update / step",
                "update kept"):
        table.add_column(col, justify="left" if col == "layer" else "right", overflow="fold", min_width=8)
    rows = stats["layers"] if show_layers else []
    for s in rows + [{"layer": "all quantized layers", **stats}]:
        table.add_row(s["layer"], str(s["numel"]), fmt(s["values_changed"], ".2f"), fmt(s["codes_changed"], ".2f"), fmt(s["update_rms"], ".3g"),
                      fmt(s["step"], ".3g"), fmt(s["update_over_step"], ".3g"), fmt(s["update_kept"], ".3f"))
    console = Console()
    console.print(table)
    share = stats.get("unquantized_share")
    console.print(f"share of the update (squared norm) outside the quantized layers: {fmt(share, '.2f')}%")
    if "forget_nll_kept" in stats:
        console.print(f"forget NLL rise {fmt(stats['forget_nll_rise'], '.3f')} nats/token; kept after quantization: "
                      f"{fmt(stats['forget_nll_kept'], '.3f')} (1 = all of it, 0 = undone; {stats['forget_sample']} forget documents)")
    if "note" in stats:
        console.print(f"note: {stats['note']}")
