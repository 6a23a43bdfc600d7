"""Seed spread of the quantization gap and of the mechanism for NPO+GDR (full and LoRA, the
tiny world's defaults) and a tiny full-FT update (lr 1e-5, one epoch): the margins that
tests/test_reversion.py asserts come from this table.

    python benchmarks/reversion_seeds.py [SEED ...]     # default seeds 0-4, ~1.5 min each
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = """\
methods: [npo_gdr, tiny_update]
modes: [full, lora]
quant: [bf16, rtn4, nf4, gptq4, awq4]
variants: {tiny_update: {method: npo_gdr, modes: [full], full: {lr: 1.0e-5, epochs: 1}}}
"""


def main(seeds: list[int]) -> None:
    from harness.orchestration.cli import main as harness
    from harness.orchestration.results import read_results

    config = ROOT / "runs" / "reversion_seeds.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(GRID)
    print("| seed | method | mode | quant | KR @bf16 | KR @quant | gap | update / step | codes changed % | update kept "
          "| forget NLL kept |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        out = ROOT / "runs" / f"reversion_seed{seed}"
        if harness(["run", "--config", str(config), "--seed", str(seed), "--out", str(out)]) != 0:
            sys.exit(f"seed {seed}: the run failed")
        rows = [r for r in read_results(out) if r["status"] == "done" and not r["baseline"]]
        base = {(r["method"], r["mode"]): r["metrics"]["knowledge_retained"] for r in rows if r["quant"] == "bf16"}
        for r in sorted(rows, key=lambda r: (r["method"], r["mode"], r["quant"])):
            if r["quant"] == "bf16":
                continue
            kr0, kr, m = base[(r["method"], r["mode"])], r["metrics"]["knowledge_retained"], r["mechanism"]
            f = lambda key, spec: "–" if m.get(key) is None else format(m[key], spec)  # noqa: E731
            print(f"| {seed} | {r['method']} | {r['mode']} | {r['quant']} | {kr0:.1f} | {kr:.1f} | {kr - kr0:+.1f} "
                  f"| {f('update_over_step', '.3f')} | {f('codes_changed', '.1f')} | {f('update_kept', '.3f')} "
                  f"| {f('forget_nll_kept', '.3f')} |", flush=True)


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2, 3, 4])
