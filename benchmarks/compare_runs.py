"""Whether two run folders computed the same numbers: every cell (task, method, mode, quantizer)
of both ``results.jsonl`` files, its metrics and mechanism figures compared exactly (timings
left out). Prints the cells that differ and a one-line verdict; exits 1 if any differs or a
cell is in one run only.

    python benchmarks/compare_runs.py runs/default_before runs/default

Used to check that a refactoring left the default run's results unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TIMINGS = {"seconds", "eval_s", "stage_s", "quantize_s"}


def cells(run: Path) -> dict[tuple, dict]:
    from harness.orchestration.results import read_results

    out = {}
    for row in read_results(run):
        if row.get("status") != "done":
            continue
        key = (row["task"], row["method"], row["mode"], row["quant"])
        metrics = {k: v for k, v in row["metrics"].items() if k not in TIMINGS}
        mechanism = {k: v for k, v in (row.get("mechanism") or {}).items() if k not in TIMINGS}
        out[key] = {"metrics": metrics, "mechanism": mechanism}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    for run in (args.before, args.after):
        if not (run / "results.jsonl").is_file():
            print(f"error: {run} has no results.jsonl; pass a folder written by `harness run`", file=sys.stderr)
            return 2
    a, b = cells(args.before), cells(args.after)
    only = sorted(set(a) ^ set(b))
    differ = [k for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    for key in only:
        print(f"in {'before' if key in a else 'after'} only: {' '.join(str(x) for x in key)}")
    for key in differ:
        fields = sorted(f"{part}.{k}" for part in ("metrics", "mechanism")
                        for k in set(a[key][part]) | set(b[key][part]) if a[key][part].get(k) != b[key][part].get(k))
        print(f"differs: {' '.join(str(x) for x in key)}: {', '.join(fields)}")
    same = len(set(a) & set(b)) - len(differ)
    print(f"{same} of {len(set(a) | set(b))} cells identical (metrics and mechanism, timings left out); "
          f"{len(differ)} differ, {len(only)} in one run only")
    return 1 if differ or only else 0


if __name__ == "__main__":
    sys.exit(main())
