"""``leaderboard.md``: the answer in a few sentences, then per task one ranking table, one
per-quantizer table, the reference rows and the plot; readable on GitHub. Every string from the
results is escaped."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from leaderboard import tables
from leaderboard.answer import findings


def _cell(value: Any) -> str:
    text = " ".join(tables.fmt(value, "text").split())  # a newline would end the table row
    return html.escape(text, quote=False).replace("|", "\\|")


def _table(table: tables.Table) -> str:
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.formatted()]
    return "\n".join(lines)


def to_markdown(data: dict[str, Any], plots: dict[str, Path], run_dir: Path) -> str:
    f = data["formula"]
    out = [f"# Leaderboard: {_cell(data['run']['folder'])}", "", "## Answer", ""]
    for task, board in data["tasks"].items():
        out += [f"**{_cell(task)}** (reference: {_cell(board.get('reference') or 'none')})", ""]
        out += [f"- {_cell(s)}" for s in findings(board)] + [""]
    out += [f"Ranked by the **{f['name']}** ({f['direction']}): {f['aggregate']} of {f['per_quantizer']}, "
            f"with forget = {f['forget']}, privacy = {f['privacy']}, utility = {f['utility']}. "
            f"Quantization gap = {f['quantization_gap']}. ↓ lower is better, ↑ higher, →0 nearer zero.", ""]
    for task, board in data["tasks"].items():
        out += [f"## {_cell(task)}", "",
                f"Ranking quantizers: {', '.join(board['ranking_quantizers']) or '–'}; "
                f"reference: target @ {board['reference_quantizer'] or '–'}.", "",
                _table(tables.ranking(board)), ""]
        if task in plots:
            out += [f"![{_cell(task)}: KnowMem_forget and Utility per quantizer]({plots[task].relative_to(run_dir)})", ""]
        out += ["### Every quantizer", "", _table(tables.detail(board)), "",
                "### Reference models (unranked)", "", _table(tables.references(board)), ""]
        if board["not_done"]:
            out += ["### Not done", ""] + [f"- {_cell(r['method'])}/{_cell(r['mode'])} @ {_cell(r['quant'])}: "
                                           f"{_cell(r['status'])} {_cell(r['reason'])}" for r in board["not_done"]] + [""]
    return "\n".join(out)
