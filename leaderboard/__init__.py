"""The ranked leaderboard of a run: ``leaderboard.json`` (versioned schema), ``leaderboard.md``
(GitHub tables), ``leaderboard.html`` (one self-contained page: sortable tables, plots
embedded) and ``plots/<task>.png``, all rendered from ``results.jsonl`` of a finished or
partial run. The ranking formula is in ``score.py`` and written into the JSON.

    harness leaderboard runs/NAME [--format json,md,html] [--rank-quant nf4,rtn4]
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.orchestration.results import read_results
from harness.store import write_json, write_text
from leaderboard.html import to_html
from leaderboard.markdown import to_markdown
from leaderboard.plots import plot_task
from leaderboard.score import FORMULA, build_task

SCHEMA = {"name": "quant-unlearn-harness/leaderboard", "version": 1}
FORMATS = ("json", "md", "html")


def build(run_dir: str | Path, rank_quant: list[str] | None = None) -> dict[str, Any]:
    """The leaderboard data of a run (what ``leaderboard.json`` holds)."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise HarnessError(f"{run_dir} has no results.jsonl; pass a folder written by `harness run`")
    rows = read_results(run_dir)
    present = {r["quant"] for r in rows if r.get("status") == "done"}
    unknown = sorted(set(rank_quant or []) - present)
    if unknown:
        raise HarnessError(f"--rank-quant {', '.join(unknown)}: not in this run; it has {', '.join(sorted(present))}")
    summary = run_dir / "run.json"  # the run's own provenance (each row keeps its stage's)
    prov = json.loads(summary.read_text()).get("provenance") if summary.is_file() else None
    prov = prov or next((r["provenance"] for r in rows if r.get("provenance")), {})
    tasks: dict[str, list] = {}
    for row in rows:
        tasks.setdefault(row["task"], []).append(row)
    return {"schema": SCHEMA, "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "run": {"folder": str(run_dir), "fingerprint": prov.get("fingerprint"), "provenance": prov},
            "formula": FORMULA, "tasks": {t: build_task(r, rank_quant) for t, r in sorted(tasks.items())}}


def render(run_dir: str | Path, formats: list[str] | None = None, rank_quant: list[str] | None = None) -> list[Path]:
    """Write the leaderboard files into ``run_dir``; returns their paths."""
    formats = list(formats or FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise HarnessError(f"unknown leaderboard format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    data = build(run_dir, rank_quant)
    plots = {task: plot_task(task, board, run_dir / "plots") for task, board in data["tasks"].items()} \
        if {"md", "html"} & set(formats) else {}
    written = []
    if "json" in formats:
        write_json(run_dir / "leaderboard.json", data)
        written.append(run_dir / "leaderboard.json")
    for fmt, fn, name in (("md", to_markdown, "leaderboard.md"), ("html", to_html, "leaderboard.html")):
        if fmt in formats:
            path = run_dir / name
            write_text(path, fn(data, plots, run_dir))
            written.append(path)
    return written


def load(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "leaderboard.json").read_text())
