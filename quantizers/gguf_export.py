"""A transformers ``LlamaForCausalLM`` and its byte-level BPE tokenizer written as a llama GGUF,
the way llama.cpp's converter (``convert_hf_to_gguf.py``) writes one: llama metadata from the
model config, the tokenizer (vocab, merges, token types, special ids) in the header, tensors
under llama.cpp's names, Q/K rows permuted into llama.cpp's rotary layout, linear weights in a
GGML quantized type and norms, embeddings and ``lm_head`` in F32. ``gguf`` is imported inside the
functions that write, so that building a GGUF quantizer (``quantizers/gguf.py`` imports this
module) does not load it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

# transformers module name inside a decoder layer -> llama.cpp tensor name inside blk.N
_BLOCK_TENSORS = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                  "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                  "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}
_TOP_TENSORS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "Q4_0": "MOSTLY_Q4_0", "Q4_1": "MOSTLY_Q4_1",
               "Q5_0": "MOSTLY_Q5_0", "Q5_1": "MOSTLY_Q5_1", "Q8_0": "MOSTLY_Q8_0"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter's permutation of Q/K rows (transformers undoes it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute``."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensor_names(model) -> dict[str, str]:
    """transformers module name -> llama.cpp tensor name (without ``.weight``) of every tensor
    written; ``lm_head`` is left out when it is tied to the embeddings (llama.cpp reuses them)."""
    names = dict(_TOP_TENSORS)
    if model.config.tie_word_embeddings:
        names.pop("lm_head")
    for i in range(model.config.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}": f"blk.{i}.{g}" for hf, g in _BLOCK_TENSORS.items()})
    return names


def check_exportable(model, tokenizer) -> None:
    """One-line error when ``model``/``tokenizer`` cannot be written as a llama GGUF."""
    arch = type(model).__name__
    if arch != "LlamaForCausalLM" or getattr(model.config, "model_type", None) != "llama":
        raise HarnessError(f"cannot write a llama GGUF of a {arch} ({getattr(model.config, 'model_type', '?')}); "
                           f"only LlamaForCausalLM models can be saved as GGUF (quantizing without saving works)")
    if tokenizer is None:
        raise HarnessError("writing a GGUF needs the model's tokenizer; none was given")
    model_json = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    pre = json.dumps(model_json.get("pre_tokenizer"))
    if model_json.get("model", {}).get("type") != "BPE" or "ByteLevel" not in pre:
        raise HarnessError(f"cannot write the tokenizer {type(tokenizer).__name__} into a GGUF: only byte-level "
                           f"BPE tokenizers (llama.cpp's 'gpt2' model) are supported")


def write_llama_gguf(path: str | Path, model, tokenizer, qtype=None, packed: dict | None = None) -> None:
    """Write ``model`` and ``tokenizer`` as a llama GGUF at ``path``. Linear weights of the decoder
    blocks are stored as ``qtype`` (a ``gguf.GGMLQuantizationType``; default F32): ``packed[module
    name]``, the bytes ``gguf.quants.quantize`` gave for that weight, when given, else quantized here."""
    import gguf

    check_exportable(model, tokenizer)
    qtype = qtype if qtype is not None else gguf.GGMLQuantizationType.F32
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, model.config, qtype)
    _add_tokenizer(writer, tokenizer, model.config.vocab_size)
    for hf_name, g_name in gguf_tensor_names(model).items():
        data, raw = _tensor(model, hf_name, qtype, packed or {})
        if raw is None:
            writer.add_tensor(f"{g_name}.weight", data)
        else:
            writer.add_tensor(f"{g_name}.weight", data, raw_shape=data.shape, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensor(model, hf_name: str, qtype, packed: dict):
    """(array, raw GGML type or None for plain F32) of one tensor, Q/K rows permuted."""
    import gguf

    cfg = model.config
    module = model.get_submodule(hf_name)
    n_head = cfg.num_attention_heads if hf_name.endswith("q_proj") else \
        cfg.num_key_value_heads if hf_name.endswith("k_proj") else None
    linear = hf_name.startswith("model.layers.") and hf_name.endswith("_proj")
    if linear and qtype != gguf.GGMLQuantizationType.F32:
        data = packed.get(hf_name)
        if data is None:
            data = gguf.quants.quantize(_float32(module.weight), qtype)
        raw = qtype
    else:
        data, raw = _float32(module.weight), None
    # permuting whole rows commutes with quantizing them (blocks never span rows)
    return np.ascontiguousarray(permute(data, n_head) if n_head else data), raw


def _float32(weight) -> np.ndarray:
    return weight.detach().float().cpu().numpy()


def _add_metadata(writer, cfg, qtype) -> None:
    import gguf

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType[_FILE_TYPES[qtype.name]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.get_added_vocab().values())
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        if i not in by_id:  # the embedding is wider than the vocabulary: llama.cpp's padding
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(gguf.TokenType.CONTROL if i in special else
                     gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for role, ident in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                        ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if ident is not None:
            getattr(writer, f"add_{role}_token_id")(ident)
