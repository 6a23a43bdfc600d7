"""Loading causal LMs and tokenizers from a local folder or a hub id, with one-line errors.

bf16 on GPU, fp32 on CPU. Tokenizers get a pad token (if missing) and left padding, which
batched greedy generation needs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CompressedTensorsConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from harness.errors import HarnessError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_dtype_choice = "auto"  # set once per process from --dtype / an experiment's dtype


def set_dtype(name: str) -> None:
    """The dtype every model of this process is loaded in: ``auto`` (bf16 on a GPU, fp32 on CPU),
    or ``fp32`` (what MUSE evaluates in), ``bf16``, ``fp16``. Stage ids record the result."""
    global _dtype_choice
    if name not in ("auto", *DTYPES):
        raise HarnessError(f"dtype {name!r}: choose auto, {', '.join(DTYPES)} (fp32 is what MUSE evaluates in)")
    _dtype_choice = name


def default_dtype(device: str):
    if _dtype_choice != "auto":
        return getattr(torch, DTYPES[_dtype_choice])
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def _hub_config(repo_id: str):
    """A hub model's config, from the local hub cache or downloaded (config.json only)."""
    try:
        return AutoConfig.from_pretrained(repo_id)
    except Exception as exc:  # OSError, gated repo, bad id...: the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"model {repo_id} is not a local folder and is not available from the hub "
                           f"({first}); download it first or pass a local model folder") from exc


def check_model_path(path: str, hub: bool = False) -> None:
    """Fail early, in one line, on a missing folder or one that holds no causal LM. A hub id is
    checked only with ``hub`` (its config must be in the hub cache or downloadable)."""
    if not _looks_local(path):
        if hub:
            _check_causal_lm(path, _hub_config(path))
        return  # otherwise checked when loaded
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise HarnessError(f"model path {path} is a file; pass the model's folder (the one holding config.json)")
    if not folder.is_dir():
        raise HarnessError(f"model path {path} does not exist; pass a model folder or a hub id")
    if not (folder / "config.json").is_file():
        raise HarnessError(f"model path {path} has no config.json; it is not a Hugging Face model folder")

    _check_causal_lm(path, AutoConfig.from_pretrained(folder))


def _check_causal_lm(path: str, config) -> None:
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise HarnessError(f"model at {path} is a '{config.model_type}' model, not a causal LM")


def load_tokenizer(path: str):
    try:
        tok = AutoTokenizer.from_pretrained(str(Path(path).expanduser()) if _looks_local(path) else path)
    except Exception as exc:
        raise HarnessError(f"could not load a tokenizer from {path}: {str(exc).splitlines()[0]}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path: str, device: str | None = None, dtype=None):
    """A causal LM in eval mode on ``device`` (default: GPU if any, else CPU)."""
    check_model_path(path)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    source = str(Path(path).expanduser()) if _looks_local(path) else path
    kwargs, method = _quantized_checkpoint_kwargs(source, device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*already has a `quantization_config`")
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except Exception as exc:
        hint = "" if _looks_local(path) else " (no hub access here? pass a local model folder)"
        raise HarnessError(f"could not load a causal LM from {path}: {str(exc).splitlines()[0]}{hint}") from exc
    if method == "compressed-tensors":
        from quantizers.llmc import materialize  # lazy: llm-compressor takes seconds to import

        model = materialize(model)
    if method != "bitsandbytes":  # bitsandbytes models are placed by device_map and refuse .to()
        model = model.to(device)
    return model.eval()


def _quantized_checkpoint_kwargs(source: str, device: str) -> tuple[dict, str | None]:
    """How to load a checkpoint written by ``harness quantize``: a compressed-tensors one
    (RTN/GPTQ/AWQ) is decompressed into plain linear layers holding its dequantized weights,
    exactly what the quantizer evaluated in memory; a bitsandbytes one keeps its layers."""
    try:
        qc = getattr(AutoConfig.from_pretrained(source), "quantization_config", None)
    except Exception:  # an unreadable config is reported by from_pretrained itself
        return {}, None
    method = (qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)) if qc else None
    method = getattr(method, "value", method)
    if method == "compressed-tensors":
        return {"quantization_config": CompressedTensorsConfig(dequantize=True)}, method
    if method == "bitsandbytes":
        return {"device_map": device}, method
    return {}, method
