"""``harness inspect``: how much of a model's update against a reference survives a quantizer,
per layer and in total (the statistics of ``quantizers.mechanism``), plus the same figures
the leaderboard shows for each cell."""

from __future__ import annotations

from typing import Any


def inspect_update(model, reference, tokenizer, quantizer, task=None, calibration=None) -> dict[str, Any]:
    """Mechanism statistics of ``model`` against ``reference`` under ``quantizer``, per layer."""
    from harness.quantization import deployed_weights
    from quantizers.mechanism import compare

    q_ref = deployed_weights(quantizer, reference, tokenizer, task, calibration)
    q_model = deployed_weights(quantizer, model, tokenizer, task, calibration)
    return compare(reference, model, q_ref, q_model, per_layer=True)


def print_report(title: str, stats: dict[str, Any], show_layers: bool) -> None:
    from rich.console import Console
    from rich.table import Table

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
