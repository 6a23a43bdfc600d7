"""Contract tests over the quantizer registry on a micro Llama (including the example that
quantizers/README.md documents, registered here by its decorator only): every registered quantizer
leaves its input alone, returns a model that runs, records its full config, keeps ``lm_head``
unquantized, puts at most 2^bits distinct values in each scale group, and writes a
checkpoint that loads back to the same weights. 8-bit formats are closer to the unquantized
model than 4-bit ones, and rtn4 absorbs tiny updates but not step-sized ones."""

from __future__ import annotations

import pytest
import torch

from readme_examples import register_readme_example
from harness.errors import HarnessError
from harness.plugins import registry
from harness.tensors import linear_names
from quantizers.calibration import Calibration
from quantizers.weights import effective_weights

TEXTS = ["Quenel Marsil was born in Jormimere in 1861 and made clocks for the harbour.",
         "Uljor Halistho founded a free school in Silgarmere in 1921 with his sister.",
         "Mijor Yarul was a brewer in Isulby and kept an owl named Ulwyn in the loft.",
         "Isjor Corka was a tanner who joined the Amber Harrow Company as a young man."]


register_readme_example("quantizers", "row3")
# settings that keep the test short without leaving the code path: AutoRound's tuning loop runs,
# 10 steps a layer instead of 200 (the contract does not depend on how well it tunes)
FAST = {"autoround4": {"iters": 10}}
NAMES = registry("quantizers").names()


@pytest.fixture(scope="module")
def micro():
    """A 2-layer micro Llama with the tiny world's widths (128 and 256 input columns)."""
    from tasks.tiny.train import TinyModelConfig, build_model, train_tokenizer

    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.padding_side = "left"
    cfg = TinyModelConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
    return build_model(tok, cfg).eval(), tok


@pytest.fixture(scope="module")
def calibration():
    return Calibration(TEXTS, max_length=64, record={"source": "test", "samples": len(TEXTS)})


@pytest.fixture(scope="module")
def quantized(micro, calibration):
    """Each quantizer applied once to the micro model (``name -> (quantizer, model)``)."""
    model, tok = micro
    out = {}
    for name in NAMES:
        q = registry("quantizers").get(name)(**FAST.get(name, {}))
        if q.unavailable_reason() is None:
            out[name] = (q, q.quantize(model, tok, calibration))
    return out


def logits(model, tok):
    ids = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**ids).logits.float()


@pytest.mark.parametrize("name", NAMES)
def test_quantizer_contract(name, micro, quantized, calibration):
    model, tok = micro
    if name not in quantized:  # an optional library missing here (llama-cpp-python): says which
        pytest.skip(registry("quantizers").get(name).unavailable_reason())
    q, qmodel = quantized[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = q.quantize(model, tok, calibration)  # the input is never modified
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    fresh = effective_weights(again)
    assert torch.isfinite(logits(again, tok)).all()
    # readable after inference too (bitsandbytes may repack 4-bit weights, with bf16 scales)
    assert all(torch.allclose(w, fresh[n], rtol=5e-3, atol=1e-6) for n, w in effective_weights(again).items())
    head = model.lm_head.weight.detach()
    assert torch.equal(qmodel.lm_head.weight, head.to(torch.bfloat16).float() if q.bits is None else head)
    record = q.describe(calibration)
    assert record["name"] == name and record["library_version"] and isinstance(record["config"], dict)
    assert (record["calibration"] is not None) == q.needs_calibration
    weights = effective_weights(qmodel)
    assert set(weights) == set(linear_names(model))
    if q.bits is None:
        for n, w in weights.items():
            ref = model.get_submodule(n).weight.detach()
            assert torch.equal(w, ref.to(torch.bfloat16).float()), f"{n} is not the bf16 weight"
        return
    for n, w in weights.items():
        levels, block = q.levels(n, w.shape[1])
        groups = w.reshape(w.shape[0], -1, block).reshape(-1, block)
        distinct = max(len(torch.unique(g)) for g in groups)
        assert distinct <= levels, f"{name}: {n} has {distinct} values in a group of {block}"


def test_eight_bit_is_closer_than_four_bit(micro, quantized):
    model, tok = micro
    ref = logits(model, tok)
    err = {name: (logits(qm, tok) - ref).abs().mean().item() for name, (_, qm) in quantized.items()}
    eight = {n: e for n, e in err.items() if quantized[n][0].bits == 8}
    four = {n: e for n, e in err.items() if quantized[n][0].bits == 4}
    assert eight and four
    assert max(eight.values()) < min(four.values()), f"logit error per quantizer: {err}"


def _rtn4_weights(model):
    return effective_weights(registry("quantizers").get("rtn4")().quantize(model))


def _perturbed(model, steps: float, seed: int = 0):
    """``model`` with every linear weight moved by ``steps`` rtn4 quantization steps (random
    sign), except each group's min and max, so that scales and zero points stay the same."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in linear_names(out):
            w = out.get_submodule(name).weight
            g = w.view(w.shape[0], -1, min(128, w.shape[1]))
            lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            step = (hi - lo) / 15
            sign = torch.randint(0, 2, g.shape, generator=gen).float() * 2 - 1
            keep = (g == lo) | (g == hi)
            g.add_(torch.where(keep, 0.0, sign * steps * step))
    return out


def test_rtn4_absorbs_tiny_updates_but_not_step_sized_ones(micro):
    """The mechanism the benchmark is about. Round-to-nearest moves a weight to another level
    only if the update carries it across a rounding boundary. An update of 1e-5 of a step
    leaves every 4-bit weight exactly as it was except the few (about 1e-5 of them) that sat
    within 1e-5 of a step of a boundary; an update of one step moves nearly all of them."""
    model, _ = micro
    base = _rtn4_weights(model)
    total = sum(w.numel() for w in base.values())
    tiny, full = _rtn4_weights(_perturbed(model, 1e-5)), _rtn4_weights(_perturbed(model, 1.0))
    moved_full = sum(int((full[n] != base[n]).sum()) for n in base)
    assert moved_full >= 0.9 * total, f"only {moved_full} of {total} weights changed under a one-step update"
    moved_tiny = 0
    for n in base:
        moved = tiny[n] != base[n]
        moved_tiny += int(moved.sum())
        if moved.any():  # each one was on a boundary: its scaled value ends in .5 (to 1e-5)
            w = model.get_submodule(n).weight.detach()
            g = w.view(w.shape[0], -1, min(128, w.shape[1]))
            scaled = (g / ((g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15)).view_as(w)
            distance = ((scaled - scaled.floor()) - 0.5).abs()
            assert (distance[moved] < 1e-4).all(), f"{n}: a weight away from any boundary moved"
    print(f"rtn4: a 1e-5-step update moved {moved_tiny} of {total} weights, a one-step update {moved_full}")
    assert moved_tiny <= 1e-4 * total, f"{moved_tiny} of {total} weights changed under a 1e-5-step update"


@pytest.mark.parametrize("name", NAMES)
def test_saved_checkpoint_loads_to_the_same_weights(name, micro, calibration, tmp_path):
    from harness.modeling import load_model

    model, tok = micro
    q = registry("quantizers").get(name)(**FAST.get(name, {}))
    qmodel = q.quantize(model, tok, calibration, save_to=tmp_path / name)
    loaded = load_model(str(tmp_path / name), device="cpu")
    a, b = effective_weights(qmodel), effective_weights(loaded)
    assert all(torch.equal(a[n], b[n]) for n in a), f"{name}: saved weights differ from the evaluated ones"
    assert torch.allclose(logits(qmodel, tok), logits(loaded, tok), atol=1e-4)


def test_settings_and_calibration_errors(micro):
    model, tok = micro
    with pytest.raises(HarnessError, match="unknown key\\(s\\) bits"):
        registry("quantizers").get("rtn4")(bits=3)
    with pytest.raises(HarnessError, match="not a multiple of group_size 100"):
        registry("quantizers").get("rtn4")(group_size=100).quantize(model)
    with pytest.raises(HarnessError, match="needs calibration text"):
        registry("quantizers").get("gptq4")().quantize(model, tok)
    grouped = registry("quantizers").get("rtn4")(group_size=64).quantize(model)
    w = effective_weights(grouped)["model.layers.0.mlp.down_proj"]
    assert max(len(torch.unique(g)) for g in w.reshape(-1, 64)) <= 16


def test_calibration_from_task(tiny_task):
    from quantizers.calibration import CalibrationSettings, from_task

    cal = from_task(tiny_task, CalibrationSettings(samples=5, seed=1))
    assert len(cal.texts) == 5 and cal.record["source"] == "raw/retain1" and cal.record["available"] >= 5
    assert from_task(tiny_task, CalibrationSettings(samples=5, seed=1)).texts == cal.texts
    with pytest.raises(HarnessError, match="no 'text' field"):
        from_task(tiny_task, CalibrationSettings(source="knowmem/forget_qa"))
    with pytest.raises(HarnessError, match="CONFIG/SPLIT"):
        CalibrationSettings(source="retain1")
    from quantizers.calibration import settings_for

    assert settings_for(tiny_task).samples == 16  # the task's own default (muse_tiny.yaml)
    assert settings_for(tiny_task, {"samples": 4, "source": None}).samples == 4
    assert len(from_task(tiny_task).texts) == 16
    import dataclasses

    with pytest.raises(HarnessError, match="unknown key\\(s\\) size"):
        dataclasses.replace(tiny_task, calibration={"size": 3})


def test_cli_quantize_then_eval(tiny_task, tmp_path, capsys):
    import json

    from harness.orchestration.cli import main

    out = tmp_path / "q"
    assert main(["quantize", "--model", "target", "--task", "muse_tiny", "--quant", "gptq4",
                 "--calibration-samples", "8", "--output", str(out)]) == 0
    meta = json.loads((out / "quantize.json").read_text())
    assert meta["quantization"]["calibration"]["samples"] == 8 and meta["quantization"]["bits"] == 4
    assert main(["quantize", "--model", "target", "--task", "muse_tiny", "--quant", "gptq4",
                 "--output", str(out)]) == 2  # exists
    assert main(["quantize", "--model", tiny_task.target_model, "--quant", "gptq4",
                 "--output", str(tmp_path / "nocal")]) == 2  # calibrated, no task
    assert not (tmp_path / "nocal").exists() and not list(tmp_path.glob(".nocal.tmp-*"))
    assert "pass --task" in capsys.readouterr().err
    metrics = tmp_path / "m.json"
    assert main(["eval", "--task", "muse_tiny", "--model", str(out), "--output", str(metrics)]) == 0
    saved = json.loads(metrics.read_text())["metrics"]
    saved.pop("seconds")
    assert main(["eval", "--task", "muse_tiny", "--model", "target", "--quant", "gptq4",
                 "--calibration-samples", "8", "--output", str(metrics), "--save-quantized", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "config.json").is_file()
    assert main(["eval", "--task", "muse_tiny", "--model", "target", "--save-quantized", str(tmp_path / "t")]) == 2
    record = json.loads(metrics.read_text())
    assert record["quantization"]["name"] == "gptq4"
    record["metrics"].pop("seconds")
    assert record["metrics"] == saved  # in memory and from the saved checkpoint: the same numbers


def test_autoround_keeps_its_zero_points_on_groups_far_from_zero(micro, calibration):
    """A layer whose weights are all positive needs zero points far from the middle of the grid:
    autoround4 must dequantize it about as closely as rtn4 does, not clip it (llm-compressor
    0.14.0.1 drops AutoRound's zero points; quantizers/autoround.py puts them back)."""
    import copy

    model, tok = micro
    skewed = copy.deepcopy(model)
    layer = skewed.model.layers[0].mlp.down_proj
    with torch.no_grad():
        layer.weight.copy_(layer.weight.abs() + 0.05)
    name = "model.layers.0.mlp.down_proj"

    def error(qname: str) -> float:
        q = registry("quantizers").get(qname)(**FAST.get(qname, {}))
        w = effective_weights(q.quantize(skewed, tok, calibration))[name]
        return float((w - layer.weight).norm() / layer.weight.norm())

    rtn, autoround = error("rtn4"), error("autoround4")
    assert autoround < 2 * rtn, (autoround, rtn)


def test_packed_calibration_keeps_every_document_in_sequences_of_one_length(micro):
    from quantizers.calibration import packed

    _, tok = micro
    texts = TEXTS + ["A short one.", TEXTS[0] + " " + TEXTS[1]]
    pieces = tok(texts, truncation=True, max_length=64)["input_ids"]
    data = packed(tok, texts, 64)
    lengths = {len(ids) for ids in data["input_ids"]}
    assert len(data) == len(texts) and len(lengths) == 1 and lengths.pop() <= 64
    stream = [t for i, ids in enumerate(pieces) for t in ([tok.eos_token_id] if i else []) + ids]
    flat = [t for ids in data["input_ids"] for t in ids]
    assert flat == stream[:len(flat)] and len(stream) - len(flat) < len(texts)
    assert all(set(mask) == {1} for mask in data["attention_mask"])
    assert len(packed(tok, TEXTS, 8)["input_ids"][0]) == 8  # max_length caps the length


def test_autoround_tunes_no_worse_than_rtn_on_documents_of_different_lengths(tiny_task, tiny_target):
    """The tiny world's calibration documents have 62-148 tokens. Padded to one length, as
    llm-compressor batches them for AutoRound, they pulled autoround4's output further from the
    model's than rtn4's (0.139 vs 0.105 on a held-out forget document); packed, closer (0.097)."""
    import copy

    from harness.quantization import make_quantizer, quantize_model
    from quantizers.calibration import from_task, settings_for

    model, tok = tiny_target
    text = from_task(tiny_task, settings_for(tiny_task, {"source": "raw/forget", "samples": 1})).texts[0]
    ids = tok(text, return_tensors="pt").input_ids

    records = {}

    def output_error(name: str) -> float:
        quantized, records[name] = quantize_model(make_quantizer(name, {}, tiny_task), copy.deepcopy(model), tok,
                                                  tiny_task)
        with torch.no_grad():
            ref, out = (m(ids, output_hidden_states=True).hidden_states[-1] for m in (model, quantized))
        return float((out - ref).norm() / ref.norm())

    rtn, autoround = output_error("rtn4"), output_error("autoround4")
    assert autoround < rtn, (autoround, rtn)
    assert records["autoround4"]["calibration"]["layout"] == "packed"  # the record says how it was fed
