"""Render the comparison of quantization-robust methods (experiments/robust_methods.yaml) into
docs/robust_methods.md, and the muse_smol table (the tiny world's if there is none) into the README
section "Methods built to survive quantization" (between its ``results:robust`` markers).

    harness run --config experiments/robust_methods.yaml
    harness run --config experiments/robust_methods.yaml --tasks muse_smol --modes full \\
        --methods npo_gdr,saf,mansu --quant bf16,rtn4,nf4,gptq4,gguf_q4_0 --out runs/robust_methods_smol
    python benchmarks/mansu_floor_sweep.py --run runs/robust_methods_smol --output runs/mansu_floor_sweep_smol.json
    python benchmarks/robust_methods_docs.py [--run runs/robust_methods] [--run runs/robust_methods_smol]
    python benchmarks/robust_methods_docs.py --add --run runs/robust_methods_smol_quail
    python benchmarks/robust_methods_docs.py --add --sweep runs/mansu_floor_sweep_smol_lora.json

``--add`` renders only the runs given and puts their sections into the existing page in place of
the sections of the same run (or after the last run section), leaving the other runs' sections
and the README as they are: a run can be added without the folders of the others. ``--readme``
with it also puts the added run's table into the README.

Per cell: Knowledge retained (KR, KnowMem_forget against the unquantized target, %) at bf16 and
after each format, the worst-case quantization gap (KR(q) - KR(bf16), the largest over formats)
and where, the worst-case **forgetting kept** over the 4- and 3-bit formats (the share of what
unlearning removed that is still removed once target and model are both quantized by q:
benchmarks/smol_study_docs.py), and Utility at bf16 and at its lowest after a format.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_results import replace_section  # noqa: E402
from smol_study_docs import _f, forgetting_kept, load, timings  # noqa: E402


def quantizers(run: Path, task: str) -> list[str]:
    return json.loads((run / "leaderboard.json").read_text())["tasks"][task]["quantizers"]


def stale_cells(run: Path) -> set[tuple[str, str]]:
    """(method, mode) cells whose stages today's code and settings would not reuse: the run's own
    experiment, planned again now, gives their evaluations other stage ids (a method's version, a
    task default or a library changed since they were computed)."""
    import tasks
    from harness.orchestration.experiment import Experiment
    from harness.orchestration.plan import build_plan
    from harness.orchestration.results import read_results

    exp = Experiment(**json.loads((run / "experiment.json").read_text())["experiment"])
    for name in exp.tasks:  # an unbuilt world is planned under its path: every row would look stale
        task = tasks.get_task(name)
        if task.prepare and not Path(task.dataset).exists():
            raise SystemExit(f"error: {name} is not prepared in this cache ({task.dataset} is missing), so the "
                             f"rows of {run} cannot be checked against today's plan; set HARNESS_CACHE to the "
                             f"cache the run used, or run `harness prepare {name}`")
    now = {(s.task, s.method, s.mode, s.quant): s.id for s in build_plan(exp).of_kind("evaluate")}
    return {(r["method"], r["mode"]) for r in read_results(run)
            if r.get("status") == "done" and not r["baseline"] and now.get((r["task"], r["method"], r["mode"], r["quant"])) != r["stage"]}


def cell_table(run: Path, task: str) -> str:
    cells = {k: v for k, v in load(run).items()}
    stale = stale_cells(run)
    target = cells[("target", None)]
    formats = [q for q in quantizers(run, task) if q != "bf16" and q in target]
    head = (["method", "mode", "KR % @bf16"] + [f"KR @{q}" for q in formats]
            + ["worst-case gap", "at", "forgetting kept, worst", "at", "Utility @bf16 → lowest"])
    lines = [f"**{task}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted(((k, v) for k, v in cells.items() if k[1]), key=lambda kv: (kv[0][1], kv[0][0]))
    for (method, mode), per_q in rows:
        kr = {q: per_q[q]["metrics"]["knowledge_retained"] for q in per_q}
        gaps = [(kr[q] - kr["bf16"], q) for q in formats if q in kr and "bf16" in kr]
        kept = [(forgetting_kept(per_q, target, q), q) for q in formats]
        kept = [(k, q) for k, q in kept if k is not None]
        first = lambda t: (t[0], -formats.index(t[1]))  # noqa: E731  (ties: the first format in the run's order)
        gap, gap_q = max(gaps, key=first) if gaps else (None, "–")
        low, low_q = min(kept, key=lambda t: (t[0], formats.index(t[1]))) if kept else (None, "–")
        utility = [per_q[q]["metrics"]["knowmem_r"] for q in formats if q in per_q]
        cols = [method + (" †" if (method, mode) in stale else ""), mode, _f(kr.get("bf16"))] + [_f(kr.get(q)) for q in formats]
        cols += [_f(gap, "+.1f"), gap_q, _f(low, ".2f"), low_q,
                 f"{_f(per_q.get('bf16', {}).get('metrics', {}).get('knowmem_r'))} → {_f(min(utility) if utility else None)}"]
        lines.append("| " + " | ".join(cols) + " |")
    if stale:
        lines.append("\n† computed by other code or settings than today's (a method's version, a task default or a "
                     "library changed since): today's `harness run` of this experiment would recompute it.")
    return "\n".join(lines) + "\n"


def sweep_source(prov: dict) -> str:
    """Where a sweep's rows come from, in words: its command, commit, CPU and time."""
    git = prov.get("git") or {}
    commit = (git.get("commit") or "unknown")[:7] + (" with uncommitted changes" if git.get("dirty") else "")
    cpu = (prov.get("cpu") or {}).get("model", "an unrecorded CPU")
    return (f"rows of `python {' '.join(prov.get('command', ['benchmarks/mansu_floor_sweep.py']))}` at commit {commit} "
            f"({cpu}, {prov.get('time', 'time unrecorded')})")


def floor_sweep(path: Path) -> str:
    """MANSU's floor fraction on SmolLM2 (benchmarks/mansu_floor_sweep.py --output), as a section."""
    data = json.loads(path.read_text())
    q, mode = data["quant"], data.get("mode", "full")  # sweeps before --mode were of full models
    if data["unlearned"].endswith("adapter"):  # a mansu LoRA adapter holds npo_gdr's training, not the floor
        how = "the target with a mansu LoRA adapter merged in (npo_gdr's training; the floor is not in the adapter)"
    else:
        how = f"the {'merged npo_gdr LoRA' if mode == 'lora' else 'npo_gdr full'} model"
    lines = [f"## MANSU's floor on {data['task']}{', LoRA' if mode == 'lora' else ''} (benchmarks/mansu_floor_sweep.py)\n",
             f"MANSU = NPO+GDR, then the floor. The floor applied to {how} of that run "
             f"(`{data['unlearned']}`), {data['floor']:g} {q} bin(s) of group {data['group_size']}; "
             f"{data['provenance'].get('note') or sweep_source(data['provenance'])}.\n",
             f"| floor_fraction % | weights raised | KnowMem_f fp32 → {q} | Utility fp32 → {q} | VerbMem_f fp32 → {q} |",
             "|---|---|---|---|---|"]
    run = ROOT / Path(data["unlearned"]).parents[3]  # runs/X/stages/unlearn-.../unlearned/model
    if (run / "results.jsonl").is_file():
        from harness.orchestration.results import read_results

        target = {row["quant"]: row["metrics"] for row in read_results(run)
                  if row["method"] == "target" and row.get("status") == "done"}
        if "bf16" in target and q in target:
            a, b = target["bf16"], target[q]
            lines.append(f"| target (for scale; bf16 → {q}) | – | {a['knowmem_f']:.1f} → {b['knowmem_f']:.1f} | "
                         f"{a['knowmem_r']:.1f} → {b['knowmem_r']:.1f} | {a['verbmem_f']:.1f} → {b['verbmem_f']:.1f} |")
    for r in data["rows"]:
        a, b = r["fp32"], r[q]
        lines.append(f"| {r['floor_fraction']:g} | {r['floored_weights']:,} | {a['knowmem_f']:.1f} → {b['knowmem_f']:.1f} | "
                     f"{a['knowmem_r']:.1f} → {b['knowmem_r']:.1f} | {a['verbmem_f']:.1f} → {b['verbmem_f']:.1f} |")
    return "\n".join(lines) + "\n"


def merge_sections(page: str, sections: list[str]) -> str:
    """``page`` with each of ``sections`` (each starting "## TASK (RUN)") in place of the section
    with the same heading, or else after the last such run section."""
    # a page's own sections are headed "## NAME (SOURCE)"; a run's leaderboard inside one has
    # headings without a source ("## Answer"), which stay in the section they belong to
    parts = re.split(r"(?m)^(?=## .+\(.+\)$)", page)
    for section in sections:
        heading = section.splitlines()[0]
        same = [i for i, part in enumerate(parts) if part.splitlines()[0] == heading]
        runs = [i for i, part in enumerate(parts) if re.match(r"## \S+ \(", part)]
        if same:
            parts[same[0]] = section + "\n"
        else:
            parts.insert((runs[-1] + 1) if runs else len(parts), section + "\n")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", help="a run folder (repeatable; default runs/robust_methods "
                        "and, if present, runs/robust_methods_smol)")
    parser.add_argument("--sweep", action="append", type=Path, help="a floor sweep's JSON (mansu_floor_sweep.py "
                        "--output; repeatable; default runs/mansu_floor_sweep_smol*.json)")
    parser.add_argument("--add", action="store_true", help="replace or add only these runs' sections of the page")
    parser.add_argument("--readme", action="store_true", help="with --add: also put the added runs' muse_smol "
                        "table (the last one given) into the README, in place of the one there")
    args = parser.parse_args()
    if args.add and not (args.run or args.sweep):
        parser.error("--add needs the runs or sweeps to add: --run FOLDER, --sweep FILE")
    if args.readme and not (args.add and args.run):
        parser.error("--readme goes with --add --run FOLDER (without --add the README is always rendered)")
    missing = [str(f) for f in args.sweep or [] if not f.is_file()]
    if missing:
        parser.error(f"--sweep {', '.join(missing)}: no such file (write it with mansu_floor_sweep.py --output)")
    import subprocess

    if args.add:
        runs = [Path(r) for r in args.run or []]
    else:
        runs = [Path(r) for r in args.run] if args.run else [p for p in (ROOT / "runs" / "robust_methods",
                                                                         ROOT / "runs" / "robust_methods_smol") if p.exists()]
    sweeps = args.sweep if args.sweep is not None else sorted((ROOT / "runs").glob("mansu_floor_sweep_smol*.json"))
    sections, tables = [], []
    for run in runs:
        subprocess.run([sys.executable, "-m", "harness", "leaderboard", str(run)], check=True, stdout=subprocess.DEVNULL)
        for task in json.loads((run / "leaderboard.json").read_text())["tasks"]:
            table = cell_table(run, task)
            tables.append(table)
            board = (run / "leaderboard.md").read_text().split("\n", 1)[1]
            board = "\n".join(line for line in board.splitlines() if not line.startswith("!["))  # run plots stay in the run
            sections.append(f"## {task} ({run.relative_to(ROOT) if run.is_relative_to(ROOT) else run})\n\n"
                            + timings(run) + "\n" + table + "\n<details><summary>The leaderboard</summary>\n\n"
                            + board + "\n</details>\n")
    page = ROOT / "docs" / "robust_methods.md"
    if args.add:
        sections += [floor_sweep(f) for f in args.sweep or []]
        page.write_text(merge_sections(page.read_text(), sections))
        if args.readme:
            write_readme(tables)
        print("\n".join(tables))
        return
    sections += [floor_sweep(f) for f in sweeps]
    text = ("# Methods built to survive quantization (experiments/robust_methods.yaml)\n\n"
            "Rendered by `python benchmarks/robust_methods_docs.py`; what the columns mean is in its docstring. "
            "The reading is in the README section \"Methods built to survive quantization\".\n\n" + "\n".join(sections))
    page.write_text(text)
    write_readme(tables)
    print("\n".join(tables))


def write_readme(tables: list[str]) -> None:
    """The README shows the pretrained model's table (the comparison that matters; the tiny
    world's if there is none); all of them are in docs/."""
    readme = ROOT / "README.md"
    smol = [t for t in tables if t.startswith("**muse_smol**")]
    readme.write_text(replace_section(readme.read_text(), "robust", (smol or tables)[-1]))


if __name__ == "__main__":
    main()
