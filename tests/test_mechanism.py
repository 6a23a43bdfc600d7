"""The mechanism statistics (quantizers/mechanism.py): what a quantizer keeps of an update,
checked on updates whose answer is known, through `harness inspect`, and in a run's rows."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from harness.quantization import deployed_weights, make_quantizer
from quantizers.mechanism import compare


@pytest.fixture(scope="module")
def rtn4_target(tiny_target):
    model, tok = tiny_target
    return deployed_weights(make_quantizer("rtn4"), model, tok)


def _stats(target, tok, changed):
    return compare(target, changed, deployed_weights(make_quantizer("rtn4"), target, tok),
                   deployed_weights(make_quantizer("rtn4"), changed, tok), per_layer=True)


def test_no_update_changes_nothing(tiny_target, rtn4_target):
    model, _ = tiny_target
    stats = compare(model, model, rtn4_target, rtn4_target)
    assert stats["codes_changed"] == 0 and stats["values_changed"] == 0
    assert stats["update_over_step"] == 0 and stats["update_kept"] is None and stats["unquantized_share"] is None
    assert 0 < stats["step"] < 1


def test_large_update_on_one_layer_is_kept(tiny_target):
    """Three steps' worth of random update on one layer: every weight of it changes code,
    the deployed weights carry the update (kept ~ 1), and no other layer moves."""
    model, tok = tiny_target
    name = "model.layers.0.mlp.down_proj"
    changed = copy.deepcopy(model)
    stats0 = _stats(model, tok, model)
    step = next(s["step"] for s in stats0["layers"] if s["layer"] == name)
    g = torch.Generator().manual_seed(0)
    layer = changed.get_submodule(name)
    layer.weight.data += 3 * step * torch.randn(layer.weight.shape, generator=g)
    stats = _stats(model, tok, changed)
    one = next(s for s in stats["layers"] if s["layer"] == name)
    assert one["codes_changed"] > 80 and one["update_over_step"] == pytest.approx(3, rel=0.1)
    assert one["update_kept"] == pytest.approx(1, abs=0.1)
    assert all(s["values_changed"] == 0 for s in stats["layers"] if s["layer"] != name)
    assert stats["unquantized_share"] == 0


def test_tiny_update_changes_few_codes_and_unquantized_update_is_reported(tiny_target):
    model, tok = tiny_target
    changed = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    step = _stats(model, tok, model)["step"]
    for _, p in changed.named_parameters():
        p.data += 1e-3 * step * torch.randn(p.shape, generator=g)
    stats = _stats(model, tok, changed)
    assert stats["codes_changed"] < 1 and stats["update_over_step"] == pytest.approx(1e-3, rel=0.2)
    assert 0 < stats["unquantized_share"] < 100


def test_cli_inspect_prints_and_writes_per_layer_statistics(tiny_task, tmp_path):
    out = tmp_path / "inspect.json"
    result = subprocess.run([sys.executable, "-m", "harness", "inspect", "retrain", "--against", "target",
                             "--quant", "rtn4", "--layers", "--output", str(out)], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "update / step" in result.stdout and "all quantized layers" in result.stdout
    record = json.loads(out.read_text())
    stats = record["statistics"]
    assert record["quantizer"]["name"] == "rtn4" and len(stats["layers"]) == 28
    assert stats["codes_changed"] > 50  # the retrain model shares no training with the target
    assert stats["forget_sample"] == 32 and stats["forget_nll_rise"] > 0  # retrain never saw the forget set
    assert "kept after quantization" in result.stdout


def test_cli_inspect_bad_input(tiny_task, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "harness", "inspect", str(tmp_path / "nope"), "--quant", "rtn4"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr
    unknown = subprocess.run([sys.executable, "-m", "harness", "inspect", "target", "--quant", "rtn5"],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "Did you mean" in unknown.stderr


def test_run_rows_carry_the_mechanism(small_run):
    from harness.orchestration.results import read_results

    rows = read_results(small_run)
    for row in rows:
        if row["status"] != "done":
            continue
        if row["baseline"]:
            assert row["mechanism"] is None
        else:
            mech = row["mechanism"]
            assert 0 <= mech["codes_changed"] <= mech["values_changed"] <= 100 and mech["update_over_step"] > 0
            assert mech["forget_nll_rise"] > 0 and mech["forget_sample"] == 32
            if row["quant"] == "bf16":  # rounding to bf16 keeps the whole rise, up to rounding
                assert mech["forget_nll_kept"] == pytest.approx(1, abs=0.02)
    board = (small_run / "leaderboard.md").read_text()
    assert "codes changed %" in board and "update kept" in board and "forget NLL kept" in board


def test_awq_weight_figures_are_left_out_but_the_function_is_compared(tiny_task, tiny_target):
    """AWQ folds channel scales into the layer before: its weights are not comparable one by one."""
    from harness.inspection import inspect_update
    from tasks.data import load_split

    model, tok = tiny_target
    changed = copy.deepcopy(model)
    changed.get_submodule("model.layers.0.mlp.up_proj").weight.data *= 1.05
    forget = [r["text"] for r in load_split(tiny_task.dataset, "raw", "forget")][:4]
    from quantizers.calibration import settings_for

    stats = inspect_update(changed, model, tok, make_quantizer("awq4"), tiny_task, settings_for(tiny_task, {}), forget)
    assert "rescales input channels" in stats["note"] and stats["forget_sample"] == 4
    assert stats["forget_nll_kept"] is not None
