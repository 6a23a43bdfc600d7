"""The run's answer in a few sentences per task: the top of the ranking, the largest quantization
gap, where Utility fell most (under quantization, and through unlearning), and what did not run.

The same sentences open ``leaderboard.md`` and ``leaderboard.html``, end ``harness run`` in the
terminal or a plain log, and head the CI workflow's job summary. Numbers use the tables' formats.
"""

from __future__ import annotations

from typing import Any

from leaderboard.tables import fmt

TOP = 3  # ranked cells named in the answer


def _cell(e: dict[str, Any]) -> str:
    return f"{e['method']}/{e['mode']}"


def findings(board: dict[str, Any]) -> list[str]:
    """The answer's sentences for one task's leaderboard data."""
    ref, ref_q = board.get("reference"), board.get("reference_quantizer")
    ranking = ", ".join(board["ranking_quantizers"]) or "–"
    out = []
    ranked = board["rows"]
    if ranked:
        tops = "; ".join(f"{e['rank']}. {_cell(e)} {fmt(e['score'])} (worst at {e['worst_quant']})" for e in ranked[:TOP])
        out.append(f"top by robust score (worst of {ranking}): {tops}")
    else:
        why = board["unranked"][0]["reason"] if board["unranked"] else "no unlearned cell finished"
        out.append(f"no cell could be ranked: {why}")
    cells = ranked + board["unranked"]
    if ref is None:
        out.append("quantization gap: not measured (the run opted out of a reference with --reference none)")
    else:
        gaps = [(g, e, q) for e in cells for q, g in e["gap"].items() if g is not None]
        if gaps:
            g, e, q = max(gaps, key=lambda t: t[0])
            kr = e["metrics"]
            out.append(f"largest quantization gap: {_cell(e)} @ {q}, {fmt(g, 'gap')} points of Knowledge retained "
                       f"({fmt(kr[ref]['knowledge_retained'])} at {ref} → {fmt(kr[q]['knowledge_retained'])} after {q})")
        else:
            out.append(f"quantization gap: none measured (no cell finished both at {ref} and at a quantizer)")
        drops = [(e["metrics"][ref]["knowmem_r"] - m["knowmem_r"], e, q) for e in cells if ref in e["metrics"]
                 for q, m in e["metrics"].items() if q != ref]
        if drops:
            d, e, q = max(drops, key=lambda t: t[0])
            if round(d, 1) > 0:
                out.append(f"largest Utility loss from quantization: {_cell(e)} @ {q}, {fmt(-d, 'gap')} points "
                           f"({fmt(e['metrics'][ref]['knowmem_r'])} at {ref} → {fmt(e['metrics'][q]['knowmem_r'])})")
            else:
                out.append(f"no cell lost Utility to quantization (every quantized row within 0.1 point of its {ref} row, or above it)")
    target = next((r["metrics"].get(ref_q) for r in board["references"] if r["model"] == "target"), None)
    losses = [(target["knowmem_r"] - e["metrics"][ref_q]["knowmem_r"], e) for e in cells
              if target and ref_q in e["metrics"]]
    if losses:
        d, e = max(losses, key=lambda t: t[0])
        out.append(f"largest Utility loss from unlearning: {_cell(e)}, {fmt(-d, 'gap')} points against the target "
                   f"({fmt(target['knowmem_r'])} → {fmt(e['metrics'][ref_q]['knowmem_r'])}, both at {ref_q})")
    if board["not_done"]:
        out.append(f"{len(board['not_done'])} cell(s) failed, were skipped or did not run: see 'Not done' in leaderboard.md")
    return out


def answer_lines(data: dict[str, Any]) -> list[str]:
    """Plain text lines (terminal, log): one heading line per task, then its findings."""
    lines = []
    for task, board in data["tasks"].items():
        lines.append(f"{task} (reference: {board.get('reference') or 'none'}):")
        lines += [f"  - {s}" for s in findings(board)]
    return lines
