"""The leaderboard's tables as headers, column kinds and cell values, shared by the Markdown and
HTML renderers and the run's terminal answer (so all agree). Arrows say which direction is good.

Every column has one kind and every kind one number format (``fmt``), so a column reads at a
glance: metrics and other 0-100 figures with one decimal, gaps signed, the percentage of codes
changed (often well under 1) and the ratios kept with two decimals, and update / step (which spans
orders of magnitude) in scientific notation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = {"points": "{:.1f}", "gap": "{:+.1f}", "share": "{:.2f}", "ratio": "{:.2f}", "small": "{:.1e}", "int": "{:d}"}
METRIC_HEADERS = [("verbmem_f", "VerbMem_f ↓"), ("knowmem_f", "KnowMem_f ↓"), ("privleak", "PrivLeak →0"),
                  ("knowmem_r", "Utility ↑"), ("knowledge_retained", "Knowledge retained % ↓")]
# what quantization did to the update, against the target under the same quantizer (quantizers/mechanism.py)
MECHANISM_HEADERS = [("codes_changed", "codes changed %"), ("update_over_step", "update / step"),
                     ("update_kept", "update kept"), ("forget_nll_kept", "forget NLL kept")]
KINDS = {"codes_changed": "share", "update_over_step": "small", "update_kept": "ratio", "forget_nll_kept": "ratio"}


@dataclass
class Table:
    headers: list[str]
    kinds: list[str]  # "text" or a key of FORMATS, one per column
    rows: list[list[Any]]

    def formatted(self) -> list[list[str]]:
        return [[fmt(v, k) for v, k in zip(row, self.kinds)] for row in self.rows]


def fmt(value: Any, kind: str = "points") -> str:
    """One cell as text: ``–`` for a missing value, else the column kind's format."""
    if value is None:
        return "–"
    if kind == "text" or isinstance(value, str) or kind not in FORMATS:
        return str(value)
    if kind == "int":
        return str(int(value))
    return FORMATS[kind].format(float(value))


def ranking(board: dict[str, Any]) -> Table:
    ref = board.get("reference_quantizer") or "ref"
    headers = ["rank", "method", "mode", "robust score ↑", "worst quantizer", f"KnowMem_f @{ref} ↓",
               "KnowMem_f @worst ↓", "Utility @worst ↑", "PrivLeak @worst →0", "max quantization gap ↓",
               "worst-case format", "codes changed % @worst", "forget NLL kept @worst"]
    kinds = ["int", "text", "text", "points", "text", "points", "points", "points", "points", "gap", "text", "share", "ratio"]
    rows = []
    for e in board["rows"]:
        worst, at_ref = e["metrics"][e["worst_quant"]], e["metrics"].get(board.get("reference_quantizer"), {})
        mech = e.get("mechanism", {}).get(e["worst_quant"], {})
        rows.append([e["rank"], e["method"], e["mode"], e["score"], e["worst_quant"], at_ref.get("knowmem_f"),
                     worst["knowmem_f"], worst["knowmem_r"], worst["privleak"], e["max_gap"], e["max_gap_quant"],
                     mech.get("codes_changed"), mech.get("forget_nll_kept")])
    for e in board["unranked"]:
        rows.append(["-", e["method"], e["mode"], None, e["reason"], None, None, None, None, e["max_gap"], e["max_gap_quant"], None, None])
    return Table(headers, kinds, rows)


def detail(board: dict[str, Any]) -> Table:
    headers = (["method", "mode", "quantizer"] + [h for _, h in METRIC_HEADERS] + ["quantization gap ↓", "score ↑"]
               + [h for _, h in MECHANISM_HEADERS])
    kinds = ["text"] * 3 + ["points"] * len(METRIC_HEADERS) + ["gap", "points"] + [KINDS[k] for k, _ in MECHANISM_HEADERS]
    rows = []
    for e in board["rows"] + board["unranked"]:
        for q in board["quantizers"]:
            if q in e["metrics"]:
                m, mech = e["metrics"][q], e.get("mechanism", {}).get(q, {})
                rows.append([e["method"], e["mode"], q] + [m[k] for k, _ in METRIC_HEADERS]
                            + [e["gap"].get(q), e.get("score_at", {}).get(q)] + [mech.get(k) for k, _ in MECHANISM_HEADERS])
    return Table(headers, kinds, rows)


def references(board: dict[str, Any]) -> Table:
    headers = ["model", "quantizer"] + [h for _, h in METRIC_HEADERS]
    rows = [[r["model"], q] + [r["metrics"][q][k] for k, _ in METRIC_HEADERS]
            for r in board["references"] for q in board["quantizers"] if q in r["metrics"]]
    return Table(headers, ["text", "text"] + ["points"] * len(METRIC_HEADERS), rows)
