"""Regenerate the tiny world's measured results: run (or resume) the default grid and the reversion
study (experiments/reversion_study.yaml), then write their tables and the study's plot and
replace the sections between ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->``
(the ranking in README.md; the rest in docs/tiny_world.md).

    python benchmarks/readme_results.py [--skip-run]     # ~25 min on 2 CPU cores from scratch

Outputs: docs/leaderboard_muse_tiny.png, docs/default_run.md, docs/reversion_study.md, docs/reversion_study.png,
docs/tiny_world.md, README.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT, STUDY_OUT = ROOT / "runs/default", ROOT / "runs/reversion_study"
OUTLIER_OUT, OUTLIER_TARGET = ROOT / "runs/reversion_study_outliers", ROOT / "runs/outlier_target"
STUDY_CONFIG = ROOT / "experiments/reversion_study.yaml"
OUTLIER_CONFIG = ROOT / "experiments/reversion_study_outliers.yaml"
FOUR_BIT = ("rtn4", "nf4", "gptq4", "awq4")


def build_outlier_target() -> None:
    import tasks
    from tasks.tiny.outliers import main as outliers

    if not (OUTLIER_TARGET / "config.json").is_file():
        task = tasks.get_task("muse_tiny")
        tasks.prepare_task(task)
        outliers(["--model", task.target_model, "--scale", "16", "--channels", "2", "--out", str(OUTLIER_TARGET)])


def run_grids() -> None:
    import os

    from harness.orchestration.cli import main

    build_outlier_target()
    os.chdir(ROOT)  # the outlier experiment names its target relative to the repository
    for argv in (["run", "--out", str(DEFAULT_OUT)], ["run", "--config", str(STUDY_CONFIG), "--out", str(STUDY_OUT)],
                 ["run", "--config", str(OUTLIER_CONFIG), "--out", str(OUTLIER_OUT)]):
        code = main(argv)
        if code != 0:
            sys.exit(f"`harness {' '.join(argv)}` failed (exit {code}); fix it, then rerun this script to resume")


def cells(run_dir: Path) -> dict[tuple[str, str], dict[str, dict]]:
    """``{(method, mode): {quant: row}}`` of the finished unlearned cells of a run."""
    from harness.orchestration.results import read_results

    out: dict[tuple[str, str], dict[str, dict]] = {}
    for row in read_results(run_dir):
        if row["status"] == "done" and not row["baseline"]:
            out.setdefault((row["method"], row["mode"]), {})[row["quant"]] = row
    return out


def _f(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _kr(rows: dict, q: str):
    return rows[q]["metrics"]["knowledge_retained"] if q in rows else None


def _mech(rows: dict, q: str, key: str):
    return (rows.get(q, {}).get("mechanism") or {}).get(key)


def _kept(rows: dict) -> str:
    return " / ".join(_f(_mech(rows, q, "forget_nll_kept"), ".2f") for q in FOUR_BIT)


def machine(run_dir: Path) -> str:
    """Which processors and kernels computed a run's rows, from their stage provenance (another
    CPU gives other figures: docs/design.md, "Another CPU, another world")."""
    from harness.orchestration.results import read_results

    seen = set()
    for row in read_results(run_dir):
        prov = row.get("provenance") or {}
        cpu = prov.get("cpu") or {}
        kernels = (cpu.get("kernels") or {}).get("torch")
        seen.add((cpu.get("model") or "an unrecorded CPU", f"torch {kernels} kernels" if kernels else "kernels unrecorded",
                  prov.get("threads")))
    return "; ".join(f"{model} ({kernels}, {threads} threads)" for model, kernels, threads in sorted(seen, key=str))


def default_table(run_dir: Path) -> str:
    head = ("| method | mode | Knowledge retained % @bf16 | @rtn4 | @nf4 | @gptq4 | @awq4 | max gap (any quantizer) "
            "| Utility @bf16 → worst 4-bit | update / rtn4 step | codes changed % (rtn4) "
            "| forget NLL rise kept (rtn4 / nf4 / gptq4 / awq4) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for (method, mode), rows in sorted(cells(run_dir).items()):
        base = _kr(rows, "bf16")
        gaps = [_kr(rows, q) - base for q in rows if q != "bf16" and base is not None and _kr(rows, q) is not None]
        utility = [rows[q]["metrics"]["knowmem_r"] for q in FOUR_BIT if q in rows]
        lines.append(f"| {method} | {mode} | {_f(base)} | " + " | ".join(_f(_kr(rows, q)) for q in FOUR_BIT)
                     + f" | {_f(max(gaps, default=None), '+.1f')} | {_f(rows.get('bf16', {}).get('metrics', {}).get('knowmem_r'))}"
                     f" → {_f(min(utility, default=None))} | {_f(_mech(rows, 'rtn4', 'update_over_step'), '.3f')}"
                     f" | {_f(_mech(rows, 'rtn4', 'codes_changed'))} | {_kept(rows)} |")
    return head + "\n".join(lines) + "\n"


def unlearning_table(run_dir: Path) -> str:
    """Each method's bf16 row of the default run against the issue's bar (KnowMem_forget at most
    half the target's, Utility at least 70% of it)."""
    from harness.orchestration.results import read_results

    rows = [r for r in read_results(run_dir) if r["status"] == "done" and r["quant"] == "bf16"]
    target = next(r["metrics"] for r in rows if r["method"] == "target")
    out = [f"Computed on {machine(run_dir)}.\n",
           "| method | mode | KnowMem_f | Utility | VerbMem_f | KnowMem_f <= 50% | Utility >= 70% | train s |",
           "|---|---|---|---|---|---|---|---|",
           f"| target | - | {target['knowmem_f']:.1f} | {target['knowmem_r']:.1f} | {target['verbmem_f']:.1f} | | | |"]
    for r in sorted((r for r in rows if not r["baseline"]), key=lambda r: (r["method"], r["mode"])):
        m = r["metrics"]
        ok_f = "yes" if m["knowmem_f"] <= 0.5 * target["knowmem_f"] else "no"
        ok_u = "yes" if m["knowmem_r"] >= 0.7 * target["knowmem_r"] else "no"
        out.append(f"| {r['method']} | {r['mode']} | {m['knowmem_f']:.1f} | {m['knowmem_r']:.1f} | {m['verbmem_f']:.1f} "
                   f"| {ok_f} | {ok_u} | {r['timings'].get('unlearn_s', 0):.0f} |")
    return "\n".join(out) + "\n"


def ranking_table(run_dir: Path) -> str:
    """The default run's ranking, as its leaderboard.md prints it, with its timing line."""
    import json

    from leaderboard import tables
    from leaderboard.markdown import _table

    data = json.loads((run_dir / "leaderboard.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    spent = summary["time_spent"]
    counts = summary["status"]
    timing = (f"{counts.get('done', 0)} cells; stage totals on {machine(run_dir)}: unlearning {spent['unlearn']:.0f} s, "
              f"quantization {spent['quantize']:.0f} s, evaluation {spent['evaluate']:.0f} s "
              f"(wall time of the last invocation: {summary['wall_seconds']:.0f} s).\n\n")
    return timing + _table(tables.ranking(data["tasks"]["muse_tiny"])) + "\n"


def study_points(run_dir: Path, target: str = "plain") -> list[dict]:
    points = []
    for (name, mode), rows in cells(run_dir).items():
        settings = next(iter(rows.values()))["unlearning"]["settings"]
        train = settings["train"]
        kind = "LoRA" if mode == "lora" else ("full, linear layers only" if train.get("only_linear") else "full")
        points.append({"name": name, "kind": kind, "target": target, "lr": train["lr"], "epochs": train["epochs"], "rows": rows,
                       "utility": rows["bf16"]["metrics"]["knowmem_r"] if "bf16" in rows else None})
    return sorted(points, key=lambda p: (p["target"] != "plain", p["kind"], _mech(p["rows"], "rtn4", "update_over_step") or 0))


def study_table(points: list[dict]) -> str:
    head = ("| target | training | lr | epochs | update / step (rtn4) | codes changed % (rtn4) "
            "| Knowledge retained % @bf16 | @rtn4 | @nf4 | @gptq4 | @awq4 | forget NLL rise kept (rtn4 / nf4 / gptq4 / awq4) "
            "| Utility @bf16 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {p['target']} | {p['kind']} | {p['lr']:g} | {p['epochs']} | {_f(_mech(p['rows'], 'rtn4', 'update_over_step'), '.3f')} "
             f"| {_f(_mech(p['rows'], 'rtn4', 'codes_changed'))} "
             f"| {_f(_kr(p['rows'], 'bf16'))} | " + " | ".join(_f(_kr(p["rows"], q)) for q in FOUR_BIT)
             + f" | {_kept(p['rows'])} | {_f(p['utility'])} |" for p in points]
    return head + "\n".join(lines) + "\n"


def study_plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"full": "tab:blue", "full, linear layers only": "tab:green", "LoRA": "tab:orange"}
    fig, axes = plt.subplots(1, len(FOUR_BIT), figsize=(4 * len(FOUR_BIT), 3.6), sharey=True)
    for ax, q in zip(axes, FOUR_BIT):
        for p in points:
            # one x for every panel: the update in 4-bit group-128 round-to-nearest steps (AWQ's own
            # weights are rescaled, so its per-weight figures are not comparable)
            x, before, after = _mech(p["rows"], "rtn4", "update_over_step"), _kr(p["rows"], "bf16"), _kr(p["rows"], q)
            if x is None or before is None or after is None:
                continue
            c = colors[p["kind"]]
            ax.plot([x, x], [before, after], color=c, lw=1, alpha=0.6)
            marker = "o" if p["target"] == "plain" else "^"
            label = p["kind"] + ("" if p["target"] == "plain" else ", outlier target")
            ax.scatter([x], [before], facecolors="none", edgecolors=c, s=28, marker=marker)
            ax.scatter([x], [after], color=c, s=28, marker=marker, label=label)
        ax.set_xscale("log")
        ax.set_title(f"after {q}")
        ax.set_xlabel("RMS update / rtn4 step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("knowledge retained % (hollow: bf16)")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"no {start} ... {end} markers to replace")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true", help="only render from the existing run folders")
    args = parser.parse_args()
    if not args.skip_run:
        run_grids()
    docs = ROOT / "docs"
    default_md = default_table(DEFAULT_OUT)
    points = study_points(STUDY_OUT) + study_points(OUTLIER_OUT, "outliers x16")
    ranking_md = ranking_table(DEFAULT_OUT)
    shutil.copyfile(DEFAULT_OUT / "plots" / "muse_tiny.png", docs / "leaderboard_muse_tiny.png")
    study_md = study_table(points)
    study_plot(points, docs / "reversion_study.png")
    (docs / "default_run.md").write_text(default_md)
    (docs / "reversion_study.md").write_text(study_md)
    readme, tiny = ROOT / "README.md", docs / "tiny_world.md"
    readme.write_text(replace_section(readme.read_text(), "ranking", ranking_md))
    text = replace_section(tiny.read_text(), "unlearning", unlearning_table(DEFAULT_OUT))
    text = replace_section(text, "default", default_md)
    tiny.write_text(replace_section(text, "study", study_md))
    print(f"wrote {docs / 'default_run.md'}, {docs / 'reversion_study.md'}, {docs / 'reversion_study.png'}, {tiny}, {readme}")


if __name__ == "__main__":
    main()
