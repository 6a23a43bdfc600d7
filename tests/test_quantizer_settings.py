"""Quantizer settings per task and named quantizer variants: a task's ``quantizers:`` defaults
lie under a run's settings, a variant (``name: {quantizer: BASE, ...}``) is its own row with its
own stage ids, and bad declarations are one-line errors before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.orchestration.experiment import load_experiment
from harness.orchestration.plan import build_plan
from harness.quantization import make_quantizer
from tasks.spec import TaskSpec

TASK = """\
task: {name}
dataset: {data}
target_model: {data}/target
retrain_model: {data}/retrain
quantizers: {quantizers}
"""


def write_task(folder: Path, name: str, quantizers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(TASK.format(name=name, data=folder / "data", quantizers=quantizers))
    return path


def test_task_defaults_lie_under_the_run_settings(tmp_path):
    task = TaskSpec.from_yaml(write_task(tmp_path, "t64", "{rtn4: {group_size: 64}, awq4: {group_size: 64}}"))
    assert make_quantizer("rtn4", None, task).cfg.group_size == 64
    assert make_quantizer("rtn4", {"group_size": 32}, task).cfg.group_size == 32  # the run's setting wins
    assert make_quantizer("gptq4", None, task).cfg.group_size == 128  # not declared: the quantizer's default
    variant = make_quantizer("rtn4_sym", {"quantizer": "rtn4", "symmetric": True}, task)
    assert variant.name == "rtn4" and variant.cfg.symmetric and variant.cfg.group_size == 64


@pytest.mark.parametrize("quantizers,message", [
    ("{rtn9: {group_size: 64}}", "unknown quantizer 'rtn9'"),
    ("{rtn4: {group: 64}}", "unknown key(s) group"),
    ("{rtn4: 64}", "quantizers must map quantizer names to settings"),
    ("{r32: {quantizer: rtn4, group_size: 32}}", "declare variants in an experiment file"),
])
def test_bad_task_quantizer_defaults_fail_when_the_task_loads(tmp_path, quantizers, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TaskSpec.from_yaml(write_task(tmp_path, "bad", quantizers))


def test_variant_rows_have_their_own_settings_and_ids(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("methods: [ga_gdr]\nmodes: [full]\nquant: [bf16, rtn4, rtn4_g32]\n"
                    "quantizers: {rtn4_g32: {quantizer: rtn4, group_size: 32}, rtn4: {group_size: 64}}\n")
    plan = build_plan(load_experiment(str(path), {}))
    evals = {(s.model, s.quant): s for s in plan.of_kind("evaluate")}
    assert sorted({q for _, q in evals}) == ["bf16", "rtn4", "rtn4_g32"]
    assert evals[("unlearned", "rtn4_g32")].config["quant_config"]["group_size"] == 32
    assert evals[("unlearned", "rtn4")].config["quant_config"]["group_size"] == 64
    assert evals[("target", "rtn4_g32")].id != evals[("target", "rtn4")].id
    assert "rtn4_g32" in evals[("target", "rtn4_g32")].id


def test_muse_smol_study_uses_group_64_and_the_group_32_control():
    root = Path(__file__).parent.parent
    exp = load_experiment(str(root / "experiments" / "smol_study.yaml"), {})
    plan = build_plan(exp)
    groups = {s.quant: s.config["quant_config"].get("group_size") for s in plan.of_kind("evaluate")}
    assert groups["rtn4"] == groups["gptq4"] == groups["awq4"] == 64 and groups["rtn4_g32"] == 32
    assert plan.counts() == {"unlearning runs": 2, "quantizations": 28, "evaluations": 32, "skipped cells": 0}


@pytest.mark.parametrize("quantizers,message", [
    ("{rtn4: {quantizer: gptq4}}", "a variant needs a name of its own"),
    ("{r32: {quantizer: rtn9}}", "unknown quantizer 'rtn9'"),
    ("{r32: {quantizer: rtn4, group: 32}}", "unknown key(s) group"),
    ("{r33: {quantizer: rtn4, group_size: 32}}", "unknown quantizer 'r32'"),  # named in quant, declared nowhere
])
def test_bad_variants_are_one_line_errors(tmp_path, quantizers, message):
    path = tmp_path / "e.yaml"
    path.write_text(f"methods: [ga_gdr]\nmodes: [full]\nquant: [bf16, r32]\nquantizers: {quantizers}\n")
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_plan(load_experiment(str(path), {}))


def test_every_group_wise_quantizer_fits_muse_smol():
    """SmolLM2's widths (576, 1536) are no multiples of 128: muse_smol must give every
    quantizer with a group size one that divides them (a new quantizer left out would fail
    there only, after the unlearning)."""
    import tasks
    from harness.plugins import registry

    task = tasks.get_task("muse_smol")
    for name in registry("quantizers").names():
        if name == "row3":  # the README example of another test module, if loaded
            continue
        quantizer = make_quantizer(name, None, task)
        group = getattr(quantizer.cfg, "group_size", None)
        if group is not None:
            assert 576 % group == 0 and 1536 % group == 0, (name, group)
        for width in (576, 1536):
            assert width % quantizer.scale_group(width) == 0, (name, width)


def test_autoround_tunes_50_steps_on_both_worlds_and_200_elsewhere():
    """auto-round's 200 tuning steps per layer cost ~33 min per SmolLM2 model on 2 cores: both
    embedded worlds set 50 (muse_smol with its group of 64); a task that sets nothing gets 200."""
    import tasks

    assert make_quantizer("autoround4", None, None).cfg.iters == 200
    assert make_quantizer("autoround4", None, tasks.get_task("muse_tiny")).cfg.iters == 50
    smol = make_quantizer("autoround4", None, tasks.get_task("muse_smol")).cfg
    assert smol.iters == 50 and smol.group_size == 64
