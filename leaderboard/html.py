"""``leaderboard.html``: one self-contained static page (inline CSS and JavaScript, plots as
data URIs, no network fetch) with sortable tables. Every string from the results is escaped
with ``html.escape``; numbers sort numerically (``data-v``), missing values last."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from leaderboard import tables
from leaderboard.answer import findings

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
th{background:#f2f2f2;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
img{max-width:100%;border:1px solid #ddd}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = x === '' ? NaN : Number(x), ny = y === '' ? NaN : Number(y);
      if (isNaN(nx) || isNaN(ny)) {
        if (isNaN(nx) && isNaN(ny)) { x = a.cells[col].textContent; y = b.cells[col].textContent;
          return asc ? x.localeCompare(y) : y.localeCompare(x); }
        return isNaN(nx) ? 1 : -1;
      }
      return asc ? nx - ny : ny - nx;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _td(value: Any, kind: str) -> str:
    sort_key = "" if value is None or not isinstance(value, (int, float)) else repr(float(value))
    return f'<td data-v="{sort_key}">{html.escape(tables.fmt(value, kind))}</td>'


def _table(name: str, table: tables.Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(_td(v, k) for v, k in zip(row, table.kinds)) + "</tr>" for row in table.rows)
    return f'<table class="sortable" data-table="{html.escape(name)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_html(data: dict[str, Any], plots: dict[str, Path], run_dir: Path) -> str:
    f = data["formula"]
    parts = [f"<h1>Leaderboard: {html.escape(data['run']['folder'])}</h1>", '<section id="answer"><h2>Answer</h2>']
    for task, board in data["tasks"].items():
        parts.append(f"<p><b>{html.escape(task)}</b> (reference: {html.escape(board.get('reference') or 'none')})</p><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in findings(board)) + "</ul>")
    parts += ["</section>",
              f"<p>Ranked by the <b>{html.escape(f['name'])}</b> ({html.escape(f['direction'])}): "
              f"{html.escape(f['aggregate'])} of {html.escape(f['per_quantizer'])}; forget = {html.escape(f['forget'])}, "
              f"privacy = {html.escape(f['privacy'])}, utility = {html.escape(f['utility'])}. "
              f"Quantization gap = {html.escape(f['quantization_gap'])}. Click a header to sort.</p>"]
    for task, board in data["tasks"].items():
        t = html.escape(task)
        parts += [f'<h2 id="task-{t}">{t}</h2>',
                  f"<p>Ranking quantizers: {html.escape(', '.join(board['ranking_quantizers']) or '-')}</p>",
                  _table(f"{task}/ranking", tables.ranking(board))]
        if task in plots:
            parts.append(_image(plots[task], f"{task}: KnowMem_forget and Utility per quantizer"))
        parts += ["<h3>Every quantizer</h3>", _table(f"{task}/detail", tables.detail(board)),
                  "<h3>Reference models (unranked)</h3>", _table(f"{task}/references", tables.references(board))]
    prov = data["run"]["provenance"]
    parts.append(f"<p><small>generated {html.escape(data['generated'])}; commit "
                 f"{html.escape(str((prov.get('git') or {}).get('commit')))}; schema "
                 f"{html.escape(data['schema']['name'])} v{data['schema']['version']}</small></p>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Leaderboard</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}<script>{SORT_JS}</script></body></html>\n")
