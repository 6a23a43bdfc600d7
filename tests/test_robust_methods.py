"""The quantization-robust methods' own machinery (their training contract is in test_methods.py):
the round-to-nearest grid they train against is the one rtn<bits> deploys, SAF's forward is the
rounded model's with a straight-through gradient in both modes and its loss is the paper's,
MANSU's floor moves every floored weight to another code, and QUAIL's hinge stops pushing once
the margin is met."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.plugins import registry
from harness.tensors import fake_quantize, grid_step
from methods import losses
from methods.deployed import fake_quantized, linear_layers
from methods.mansu import floored

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module (its folder importable while it loads: the
    scripts import their siblings)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("group_size", [64, 128])
def test_the_grid_is_the_one_rtn_deploys(bits, group_size, tiny_target):
    from quantizers.weights import effective_weights

    model, _ = tiny_target
    deployed = effective_weights(registry("quantizers").get(f"rtn{bits}")(group_size=group_size).quantize(copy.deepcopy(model)))
    for name, w in effective_weights(model).items():
        assert torch.equal(fake_quantize(w, bits, group_size), deployed[name]), name


def _micro():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def _rounded_copy(model, bits=4, group_size=16):
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for layer in linear_layers(rounded):
            layer.base.weight.copy_(fake_quantize(layer.base.weight, bits, group_size))
    return rounded


IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4]])


def test_fake_quantized_forward_is_the_rounded_model_with_a_straight_through_gradient():
    model = _micro()
    with fake_quantized(model, 4, 16):
        logits = model(input_ids=IDS).logits
    rounded = _rounded_copy(model).requires_grad_(True)
    expected = rounded(input_ids=IDS).logits
    assert torch.allclose(logits, expected, atol=1e-5) and not torch.allclose(logits, model(input_ids=IDS).logits)
    logits.sum().backward(), expected.sum().backward()
    w, wq = model.model.layers[0].mlp.up_proj.weight, rounded.model.layers[0].mlp.up_proj.weight
    assert torch.allclose(w.grad, wq.grad, atol=1e-5)  # the rounded model's gradient, applied to w
    assert not hasattr(model.model.layers[0].mlp.up_proj, "forward") or "forward" not in vars(model.model.layers[0].mlp.up_proj)


def test_fake_quantized_lora_rounds_the_merged_weight_and_the_reference_is_the_rounded_base():
    from peft import LoraConfig, get_peft_model

    base = _micro()
    plain = base(input_ids=IDS).logits
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["up_proj", "q_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    with fake_quantized(peft_model, 4, 16):
        logits = peft_model(input_ids=IDS).logits
        with peft_model.disable_adapter():
            reference = peft_model(input_ids=IDS).logits
    assert torch.allclose(logits, _rounded_copy(merged)(input_ids=IDS).logits, atol=1e-5)
    # with the adapter off, every layer (adapted or not) runs the rounded base weight: the deployed target
    assert torch.allclose(reference, _rounded_copy(base)(input_ids=IDS).logits, atol=1e-5)
    assert not torch.allclose(reference, plain)


def test_saf_ramps_its_quantized_term_as_the_paper_does():
    """DurableUn's schedule at its 300 steps: plain GA through step 100, then a(t) rising
    linearly to quant_weight at step 200 (steps counted from 1); lambda = max(1, a + 1)."""
    method = registry("methods").get("saf")(quant_weight=3.0)
    assert method.cfg.alpha == 4.0 and registry("methods").get("saf")(quant_weight=3.0, alpha=2.0).cfg.alpha == 2.0
    scale = []
    for step in (0, 99, 100, 149, 199, 299):
        method.start_step(step, 300)
        scale.append(round(method.quant_scale, 6))
    assert scale == [0.0, 0.0, 0.03, 1.5, 3.0, 3.0]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_saf_loss_is_ascent_at_full_precision_and_through_the_deployed_model(mode):
    """Eq. 3: -NLL_f(theta) - a(t) NLL_f(Q(theta)) + lambda NLL_r(theta), Q the rtn grid of the
    (merged) weights; during the warm-up only the first and last terms."""
    from peft import LoraConfig, get_peft_model

    model = _micro()
    if mode == "lora":
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["up_proj", "q_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    method = registry("methods").get("saf")(bits=2, group_size=16, quant_weight=2.0)
    method.configure(model)
    forget = {"input_ids": IDS, "attention_mask": torch.ones_like(IDS), "labels": IDS}
    retain = {"input_ids": IDS.flip(1), "attention_mask": torch.ones_like(IDS), "labels": IDS.flip(1)}
    plain, kept = losses.mean_nll(model, forget), losses.mean_nll(model, retain)
    with fake_quantized(model, 2, 16):  # the deployed model (tested above against a rounded copy)
        rounded = losses.mean_nll(model, forget)
    assert abs(rounded.item() - plain.item()) > 1e-3  # 2-bit rounding moves the loss: the terms can be told apart
    method.start_step(0, 30)  # warm-up
    total, parts = method.loss(model, forget, retain, None)
    assert math.isclose(total.item(), -plain.item() + 3.0 * kept.item(), abs_tol=1e-4)
    assert parts["quant_scale"] == 0.0 and "forget_nll_rounded" not in parts  # the log says the term is off
    method.start_step(29, 30)  # ramped up
    total, parts = method.loss(model, forget, retain, None)
    assert math.isclose(total.item(), -plain.item() - 2.0 * rounded.item() + 3.0 * kept.item(), abs_tol=1e-4)
    assert parts["quant_scale"] == 2.0 and math.isclose(parts["forget_nll_rounded"], rounded.item(), abs_tol=1e-4)


def test_the_floor_moves_every_floored_weight_to_another_code():
    torch.manual_seed(0)
    w0 = torch.randn(8, 32)
    delta = torch.randn(8, 32) * 1e-3
    delta[0, 0] = 0.0
    step = grid_step(w0, 4, 16)
    new, count = floored(delta, step, floor=1.0, fraction=10.0)
    chosen = new != delta
    assert count == int(chosen.sum()) == 26  # ceil(10% of 256); the tiny updates were all below a bin
    assert torch.equal(torch.sign(new[chosen]), torch.sign(delta[chosen])) and new[0, 0] == 0
    assert torch.allclose(new[chosen].abs(), step[chosen])
    q0, q1 = fake_quantize(w0, 4, 16), fake_quantize(w0 + new, 4, 16)
    # each floored weight changed code, but one that was its group's min or max moving outward:
    # that stretches its group's grid instead (its value moves, by less than a step)
    groups = w0.reshape(8, 2, 16)
    extreme = ((groups == groups.amax(-1, keepdim=True)) | (groups == groups.amin(-1, keepdim=True))).reshape(8, 32)
    outward = extreme & (torch.sign(new) == torch.sign(w0))
    assert bool(((q1 - q0).abs() >= 0.5 * step)[chosen & ~outward].all())
    assert bool((q1 != q0)[chosen].all())
    assert torch.equal(floored(delta * 1e4, step, 1.0, 10.0)[0], delta * 1e4)  # already past the floor: kept


FORGET = ["Quenel Marsil was born in Jormimere in 1861 and made clocks.",
          "Uljor Halistho founded a free school in Silgarmere in 1921."]
RETAIN = ["Mijor Yarul was a brewer in Isulby and kept an owl named Ulwyn.",
          "Isjor Corka was a tanner who joined the Amber Harrow Company."]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_mansu_floors_the_merged_update(mode):
    from harness.unlearning import resolve_settings, unlearn
    from tasks.tiny.train import TinyModelConfig, build_model, train_tokenizer

    tok = train_tokenizer(FORGET + RETAIN, vocab_size=300)
    torch.manual_seed(0)
    target = build_model(tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=2))
    settings = resolve_settings(None, "mansu", mode, {"epochs": 2, "batch_size": 2, "max_length": 32,
                                                       "group_size": 16, "floor_fraction": 5.0})
    trained, log = unlearn(settings, copy.deepcopy(target), tok, FORGET, RETAIN)
    if mode == "lora":
        # the adapter holds the training alone and the floor went into the base weight, so the
        # target with the adapter merged in is npo_gdr's model (what mansu_floor_sweep.py --mode
        # lora floors): the two differ exactly at the raised weights
        unfloored = copy.deepcopy(trained)
        for layer, w0 in zip(linear_layers(unfloored), linear_layers(target)):
            layer.base.weight.data.copy_(w0.base.weight)
        unfloored, trained = unfloored.merge_and_unload(), trained.merge_and_unload()
        raised = sum(int((a.base.weight != b.base.weight).sum())
                     for a, b in zip(linear_layers(trained), linear_layers(unfloored)))
        assert raised == log["finish"]["floored_weights"]
    assert log["finish"]["floored_weights"] > 0
    far = 0  # weights whose update is at least a bin: the floored ones (and any that moved that far alone)
    for before, after in zip(linear_layers(target), linear_layers(trained)):
        w0 = before.base.weight.detach()
        far += int(((after.base.weight.detach() - w0).abs() >= grid_step(w0, 4, 16) * (1 - 1e-4)).sum())
    assert far >= log["finish"]["floored_weights"]


def test_quail_hinge_is_zero_past_the_margin_and_lowers_the_label_logit_before():
    from methods.quail import QUAIL

    logits = torch.zeros(1, 3, 5, requires_grad=True)
    labels = torch.tensor([[0, 2, 4]])
    ref_logits = torch.zeros(1, 3, 5)
    drop = losses.label_logits(ref_logits, labels) - losses.label_logits(logits, labels)
    hinge = torch.relu(2.0 - drop).sum()
    hinge.backward()
    assert logits.grad[0, 0, 2] > 0 and logits.grad[0, 1, 4] > 0  # descent lowers the label logits
    assert float(torch.relu(2.0 - (drop.detach() + 3.0)).sum()) == 0.0
    assert QUAIL.needs_reference_model and QUAIL.needs_retain_set


@pytest.mark.parametrize("name,settings,message", [
    ("saf", {"bits": 1}, "bits must be an integer from 2 to 8"),
    ("saf", {"quant_warmup": 1.0}, "0 <= quant_warmup < 1"),
    ("mansu", {"floor_fraction": 0}, "0 < floor_fraction <= 100"),
    ("quail", {"margin": 0}, "margin > 0"),
])
def test_bad_settings_are_one_line_errors(name, settings, message):
    with pytest.raises(HarnessError, match=message):
        registry("methods").get(name)(**settings)


def test_a_group_that_does_not_divide_a_layer_is_refused_before_training():
    with pytest.raises(HarnessError, match="group_size 24"):
        registry("methods").get("saf")(group_size=24).configure(_micro())


def test_every_quantization_aware_method_fits_muse_smol():
    """SmolLM2's widths (576, 1536) are no multiples of rtn4's default group 128: muse_smol must
    give every method that trains against a grid a group dividing them, in both modes (a method
    left out would fail there only, before training but after loading a 135M model)."""
    import dataclasses

    import tasks
    from harness.unlearning import resolve_settings

    task = tasks.get_task("muse_smol")
    for name in registry("methods").names():
        if "group_size" not in {f.name for f in dataclasses.fields(registry("methods").get(name).Config)}:
            continue
        for mode in ("full", "lora"):
            group = resolve_settings(task, name, mode).method_cfg.group_size
            assert 576 % group == 0 and 1536 % group == 0, (name, mode, group)


def test_the_robust_methods_experiment_runs_and_ranks_by_the_worst_case_format(tiny_task, tmp_path):
    """experiments/robust_methods.yaml plans its whole grid; a slice of it runs, and the ranking
    names each cell's worst-case quantization gap and the format it happened at."""
    from harness.orchestration.cli import main

    assert main(["run", "--config", "experiments/robust_methods.yaml", "--dry-run"]) == 0
    out = tmp_path / "robust"
    assert main(["run", "--config", "experiments/robust_methods.yaml", "--methods", "quail,saf,mansu",
                 "--modes", "full", "--quant", "bf16,rtn4,gguf_q4_0", "--out", str(out)]) == 0
    board = json.loads((out / "leaderboard.json").read_text())["tasks"]["muse_tiny"]
    cells = {(e["method"], e["mode"]): e for e in board["rows"] + board["unranked"]}
    assert set(cells) == {("quail", "full"), ("saf", "full"), ("mansu", "full")}
    for e in cells.values():
        worst = max((g, q) for q, g in e["gap"].items() if g is not None)
        assert e["max_gap"] == worst[0] and e["max_gap_quant"] in ("rtn4", "gguf_q4_0")
    md = (out / "leaderboard.md").read_text()
    assert "| max quantization gap ↓ | worst-case format |" in md


def test_the_docs_page_takes_one_run_without_the_others():
    """benchmarks/robust_methods_docs.py --add: a run's section replaces its own or lands after the
    last run section; the others, and their leaderboards' inner headings, stay as they were."""
    docs = load_benchmark("robust_methods_docs")
    page = ("# Title\n\nintro\n\n## muse_tiny (runs/a)\n\ntiny\n\n## Answer\n\nboard a\n\n"
            "## muse_smol (runs/b)\n\nsmol\n\n## Answer\n\nboard b\n\n## MANSU's floor on muse_smol (benchmarks/x.py)\n\nfloor\n")
    added = docs.merge_sections(page, ["## muse_smol (runs/c)\n\nquail\n"])
    assert added.index("## muse_smol (runs/c)") > added.index("board b") and added.index("quail") < added.index("floor")
    replaced = docs.merge_sections(added, ["## muse_tiny (runs/a)\n\nnew tiny\n"])
    assert "new tiny" in replaced and "\ntiny\n" not in replaced and "board a" not in replaced
    assert replaced.count("## Answer") == 1 and "board b" in replaced and "quail" in replaced
    assert docs.merge_sections(page, []) == page


def test_the_readme_gets_the_pretrained_models_table(tmp_path, monkeypatch):
    """--add --readme (and every full render): the last muse_smol table replaces the README's,
    the tiny world's only when there is no muse_smol table; the rest of the README stays."""
    docs = load_benchmark("robust_methods_docs")
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:robust:start -->\nold\n<!-- results:robust:end -->\nrest\n")
    docs.write_readme(["**muse_tiny**\ntiny\n", "**muse_smol**\nfirst\n", "**muse_smol**\nsecond\n"])
    assert readme.read_text() == "intro\n<!-- results:robust:start -->\n**muse_smol**\nsecond\n<!-- results:robust:end -->\nrest\n"
    docs.write_readme(["**muse_tiny**\ntiny\n"])
    assert "**muse_tiny**\ntiny\n<!--" in readme.read_text() and "second" not in readme.read_text()


def test_a_lora_floor_sweep_gets_its_own_section(tmp_path):
    """A LoRA sweep (mansu_floor_sweep.py --mode lora --output) renders under its own heading,
    so --add --sweep replaces it without touching the full-model sweep's section."""
    docs = load_benchmark("robust_methods_docs")
    metrics = {"knowmem_f": 30.0, "knowmem_r": 27.0, "verbmem_f": 70.0}
    sweep = {"task": "muse_smol", "mode": "lora", "unlearned": "runs/x/stages/unlearn-s/unlearned/adapter",
             "floor": 1.0, "quant": "rtn4", "group_size": 64, "provenance": {},
             "rows": [{"floor_fraction": 0.03, "floored_weights": 1234, "fp32": metrics, "rtn4": metrics}]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    section = docs.floor_sweep(tmp_path / "sweep.json")
    assert section.startswith("## MANSU's floor on muse_smol, LoRA (") and "mansu LoRA adapter merged in" in section
    assert "| 0.03 | 1,234 | 30.0 → 30.0 | 27.0 → 27.0 |" in section
    page = "# T\n\n## muse_smol (runs/b)\n\nb\n\n## MANSU's floor on muse_smol (benchmarks/x.py)\n\nfull floor\n"
    once = docs.merge_sections(page, [section])
    assert "full floor" in once and once.count("1,234") == 1
    assert docs.merge_sections(once, [section]) == once  # replaced in place, not added twice


def test_the_docs_count_only_the_stages_a_run_uses(tmp_path):
    """smol_study_docs.timings: a run folder may keep stages of earlier settings (an unlearning
    redone at a new default); the compute quoted is that of the stages behind the results."""
    docs = load_benchmark("smol_study_docs")
    stages = {"unlearn-new": ("unlearn", "m/lora", 600.0, {}), "unlearn-old": ("unlearn", "m/lora", 6000.0, {}),
              "eval-new": ("evaluate", "m/lora @ rtn4", 30.0, {"source": {"stage": "unlearn-new"}}),
              "eval-old": ("evaluate", "m/lora @ rtn4", 900.0, {"source": {"stage": "unlearn-old"}}),
              "eval-target": ("evaluate", "target @ rtn4", 20.0, {"source": {"model": "target"}})}
    for name, (kind, label, seconds, config) in stages.items():
        (tmp_path / "stages" / name).mkdir(parents=True)
        (tmp_path / "stages" / name / "stage.json").write_text(
            json.dumps({"kind": kind, "label": label, "config": config, "result": {"seconds": seconds}}))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps({"stage": s}) + "\n" for s in ("eval-new", "eval-target")))
    text = docs.timings(tmp_path)
    assert "11 min: unlearning m/lora 10.0 min; 2 quantize-and-evaluate stages 1 min (20-30 s each)" in text


@pytest.mark.parametrize("mode, named", [("full", "no npo_gdr full unlearning"), ("lora", "no npo_gdr or mansu lora")])
def test_a_floor_sweep_without_an_unlearning_names_the_run_that_makes_one(tmp_path, mode, named):
    """mansu_floor_sweep.py floors npo_gdr's model, or in LoRA mode a mansu adapter: a run folder
    holding neither is refused with the command that fills it."""
    sweep = load_benchmark("mansu_floor_sweep")
    with pytest.raises(SystemExit, match=named) as refused:
        sweep.unlearned_model(tmp_path, "muse_smol", mode)
    assert f"--modes {mode} --out {tmp_path}" in str(refused.value)


def test_the_docs_refuse_to_mark_rows_stale_against_a_world_that_is_not_there(tmp_path, monkeypatch):
    """A world absent from this cache (HARNESS_CACHE unset, say) is planned under its path, so
    every row would look computed by other settings: the docs script stops and says which cache."""
    from types import SimpleNamespace

    import tasks
    from harness.orchestration.experiment import Experiment

    docs = load_benchmark("robust_methods_docs")
    exp = Experiment(tasks=["muse_smol"], methods=["saf"], modes=["lora"], quant=["bf16"])
    (tmp_path / "experiment.json").write_text(json.dumps({"experiment": exp.identity()}))
    monkeypatch.setattr(tasks, "get_task", lambda name: SimpleNamespace(prepare="m:f", dataset=str(tmp_path / "none")))
    with pytest.raises(SystemExit, match="muse_smol is not prepared in this cache .* set HARNESS_CACHE"):
        docs.stale_cells(tmp_path)
