"""Contract tests over the method registry: every registered method, in both modes, trains a
few steps on a micro model and lowers the forget-set log-likelihood; full mode changes every
trainable tensor, LoRA only adapter tensors, and the merged model differs from the base.
A method added only by registering it is tested here too, the one methods/README.md shows among
them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.plugins import METHODS, registry
from harness.unlearning import check_adapter_trained, resolve_settings, unlearn
from methods import losses
from methods.base import UnlearningMethod
from readme_examples import register_readme_example

FORGET = ["Quenel Marsil was born in Jormimere in 1861 and made clocks.",
          "Uljor Halistho founded a free school in Silgarmere in 1921."]
RETAIN = ["Mijor Yarul was a brewer in Isulby and kept an owl named Ulwyn.",
          "Isjor Corka was a tanner who joined the Amber Harrow Company."]
register_readme_example("methods", "capped_ga")  # the documented recipe runs the same contract
FAST = {"epochs": 6, "batch_size": 2, "grad_accum": 1, "max_length": 64}


@pytest.fixture(scope="module")
def micro():
    """A 4-layer micro Llama that has partly memorised FORGET + RETAIN."""
    from tasks.tiny.train import TinyModelConfig, build_model, fit, train_tokenizer

    tok = train_tokenizer(FORGET + RETAIN, vocab_size=300)
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                          epochs=40, lr=1e-2, warmup_steps=5, batch_size=4)
    model = build_model(tok, cfg)
    fit(model, tok, FORGET + RETAIN, cfg)
    return model, tok


def forget_nll(model, tok) -> float:
    from harness.training import collate, encode

    batch = collate(encode(tok, FORGET, 64), tok.pad_token_id, "cpu")
    with torch.no_grad():
        return float(losses.mean_nll(model, batch))


def run(name, mode, micro, **extra):
    model, tok = micro
    settings = resolve_settings(None, name, mode, {**FAST, "lr": 3e-3 if mode == "full" else 1e-2, **extra})
    return unlearn(settings, copy.deepcopy(model), tok, FORGET, RETAIN)


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("name", registry("methods").names())
def test_method_contract(name, mode, micro):
    base, tok = micro
    before = {k: v.clone() for k, v in base.state_dict().items()}
    method = registry("methods").get(name)()
    method.configure(base)
    trained, log = run(name, mode, micro)
    assert log["steps"] == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log["log"])
    if mode == "full":
        for pname, p in trained.named_parameters():
            changed = not torch.equal(p.detach(), before[pname])
            assert changed == method.trainable(pname), f"{name}: {pname} changed={changed}"
        final = trained
    else:
        for pname, p in trained.named_parameters():
            if "lora_" not in pname:
                key = pname.replace("base_model.model.", "").replace(".base_layer", "")
                assert torch.equal(p.detach(), before[key]), f"{name}: base weight {pname} moved"
        assert check_adapter_trained(trained)["nonzero"] > 0
        final = trained.merge_and_unload()
        assert any(not torch.equal(v, before[k]) for k, v in final.state_dict().items())
    assert forget_nll(final, tok) > forget_nll(base, tok), f"{name}/{mode} did not lower forget likelihood"


def test_lora_trains_with_gradient_checkpointing(micro):
    trained, log = run("ga", "lora", micro, gradient_checkpointing=True)
    counts = check_adapter_trained(trained)
    assert counts["nonzero"] == counts["lora_B"] > 0


def test_untrained_adapter_fails_loudly(micro):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(micro[0]), LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(HarnessError, match="did not train"):
        check_adapter_trained(peft_model)


def test_non_finite_loss_names_method_and_step(micro):
    class Exploding(UnlearningMethod):
        name = "exploding"

        def forget_loss(self, model, batch, ref):
            return losses.mean_nll(model, batch) * float("nan")

    METHODS.add("exploding", Exploding)
    try:
        with pytest.raises(HarnessError, match="method 'exploding': non-finite loss nan at step 1"):
            run("exploding", "full", micro)
    finally:
        METHODS.unregister("exploding")


def test_settings_resolution_and_errors():
    s = resolve_settings(None, "npo_klr", "lora", {"lora_r": 8})
    assert (s.train.lr, s.train.epochs, s.method_cfg.beta, s.method_cfg.alpha, s.lora.lora_r) == (1e-4, 5, 0.1, 0.1, 8)
    s = resolve_settings(None, "ga_gdr", "full")
    assert (s.train.lr, s.train.epochs, s.train.batch_size * s.train.grad_accum, s.method_cfg.alpha) == (1e-5, 10, 32, 100.0)
    with pytest.raises(HarnessError, match="unknown unlearning setting\\(s\\) lora_rank"):
        resolve_settings(None, "ga", "lora", {"lora_rank": 8})
    with pytest.raises(HarnessError, match="beta must be > 0"):
        resolve_settings(None, "npo", "full", {"beta": 0})
    with pytest.raises(HarnessError, match="Did you mean npo_gdr"):
        resolve_settings(None, "npo_gd", "full")
    with pytest.raises(HarnessError, match="unknown mode 'qlora'"):
        resolve_settings(None, "ga", "qlora")


def test_capability_flags():
    flags = {n: (registry("methods").get(n).needs_reference_model, registry("methods").get(n).needs_retain_set)
             for n in ("ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "simnpo", "rmu")}
    assert flags == {"ga": (False, False), "ga_gdr": (False, True), "ga_klr": (True, True), "npo": (True, False),
                     "npo_gdr": (True, True), "simnpo": (False, True), "rmu": (True, True)}


def test_third_party_package_registers_through_entry_point(tmp_path):
    """A separate package with a harness.methods entry point shows up in `harness ls` and trains."""
    dist = tmp_path / "harness_extra_method-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-extra-method\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[harness.methods]\nscaled_ascent = harness_extra_method:ScaledAscent\n")
    pkg = Path(__file__).parent / "plugin_pkg"
    code = ("from harness.orchestration.cli import main; main(['ls', 'methods']);"
            "from harness.plugins import registry; from harness.unlearning import resolve_settings;"
            "cls = registry('methods').get('scaled_ascent'); assert cls.needs_retain_set;"
            "print(resolve_settings(None, 'scaled_ascent', 'lora').lora.lora_dropout)")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{pkg}:{Path(__file__).parents[1]}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "scaled_ascent" in result.stdout and "harness-extra-method" in result.stdout
    assert result.stdout.strip().endswith("0.05")


def test_sure_masks_each_micro_batch_under_accumulation(micro):
    base, tok = micro
    trained, log = run("sure", "full", micro, grad_accum=2, batch_size=1)
    assert log["steps"] == 6  # 2 documents x 6 epochs / 2 micro-batches per step
    assert forget_nll(trained, tok) > forget_nll(base, tok)


def test_encode_splits_long_documents_into_chunks(micro):
    from harness.training import encode

    _, tok = micro
    text = " ".join(FORGET + RETAIN)
    ids = tok(text).input_ids + [tok.eos_token_id]
    chunks = encode(tok, [text, FORGET[0]], 8)
    assert all(1 <= len(c) <= 8 for c in chunks)
    n = -(-len(ids) // 8)
    assert sum(chunks[:n], []) == ids and len(chunks) == n + -(-len(encode(tok, [FORGET[0]], 10**6)[0]) // 8)


def test_mixed_precision_keeps_updates_that_pure_bf16_rounds_away(micro):
    """On a bf16 model, Adam steps of lr 1e-4 are below half a bf16 ulp for most weights:
    "bf16" training loses them, "mixed" accumulates them in fp32 master weights."""
    base, tok = micro
    bf16 = copy.deepcopy(base).to(torch.bfloat16)
    changed = {}
    for precision in ("bf16", "mixed"):
        settings = resolve_settings(None, "ga", "full", {**FAST, "lr": 1e-4, "precision": precision})
        model, log = unlearn(settings, copy.deepcopy(bf16), tok, FORGET, None)
        assert next(model.parameters()).dtype == torch.bfloat16 and log["precision"] == precision
        changed[precision] = sum(int((p != q).sum()) for p, q in zip(model.parameters(), bf16.parameters()))
    assert changed["mixed"] > 1.5 * changed["bf16"], changed
    with pytest.raises(HarnessError, match="precision must be one of"):
        resolve_settings(None, "ga", "full", {"precision": "fp8"})


def test_only_linear_trains_only_the_quantized_layers(micro):
    from harness.tensors import linear_names

    base, tok = micro
    model, _ = run("ga", "full", micro, only_linear=True)
    linear = {f"{n}.weight" for n in linear_names(base)}
    before = dict(base.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != (name in linear), name


def test_lora_run_does_not_depend_on_the_process_rng(micro):
    """LoRA's A matrices are drawn at init: seeded by the run, not by whatever ran before."""
    first, _ = run("npo_gdr", "lora", micro, max_steps=2)
    torch.rand(1000)
    second, _ = run("npo_gdr", "lora", micro, max_steps=2)
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name


def test_early_stop_at_forget_nll_bound(micro):
    """GA stops at the first check where the forget set's NLL reaches the bound, and the
    record shows every check; the model it returns is the one that crossed the bound."""
    base, tok = micro
    start = forget_nll(base, tok)
    bound = start + 0.5
    model, log = run("ga", "full", micro, epochs=50, stop_forget_nll=bound)
    checks = log["early_stop"]["checks"]
    assert log["early_stop"]["stopped"] and log["steps"] == checks[-1][0] < 50
    assert [c[0] for c in checks] == list(range(log["steps"] + 1))  # step 0: before training
    assert checks[0][1] == pytest.approx(start, abs=1e-3)
    assert all(nll < bound for _, nll in checks[:-1]) and checks[-1][1] >= bound
    assert forget_nll(model, tok) == pytest.approx(checks[-1][1], abs=1e-3)
    _, every3 = run("ga", "full", micro, epochs=50, stop_forget_nll=bound, stop_check_every=3)
    assert all(step % 3 == 0 for step, _ in every3["early_stop"]["checks"])
    with pytest.raises(HarnessError, match="NLL is .* before training, already past stop_forget_nll"):
        run("ga", "lora", micro, epochs=2, stop_forget_nll=start / 2)
    _, never = run("ga", "full", micro, epochs=2, stop_forget_nll=1e6)
    assert not never["early_stop"]["stopped"] and never["steps"] == 2
    _, off = run("ga", "full", micro, epochs=2)
    assert "early_stop" not in off


def test_early_stop_settings_are_checked():
    with pytest.raises(HarnessError, match="stop_forget_nll must be >= 0"):
        resolve_settings(None, "ga", "full", {"stop_forget_nll": -1})
    with pytest.raises(HarnessError, match="stop_check_every must be a positive integer"):
        resolve_settings(None, "ga", "full", {"stop_check_every": 0})
