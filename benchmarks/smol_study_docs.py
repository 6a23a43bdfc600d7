"""Render the study on SmolLM2-135M (experiments/smol_study.yaml) into docs/smol_study.md, its plot
into docs/smol_study.png, and its summary table into the README section "On a pretrained model"
(between ``<!-- results:smol:start -->`` and ``<!-- results:smol:end -->``).

    harness prepare muse_smol && harness run --config experiments/smol_study.yaml
    python benchmarks/smol_study_docs.py [--run runs/smol_study]

Besides the leaderboard it prints, per model, **forgetting kept** at each quantizer q:

    (KnowMem_f(target@q) - KnowMem_f(model@q)) / (KnowMem_f(target@bf16) - KnowMem_f(model@bf16))

the share of what unlearning removed (measured against the target quantized the same way) that
is still removed after q. Knowledge retained compares with the unquantized target, so where 4-bit
also erases the target's own knowledge it cannot tell reversion from damage; this ratio can.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_results import replace_section  # noqa: E402

ORDER = ("bf16", "int8", "rtn4", "rtn4_g32", "nf4", "fp4", "gptq4", "awq4")
FOUR_BIT = ("rtn4", "rtn4_g32", "nf4", "fp4", "gptq4", "awq4")


def _f(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def load(run: Path) -> dict[tuple[str, str | None], dict[str, dict]]:
    from harness.orchestration.results import read_results

    out: dict[tuple[str, str | None], dict[str, dict]] = {}
    for row in read_results(run):
        if row["status"] == "done":
            out.setdefault((row["method"], row["mode"]), {})[row["quant"]] = row
    return out


def forgetting_kept(rows: dict, target: dict, q: str) -> float | None:
    if q not in rows or q not in target or "bf16" not in rows:
        return None
    before = target["bf16"]["metrics"]["knowmem_f"] - rows["bf16"]["metrics"]["knowmem_f"]
    after = target[q]["metrics"]["knowmem_f"] - rows[q]["metrics"]["knowmem_f"]
    return after / before if before > 0 else None


def summary_table(cells: dict) -> str:
    target = cells[("target", None)]
    quants = [q for q in ORDER if q in target]
    head = (["model"] + [f"KR % @{q}" for q in quants] + ["max 4-bit gap", "update / rtn4 step", "codes changed % (rtn4)",
            "update kept (rtn4)", "forget NLL kept (rtn4 / gptq4 / nf4)"]
            + [f"forgetting kept @{q}" for q in quants if q != "bf16"] + ["Utility @bf16 → worst 4-bit"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, rows in sorted(cells.items(), key=lambda kv: (kv[0][1] is not None, kv[0][0], kv[0][1] or "")):
        name = f"{key[0]}/{key[1]}" if key[1] else key[0]
        mech = {q: rows[q].get("mechanism") or {} for q in rows}
        worst = min((rows[q]["metrics"]["knowmem_r"] for q in FOUR_BIT if q in rows), default=None)
        cols = [_f(rows[q]["metrics"]["knowledge_retained"]) if q in rows else "–" for q in quants]
        kr = {q: rows[q]["metrics"]["knowledge_retained"] for q in rows}
        gaps = [kr[q] - kr["bf16"] for q in FOUR_BIT if q in kr and "bf16" in kr]
        cols.append(_f(max(gaps), "+.1f") if gaps and key[1] else "–")  # quantization gap: KR(q) - KR(bf16)
        cols += [_f(mech.get("rtn4", {}).get("update_over_step"), ".4f"), _f(mech.get("rtn4", {}).get("codes_changed"), ".2f"),
                 _f(mech.get("rtn4", {}).get("update_kept"), ".2f"),
                 " / ".join(_f(mech.get(q, {}).get("forget_nll_kept"), ".2f") for q in ("rtn4", "gptq4", "nf4"))]
        cols += [_f(forgetting_kept(rows, target, q), ".2f") if key[1] else "–" for q in quants if q != "bf16"]
        cols.append(f"{_f(rows.get('bf16', {}).get('metrics', {}).get('knowmem_r'))} → {_f(worst)}")
        lines.append(f"| {name} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def timings(run: Path) -> str:
    """The compute behind the run's results: the evaluation stages its rows name and the unlearning
    stages those evaluated (a folder can also hold stages of earlier settings, which no row uses)."""
    from harness.orchestration.results import read_results

    records = {f.parent.name: json.loads(f.read_text()) for f in sorted((run / "stages").glob("*/stage.json"))}
    used = {row["stage"] for row in read_results(run) if row.get("stage") in records}
    used |= {records[s]["config"].get("source", {}).get("stage") for s in list(used)} & records.keys()
    unlearn, evals = [], []
    for name in sorted(used):
        record = records[name]
        (unlearn if record["kind"] == "unlearn" else evals).append((record["label"], record["result"]["seconds"]))
    total = sum(s for _, s in unlearn + evals)
    parts = ", ".join(f"{label} {s / 60:.1f} min" for label, s in unlearn)
    return (f"Compute on 2 CPU cores (sum of stage times): {total / 60:.0f} min: unlearning {parts}; "
            f"{len(evals)} quantize-and-evaluate stages {sum(s for _, s in evals) / 60:.0f} min "
            f"({min(s for _, s in evals):.0f}-{max(s for _, s in evals):.0f} s each).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "smol_study"))
    args = parser.parse_args()
    run = Path(args.run)
    subprocess.run([sys.executable, "-m", "harness", "leaderboard", str(run)], check=True, stdout=subprocess.DEVNULL)
    cells = load(run)
    table = summary_table(cells)
    docs = ROOT / "docs"
    shutil.copyfile(run / "plots" / "muse_smol.png", docs / "smol_study.png")
    board = (run / "leaderboard.md").read_text().replace("plots/muse_smol.png", "smol_study.png")
    board = board.replace(f"# Leaderboard: {run}", "# Leaderboard", 1)
    text = ("# The study on SmolLM2-135M (experiments/smol_study.yaml)\n\n"
            "    harness prepare muse_smol\n    harness run --config experiments/smol_study.yaml\n"
            "    python benchmarks/smol_study_docs.py\n\n" + timings(run) + "\n"
            "KR = Knowledge retained (KnowMem_forget against the unquantized target, %); forgetting kept at q = "
            "(KnowMem_f(target@q) - KnowMem_f(model@q)) / (KnowMem_f(target@bf16) - KnowMem_f(model@bf16)): the share "
            "of what unlearning removed that is still removed once both models are quantized by q "
            "(benchmarks/smol_study_docs.py). The reading is in docs/smol_world.md.\n\n"
            + table + "\n" + board.split("\n", 1)[1])
    (docs / "smol_study.md").write_text(text)
    readme = ROOT / "README.md"
    readme.write_text(replace_section(readme.read_text(), "smol", table))
    print(table)
    print(f"wrote {docs / 'smol_study.md'}, {docs / 'smol_study.png'}, {readme}")


if __name__ == "__main__":
    main()
