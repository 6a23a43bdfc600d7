"""Acceptance on the tiny world: with the task's defaults, each MUSE baseline and each
quantization-robust method (quail, saf, mansu) in both modes halves the target's KnowMem_forget while keeping Utility at >= 70% of the target's (but the
cells listed as misses, measured), and the
`harness unlearn` command writes a model, an adapter and a record."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

BASELINES = ["ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr", "quail", "saf", "mansu"]
# Measured on world version 4 (the same target on every machine: KnowMem_forget 79.7, Utility
# 87.8; the bar is <= 39.9 and >= 61.5) with the task's defaults, by
# `python benchmarks/tiny_unlearning_table.py [--seed 1]`, whose figures these runs reproduce
# exactly (every process pins its thread count: harness/threads.py). Three cells miss at seed 0
# with every setting tried (tasks/configs/muse_tiny.yaml says which): GA through LoRA forgets
# too little (KnowMem_forget 51.2, Utility 72.0), GA+GDR through LoRA erases Utility (0.0 /
# 23.3), NPO through LoRA keeps too little Utility (32.4 / 57.7). At seed 1 the cells whose
# defaults stop early or chunk.
MISSES = {("ga", "lora"), ("ga_gdr", "lora"), ("npo", "lora")}
MEETS_BAR = [(m, mode, 0) for m in BASELINES for mode in ("full", "lora") if (m, mode) not in MISSES] + [
    ("ga", "full", 1), ("ga_klr", "full", 1), ("npo", "lora", 1), ("npo_gdr", "lora", 1), ("npo_klr", "lora", 1)]
# the misses run too, as strict expected failures: a change that makes one pass is told to say so here
CELLS = MEETS_BAR + [pytest.param(m, mode, 0, marks=pytest.mark.xfail(strict=True, reason="misses the bar (measured)"))
                     for m, mode in sorted(MISSES)]


@pytest.fixture(scope="module")
def target_scores(tiny_task, tiny_target):
    from tasks.evaluate import raw_metrics

    return raw_metrics(*tiny_target, tiny_task)


@pytest.mark.slow
@pytest.mark.parametrize("method,mode,seed", CELLS)
def test_baseline_unlearns_tiny_world(method, mode, seed, tiny_task, tiny_target, target_scores):
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
