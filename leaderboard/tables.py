"""The leaderboard's tables as plain headers and cell values, shared by the Markdown and HTML
renderers (so the two always agree). Arrows say which direction is good."""

from __future__ import annotations

from typing import Any

Table = tuple[list[str], list[list[Any]]]
METRIC_HEADERS = [("verbmem_f", "VerbMem_f ↓"), ("knowmem_f", "KnowMem_f ↓"), ("privleak", "PrivLeak →0"),
                  ("knowmem_r", "Utility ↑"), ("knowledge_retained", "Knowledge retained % ↓")]
# what quantization did to the update, against the target under the same quantizer (quantizers/mechanism.py)
MECHANISM_HEADERS = [("codes_changed", "codes changed %"), ("update_over_step", "update / step"),
                     ("update_kept", "update kept"), ("forget_nll_kept", "forget NLL kept")]


def ranking(board: dict[str, Any]) -> Table:
    headers = ["rank", "method", "mode", "robust score ↑", "worst quantizer", "KnowMem_f @bf16 ↓",
               "KnowMem_f @worst ↓", "Utility @worst ↑", "PrivLeak @worst →0", "max quantization gap ↓",
               "codes changed % @worst", "forget NLL kept @worst"]
    rows = []
    for e in board["rows"]:
        worst, bf16 = e["metrics"][e["worst_quant"]], e["metrics"].get("bf16", {})
        mech = e.get("mechanism", {}).get(e["worst_quant"], {})
        rows.append([e["rank"], e["method"], e["mode"], e["score"], e["worst_quant"], bf16.get("knowmem_f"),
                     worst["knowmem_f"], worst["knowmem_r"], worst["privleak"], e["max_gap"],
                     mech.get("codes_changed"), mech.get("forget_nll_kept")])
    for e in board["unranked"]:
        rows.append(["-", e["method"], e["mode"], None, e["reason"], None, None, None, None, e["max_gap"], None, None])
    return headers, rows


def detail(board: dict[str, Any]) -> Table:
    headers = (["method", "mode", "quantizer"] + [h for _, h in METRIC_HEADERS] + ["quantization gap ↓", "score ↑"]
               + [h for _, h in MECHANISM_HEADERS])
    rows = []
    for e in board["rows"] + board["unranked"]:
        for q in board["quantizers"]:
            if q in e["metrics"]:
                m, mech = e["metrics"][q], e.get("mechanism", {}).get(q, {})
                rows.append([e["method"], e["mode"], q] + [m[k] for k, _ in METRIC_HEADERS]
                            + [e["gap"].get(q), e.get("score_at", {}).get(q)] + [mech.get(k) for k, _ in MECHANISM_HEADERS])
    return headers, rows


def references(board: dict[str, Any]) -> Table:
    headers = ["model", "quantizer"] + [h for _, h in METRIC_HEADERS]
    rows = [[r["model"], q] + [r["metrics"][q][k] for k, _ in METRIC_HEADERS]
            for r in board["references"] for q in board["quantizers"] if q in r["metrics"]]
    return headers, rows


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return str(value)
