"""Tests of llama.cpp's K-quant mixes (``quantizers/llamacpp.py``) on a micro Llama (hidden 128,
ffn 256, 2 layers): the harness evaluates exactly the weights of the GGUF llama.cpp wrote, each
tensor has the type llama.cpp's rules give it (K-quants where a row is a multiple of 256 columns,
the legacy fallback elsewhere), the file loads back through the harness's GGUF loader and runs in
llama.cpp itself with the same next-token logits up to llama.cpp's activation rounding; without
``llama-cpp-python`` the quantizers say how to install it, in one line."""

from __future__ import annotations

import sys

import gguf
import pytest
import torch

from gguf_helpers import MICRO_TEXTS, micro_llama
from harness import model_sources as ms
from harness.errors import HarnessError
from harness.plugins import registry
from harness.tensors import linear_names

TEXTS = MICRO_TEXTS
needs_llama_cpp = pytest.mark.skipif(registry("quantizers").get("gguf_q4_k_m").unavailable_reason() is not None,
                                     reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]')")


@pytest.fixture(scope="module")
def micro():
    return micro_llama()


@pytest.fixture(scope="module")
def q4_k_m(micro, tmp_path_factory):
    model, tok = micro
    folder = tmp_path_factory.mktemp("q4_k_m")
    q = registry("quantizers").get("gguf_q4_k_m")()
    return q, q.quantize(model, tok, save_to=folder), folder / "model.gguf"


@needs_llama_cpp
def test_weights_are_the_gguf_llama_cpp_wrote(micro, q4_k_m):
    model, _ = micro
    q, qmodel, path = q4_k_m
    loaded, _ = ms.load_gguf(path, sha256=None, architecture="llama", log=lambda _: None)
    for n in linear_names(model):
        got = qmodel.get_submodule(n).weight
        assert torch.equal(got, loaded.get_submodule(n).weight), f"{n} is not the GGUF's weight"
        assert not torch.equal(got, model.get_submodule(n).weight), f"{n} was not quantized"
    assert torch.equal(qmodel.lm_head.weight, model.lm_head.weight)
    assert torch.equal(qmodel.model.embed_tokens.weight, model.model.embed_tokens.weight)


@needs_llama_cpp
def test_each_tensor_gets_llama_cpps_type(micro, q4_k_m):
    model, _ = micro
    q, _, path = q4_k_m
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    # Q4_K_M gives attn_v and ffn_down Q6_K in the layers its rule picks (of 2: the last) and
    # Q4_K elsewhere; rows of 128 columns cannot hold a 256-column super-block, so those fall
    # back (Q4_K -> Q5_0, Q6_K -> Q8_0), while ffn_down's 256 columns keep their K-quant
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_up.weight"] == types["blk.0.attn_v.weight"] == "Q5_0"
    assert types["blk.1.attn_v.weight"] == "Q8_0"
    assert types["blk.0.ffn_down.weight"] == "Q4_K" and types["blk.1.ffn_down.weight"] == "Q6_K"
    record = q.describe()
    assert record["ftype"] == "Q4_K_M" and record["library_version"]
    assert sum(record["tensor_types"].values()) == 7 * model.config.num_hidden_layers
    assert q.tensor_types["model.layers.0.mlp.down_proj"] == types["blk.0.ffn_down.weight"]


@needs_llama_cpp
def test_llama_cpp_runs_the_file_as_the_harness_does(micro, q4_k_m):
    """llama.cpp loads the written GGUF and, on the same token ids, predicts the next token as the
    harness's model with those weights does; its matrix products round activations to 8 bits
    (ggml's Q8_K / Q8_0 dot products), so logits agree closely, not exactly. Ids, not text: the
    tiny tokenizer splits words with their trailing space, a rule none of llama.cpp's
    pre-tokenizers has, so llama.cpp's own tokenization of text differs (the vocabulary and merges
    are the same)."""
    import llama_cpp

    model, tok = micro
    _, qmodel, path = q4_k_m
    ids = tok(TEXTS[0], add_special_tokens=False).input_ids
    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=torch.get_num_threads())
    assert llm.n_vocab() == model.config.vocab_size
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[: len(ids)])
    with torch.no_grad():
        ours = qmodel(input_ids=torch.tensor([ids])).logits[0].float()
    corr = torch.corrcoef(torch.stack([theirs.flatten(), ours.flatten()]))[0, 1]
    assert corr > 0.995, f"llama.cpp's logits correlate {corr:.4f} with the harness's"
    with torch.no_grad():
        unquantized = model(input_ids=torch.tensor([ids])).logits[0].float()
    # it runs the quantized weights, not the model's own: closer to the harness's quantized model
    # (measured here: mean |difference| 0.0076) than to the unquantized one (0.0140)
    assert (theirs - ours).abs().mean() < 0.75 * (theirs - unquantized).abs().mean()


@needs_llama_cpp
def test_three_bit_mix_is_coarser_than_four(micro, q4_k_m):
    model, tok = micro
    _, q4model, _ = q4_k_m
    q3model = registry("quantizers").get("gguf_q3_k_m")().quantize(model, tok)

    def err(qm):
        return sum(((qm.get_submodule(n).weight - model.get_submodule(n).weight) ** 2).sum().item()
                   for n in linear_names(model))

    assert err(q3model) > err(q4model)


def test_without_llama_cpp_it_says_how_to_install(micro, monkeypatch):
    model, tok = micro
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    q = registry("quantizers").get("gguf_q4_k_m")()
    assert "pip install -e '.[llamacpp]'" in q.unavailable_reason()
    with pytest.raises(HarnessError, match=r"needs llama-cpp-python") as err:
        q.quantize(model, tok)
    assert "\n" not in str(err.value)
