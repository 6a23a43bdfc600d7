"""What the reversion study established on the tiny world, asserted on a small grid at two
seeds: NPO+GDR (the tiny world's defaults, full and LoRA) and a tiny full-FT update (lr 1e-5,
one epoch), at bf16 and after rtn4, nf4, gptq4 and awq4.

Margins come from ``benchmarks/reversion_seeds.py`` over seeds 0-4 (the table is in the closing
note of issue 7 and in docs/reversion_seeds.md):

* no reversion: every 4-bit gap (Knowledge retained after minus at bf16) is at most
  GAP_MAX points (measured: -6.4 to +6.1), while unlearning did forget (full FT Knowledge
  retained at bf16 25.8-48.5%, asserted <= 60): a 4-bit quantizer that undid the update would
  bring back the 40+ points forgotten;
* the update survives on the function: the rise in forget NLL kept after quantization is
  within KEPT_RANGE for every quantizer (measured 0.985-1.026), and RTN/NF4/GPTQ keep the
  weight update on average (update kept 0.994-1.000);
* the mechanism separates update sizes: the tiny update is < 0.01 of a 4-bit step and moves
  < 1% of RTN codes (measured 0.002, 0.2%), the default full update > 0.2 of a step and > 20%
  of codes (measured 0.44-0.46, 38-39%).
"""

from __future__ import annotations

import pytest

GRID = """\
methods: [npo_gdr, tiny_update]
modes: [full, lora]
quant: [bf16, rtn4, nf4, gptq4, awq4]
variants: {tiny_update: {method: npo_gdr, modes: [full], full: {lr: 1.0e-5, epochs: 1}}}
"""
SEEDS = (0, 1)
GAP_MAX = 10.0
KEPT_RANGE = (0.9, 1.1)


@pytest.fixture(scope="module")
def seed_rows(tiny_task, tmp_path_factory):
    from harness.orchestration.cli import main
    from harness.orchestration.results import read_results

    root = tmp_path_factory.mktemp("reversion")
    config = root / "grid.yaml"
    config.write_text(GRID)
    rows = {}
    for seed in SEEDS:
        out = root / f"seed{seed}"
        assert main(["run", "--config", str(config), "--seed", str(seed), "--out", str(out)]) == 0
        for r in read_results(out):
            if r["status"] == "done" and not r["baseline"]:
                rows[(seed, r["method"], r["mode"], r["quant"])] = r
    return rows


def _kr(rows, seed, method, mode, quant):
    return rows[(seed, method, mode, quant)]["metrics"]["knowledge_retained"]


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["rtn4", "nf4", "gptq4", "awq4"])
def test_four_bit_does_not_bring_forgotten_knowledge_back(seed_rows, quant):
    for seed in SEEDS:
        assert _kr(seed_rows, seed, "npo_gdr", "full", "bf16") <= 60  # there is something to bring back
        for mode in ("full", "lora"):
            gap = _kr(seed_rows, seed, "npo_gdr", mode, quant) - _kr(seed_rows, seed, "npo_gdr", mode, "bf16")
            assert gap <= GAP_MAX, (seed, mode, quant, gap)
            mech = seed_rows[(seed, "npo_gdr", mode, quant)]["mechanism"]
            assert KEPT_RANGE[0] <= mech["forget_nll_kept"] <= KEPT_RANGE[1], (seed, mode, quant, mech)
            if quant != "awq4":  # AWQ's rescaled weights are not compared one by one
                assert 0.95 <= mech["update_kept"] <= 1.05, (seed, mode, quant, mech)


@pytest.mark.slow
def test_mechanism_separates_update_sizes(seed_rows):
    for seed in SEEDS:
        tiny = seed_rows[(seed, "tiny_update", "full", "rtn4")]["mechanism"]
        full = seed_rows[(seed, "npo_gdr", "full", "rtn4")]["mechanism"]
        assert tiny["update_over_step"] < 0.01 and tiny["codes_changed"] < 1, tiny
        assert full["update_over_step"] > 0.2 and full["codes_changed"] > 20, full
        assert _kr(seed_rows, seed, "tiny_update", "full", "bf16") >= 95  # too small to forget anything
