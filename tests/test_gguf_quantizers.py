"""Tests of the llama.cpp GGUF quantizers (``quantizers/gguf.py``) and the GGUF writer
(``quantizers/gguf_export.py``) on a micro Llama (hidden 128, ffn 256, 2 layers): each format's
weights are the ``gguf`` package's quantize-dequantize round trip bit for bit, blocks hold at most
2^bits values, and the saved ``model.gguf`` has the quantized tensor types and llama metadata and
loads back through the harness's own GGUF loader to the same weights and logits."""

from __future__ import annotations

import gguf
import pytest
import torch

from gguf_helpers import MICRO_TEXTS, micro_llama
from harness import model_sources as ms
from harness.errors import HarnessError
from harness.plugins import registry
from harness.tensors import linear_names

FORMATS = {"gguf_q4_0": "Q4_0", "gguf_q4_1": "Q4_1", "gguf_q5_0": "Q5_0", "gguf_q8_0": "Q8_0"}
TEXTS = MICRO_TEXTS


@pytest.fixture(scope="module")
def micro():
    return micro_llama()


@pytest.fixture(scope="module")
def quantized(micro):
    model, tok = micro
    return {name: registry("quantizers").get(name)().quantize(model, tok) for name in FORMATS}


def round_trip(w: torch.Tensor, qtype_name: str) -> torch.Tensor:
    qtype = gguf.GGMLQuantizationType[qtype_name]
    a = w.detach().float().numpy()
    return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(a, qtype), qtype).reshape(a.shape))


@pytest.mark.parametrize("name", FORMATS)
def test_weights_are_the_gguf_round_trip(name, micro, quantized):
    model, tok = micro
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantized[name]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "input model changed"
    for n in linear_names(model):
        got = qmodel.get_submodule(n).weight
        assert got.dtype == model.get_submodule(n).weight.dtype
        want = round_trip(model.get_submodule(n).weight, FORMATS[name]).to(got.dtype)
        assert torch.equal(got, want), f"{name}: {n} is not gguf's quantize-dequantize"
        assert not torch.equal(got, model.get_submodule(n).weight), f"{name}: {n} was not quantized"
    assert torch.equal(qmodel.lm_head.weight, model.lm_head.weight)
    assert torch.equal(qmodel.model.embed_tokens.weight, model.model.embed_tokens.weight)


@pytest.mark.parametrize("name,levels", [("gguf_q4_0", 16), ("gguf_q4_1", 16), ("gguf_q5_0", 32)])
def test_distinct_values_per_block(name, levels, micro, quantized):
    model, _ = micro
    for n in linear_names(model):
        blocks = quantized[name].get_submodule(n).weight.reshape(-1, 32)
        assert max(len(torch.unique(b)) for b in blocks) <= levels, f"{name}: {n}"


def test_q8_0_is_closer_than_q4_0(micro, quantized):
    model, _ = micro

    def mse(name):
        return sum(((quantized[name].get_submodule(n).weight - model.get_submodule(n).weight) ** 2).mean().item()
                   for n in linear_names(model))

    assert mse("gguf_q8_0") < mse("gguf_q4_0") / 100


@pytest.mark.parametrize("name", ["gguf_q4_0", "gguf_q8_0"])
def test_saved_gguf_has_quantized_tensors_and_loads_back(name, micro, tmp_path):
    model, tok = micro
    qmodel = registry("quantizers").get(name)().quantize(model, tok, save_to=tmp_path / "q")
    path = tmp_path / "q" / "model.gguf"
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type for t in reader.tensors}
    qtype = gguf.GGMLQuantizationType[FORMATS[name]]
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == qtype
    assert sum(t == qtype for t in types.values()) == 7 * model.config.num_hidden_layers
    for plain in ("token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_norm.weight"):
        assert types[plain] == gguf.GGMLQuantizationType.F32, plain
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == 2 and fields["llama.embedding_length"].contents() == 128
    assert fields["llama.attention.head_count"].contents() == 4
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"].contents()) == model.config.vocab_size

    loaded, loaded_tok = ms.load_gguf(path, sha256=None, architecture="llama", log=lambda _: None)
    for n in linear_names(model):  # exact: transformers dequantizes with the same gguf code
        assert torch.equal(loaded.get_submodule(n).weight, qmodel.get_submodule(n).weight), n
    assert torch.equal(loaded.lm_head.weight, qmodel.lm_head.weight)
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    assert loaded_tok(TEXTS[0], return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, qmodel(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_width_not_a_multiple_of_32_is_one_line_error(micro):
    from tasks.tiny.train import TinyModelConfig, build_model

    _, tok = micro
    odd = build_model(tok, TinyModelConfig(hidden_size=128, intermediate_size=200, num_hidden_layers=1,
                                           num_attention_heads=4))
    with pytest.raises(HarnessError, match="down_proj has 200 input columns") as err:
        registry("quantizers").get("gguf_q4_0")().quantize(odd, tok)
    assert "\n" not in str(err.value)


def test_saving_a_non_llama_is_one_line_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from quantizers.gguf_export import write_llama_gguf

    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=50))
    with pytest.raises(HarnessError, match="only LlamaForCausalLM") as err:
        write_llama_gguf(tmp_path / "m.gguf", model, None)
    assert "\n" not in str(err.value) and not (tmp_path / "m.gguf").exists()
