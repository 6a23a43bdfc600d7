"""Acceptance on the tiny world: with the task's defaults, each MUSE baseline and each
quantization-robust method (quail, saf, mansu) in both modes halves the target's KnowMem_forget
while keeping Utility at >= 70% of the target's, except the cells that meet that bar on some
machines only, which must still forget (KnowMem_forget <= 75% of the target's); and the
`harness unlearn` command writes a model, an adapter and a record."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

BASELINES = ["ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr", "quail", "saf", "mansu"]
# The world a machine builds depends on its CPU's float kernels (docs/design.md, "Another CPU,
# another world"), and so does every unlearning on it. Measured with the task's defaults by
# `python benchmarks/tiny_unlearning_table.py` on three worlds: the machine of record's (target
# KnowMem_forget 79.7, Utility 87.8: docs/tiny_world.md), an AMD EPYC's with AVX512 (81.6 / 84.9)
# and the same machine's with torch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2: 76.0 /
# 88.0). Every cell below meets the bar on all three but these four, which swing between meeting
# it and missing it (KnowMem_forget / Utility on the three worlds, bars ~40 / ~61): GA through
# LoRA 51.2 / 72.0, 37.8 / 62.3, 44.5 / 18.6; GA+GDR through LoRA 0.0 / 23.3, 0.0 / 65.3, 0.0 /
# 66.6; NPO in full mode 36.2 / 71.8, meets, 2.0 / 23.5; NPO through LoRA 32.4 / 57.7, 36.0 /
# 76.7, 36.7 / 59.7. Methods without a retain term forget, then erase everything within a few
# steps (tasks/configs/muse_tiny.yaml), so where the stop lands decides. On every world they
# still forget, which is what is asserted for them. The seed-1 cells meet the bar on all three
# (third world: GA full 31.0 / 74.3, GA+KLR full 2.4 / 79.2, NPO+GDR and NPO+KLR LoRA 10.2 / 75.0,
# 22.1 / 78.3).
MACHINE_DEPENDENT = {("ga", "lora"), ("ga_gdr", "lora"), ("npo", "full"), ("npo", "lora")}
MEETS_BAR = [(m, mode, 0) for m in BASELINES for mode in ("full", "lora") if (m, mode) not in MACHINE_DEPENDENT] + [
    ("ga", "full", 1), ("ga_klr", "full", 1), ("npo_gdr", "lora", 1), ("npo_klr", "lora", 1)]
CELLS = [(*cell, "bar") for cell in MEETS_BAR] + [(m, mode, 0, "forgets") for m, mode in sorted(MACHINE_DEPENDENT)]


@pytest.fixture(scope="module")
def target_scores(tiny_task, tiny_target):
    from tasks.evaluate import raw_metrics

    return raw_metrics(*tiny_target, tiny_task)


@pytest.mark.slow
@pytest.mark.parametrize("method,mode,seed,claim", CELLS)
def test_baseline_unlearns_tiny_world(method, mode, seed, claim, tiny_task, tiny_target, target_scores):
    from harness.unlearning import resolve_settings, unlearn
    from harness.plugins import registry
    from tasks.data import load_split
    from tasks.evaluate import raw_metrics

    model, tok = tiny_target
    settings = resolve_settings(tiny_task, method, mode, {"seed": seed})
    forget = [r["text"] for r in load_split(tiny_task.dataset, "raw", "forget")]
    retain = [r["text"] for r in load_split(tiny_task.dataset, "raw", "retain1")]
    trained, _ = unlearn(settings, copy.deepcopy(model), tok, forget,
                         retain if registry("methods").get(method).needs_retain_set else None)
    if mode == "lora":
        trained = trained.merge_and_unload()
    scores = raw_metrics(trained, tok, tiny_task)
    if claim == "forgets":
        assert scores["knowmem_f"] <= 0.75 * target_scores["knowmem_f"], scores["knowmem_f"]
        return
    assert scores["knowmem_f"] <= 0.5 * target_scores["knowmem_f"], scores["knowmem_f"]
    assert scores["knowmem_r"] >= 0.7 * target_scores["knowmem_r"], scores["knowmem_r"]


def test_cli_unlearn_writes_model_adapter_and_record(tiny_task, tmp_path):
    out = tmp_path / "npo_lora"
    result = subprocess.run([sys.executable, "-m", "harness", "unlearn", "--task", "muse_tiny", "--method", "npo",
                             "--mode", "lora", "--set", "epochs=1", "--output", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (out / "model" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    record = json.loads((out / "unlearn.json").read_text())
    assert record["settings"]["mode"] == "lora" and record["settings"]["train"]["epochs"] == 1
    assert record["training"]["adapter"]["nonzero"] > 0 and record["provenance"]["libraries"]["peft"]
    stop = record["training"]["early_stop"]  # the task's npo/lora default stops at a forget NLL bound
    assert stop["bound"] == record["settings"]["train"]["stop_forget_nll"] > 0 and stop["checks"][0][0] == 0
    assert "step" in result.stderr  # progress lines when not on a terminal
    again = subprocess.run([sys.executable, "-m", "harness", "unlearn", "--task", "muse_tiny", "--method", "npo",
                            "--mode", "lora", "--output", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads((out / "unlearn.json").read_text()) == record  # untouched


def test_cli_unlearn_unknown_method(tiny_task):
    result = subprocess.run([sys.executable, "-m", "harness", "unlearn", "--task", "muse_tiny", "--method", "npo_gd",
                             "--mode", "full"], capture_output=True, text=True)
    assert result.returncode == 2 and "Did you mean npo_gdr?" in result.stderr
