"""``results.jsonl`` (one row per task x method x mode x quantizer cell, and per baseline model
x quantizer) and the end-of-run summary: status counts, where the time went, the failures.

Each row carries the run's reference quantizer (the quantization gap's baseline), the metrics, the unlearning settings and training summary, the full
quantization record, stage timings and peak memory, and the provenance of the stage that
computed it (commit, versions, host, time: a reused stage keeps its own). The run's provenance
goes to ``run.json``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness.orchestration.plan import Plan
from harness.provenance import git_commit, provenance
from harness.store import Store, to_json, write_json, write_text

RESULTS_FILE = "results.jsonl"
SCHEMA_VERSION = 2  # 2: each row's provenance is its stage's (1: the aggregating run's)
UNRECORDED = {"note": "computed by a harness version that did not record a stage's provenance"}


def _row(stage, plan: Plan, store: Store, provenance: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"schema": SCHEMA_VERSION, "task": stage.task, "method": stage.method or stage.model,
                           "mode": stage.mode, "quant": stage.quant, "baseline": stage.method is None,
                           "reference": plan.reference, "stage": stage.id}
    upstream = stage.deps[0] if stage.deps else None
    if store.is_complete(stage.id):
        rec = store.record(stage.id)["result"]
        row.update(status="done", metrics={k: v for k, v in rec["metrics"].items() if k != "counts"},
                   quantization=rec["quantization"], references=rec["references"],
                   mechanism=rec.get("mechanism"))
        timings = {"quantize_s": rec["quantization"]["seconds"], "eval_s": rec["eval_seconds"],
                   "stage_s": rec["seconds"], "peak_rss_mb": rec.get("peak_rss_mb")}
        if upstream and store.is_complete(upstream):
            up_record = store.record(upstream)
            up = up_record["result"]
            row["unlearning"] = {k: up[k] for k in ("settings", "steps", "final_loss") if k in up}
            row["unlearning"]["provenance"] = up_record.get("provenance", UNRECORDED)
            timings.update(unlearn_s=up["seconds"], unlearn_peak_rss_mb=up.get("peak_rss_mb"))
        row["timings"] = timings
        row["provenance"] = store.record(stage.id).get("provenance", UNRECORDED)
    else:
        failure = store.failure(stage.id) or (store.failure(upstream) if upstream else None)
        if failure:
            where = "" if failure["id"] == stage.id else f" (in {failure['kind']} stage {failure['id']})"
            row.update(status="failed", error=failure["error"] + where)
        else:
            row.update(status="not run", error="the run stopped before this stage")
        row["provenance"] = provenance  # nothing was computed: the run's own
    return row


def write_results(plan: Plan, store: Store, exp, wall_seconds: float) -> list[dict[str, Any]]:
    prov = provenance(seed=exp.seed, experiment=exp.identity(), fingerprint=exp.fingerprint())
    rows = [_row(s, plan, store, prov) for s in plan.of_kind("evaluate")]
    rows += [{"schema": SCHEMA_VERSION, **cell, "reference": plan.reference, "status": "skipped", "provenance": prov}
             for cell in plan.skipped]
    write_text(store.root / RESULTS_FILE, "".join(to_json(row, indent=None) + "\n" for row in rows))
    return rows


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / RESULTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def time_spent(plan: Plan, store: Store) -> dict[str, float]:
    """Seconds by kind of work, summed over the completed stages of this plan."""
    spent = {"unlearn": 0.0, "quantize": 0.0, "evaluate": 0.0}
    for stage in plan.stages.values():
        if not store.is_complete(stage.id):
            continue
        rec = store.record(stage.id)["result"]
        if stage.kind == "unlearn":
            spent["unlearn"] += rec["seconds"]
        else:
            spent["quantize"] += rec["quantization"]["seconds"]
            spent["evaluate"] += rec["eval_seconds"]
    return {k: round(v, 1) for k, v in spent.items()}


def reuse_note(plan: Plan, store: Store) -> str | None:
    """One line when completed stages that this run reuses were computed at another commit (or
    before stages recorded theirs), so a resumed run says what it did not recompute."""
    now = git_commit().get("commit")
    commits = Counter()
    for stage_id in plan.stages:
        if store.is_complete(stage_id):
            commits[(store.record(stage_id).get("provenance") or {}).get("git", {}).get("commit") or "unrecorded"] += 1
    other = {c: n for c, n in commits.items() if c != now}
    if not other:
        return None
    listed = ", ".join(f"{n} at {c[:10]}" for c, n in sorted(other.items(), key=lambda kv: -kv[1]))
    return (f"reusing {sum(commits.values())} completed stages, {sum(other.values())} computed at another commit "
            f"({listed}; this is {(now or 'no commit')[:10]}): their rows keep their own provenance")


def summarize(rows: list[dict], plan: Plan, store: Store, root: Path, wall: float, exp=None) -> int:
    """Print the cell counts, the time and every failure as plain lines (readable at any width and
    in a log); the exit code is 1 if any cell failed or did not run."""
    status: dict[str, int] = {}
    for row in rows:
        status[row["status"]] = status.get(row["status"], 0) + 1
    spent = time_spent(plan, store)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    say(f"run {root}: " + ", ".join(f"{n} {key}" for key, n in sorted(status.items())) + " cells")
    say(f"time: {wall:.1f}s wall this run; stage totals: unlearning {spent['unlearn']}s, "
        f"quantization {spent['quantize']}s, evaluation {spent['evaluate']}s")
    failures = [r for r in rows if r["status"] in ("failed", "not run")]
    for row in failures:
        say(f"{row['status']}: {row['task']} {row['method']}/{row['mode']} @ {row['quant']}: {row.get('error', '')}")

    run_prov = provenance(seed=exp.seed, experiment=exp.identity(), fingerprint=exp.fingerprint()) if exp else provenance()
    write_json(root / "run.json", {"wall_seconds": round(wall, 2), "status": status, "time_spent": spent,
                                   "provenance": run_prov})
    say(f"wrote {root / RESULTS_FILE}")
    return 1 if failures else 0
