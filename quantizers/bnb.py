"""bitsandbytes formats: ``nf4``, ``fp4`` (Dettmers et al. 2023, QLoRA) and ``int8`` (LLM.int8,
Dettmers et al. 2022).

These are what ``transformers`` loads with ``BitsAndBytesConfig(load_in_4bit=...)`` /
``load_in_8bit``, with its defaults: 4-bit blocks of 64 weights with an absmax scale, no double
quantization, compute in the model's dtype; LLM.int8 with outlier threshold 6.0. FP4 with
these defaults is what the seed paper and Zhang et al. ran as "4-bit".

The linear layers (all but ``lm_head``) are swapped in memory for bitsandbytes' own
``Linear4bit`` / ``Linear8bitLt``, so evaluation runs the library's kernels; LLM.int8 cannot be
expressed as weights alone (it computes outlier activation columns in 16 bits). The saved
checkpoint goes through ``transformers`` so that it loads with ``from_pretrained``; a test
checks that both routes give the same weights.

``transformers`` and bitsandbytes are imported inside the methods that quantize, so that
building the quantizer loads neither (``quantizers/base.py``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.plugins import QUANTIZERS
from harness.tensors import linear_names
from quantizers.base import QuantConfig, Quantizer

# LLM.int8 logs a warning on every forward that float32 inputs are cast to float16, which is
# how the format works; one per layer per batch would drown the progress display.
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

BLOCK_4BIT = 64  # bitsandbytes' block size, fixed in transformers' BitsAndBytesConfig


@dataclass
class FourBitConfig(QuantConfig):
    double_quant: bool = False  # quantize the absmax scales too (bnb_4bit_use_double_quant)


@dataclass
class Int8Config(QuantConfig):
    threshold: float = 6.0  # activation outlier threshold (llm_int8_threshold); 0 disables

    def __post_init__(self) -> None:
        if float(self.threshold) < 0:
            raise HarnessError(f"threshold must be >= 0, got {self.threshold}")


def _swap(model, make) -> None:
    for name in linear_names(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        new = make(old)
        if old.bias is not None:
            new.bias = type(old.bias)(old.bias.data, requires_grad=False)
        setattr(parent, child, new.to(old.weight.device))  # .to() quantizes the weight


class _Bnb(Quantizer):
    library = "bitsandbytes"
    family = "bitsandbytes"

    def hf_config(self, dtype):
        raise NotImplementedError

    def _quantize(self, model, tokenizer, calibration, save_to):
        if save_to is not None:
            self._save(model, tokenizer, save_to)
        self.swap(model)
        return model

    def _save(self, model, tokenizer, save_to: Path) -> None:
        """Quantize through ``transformers`` (the loadable format) and write it."""
        from transformers import AutoModelForCausalLM

        dtype = next(model.parameters()).dtype
        with tempfile.TemporaryDirectory(prefix="harness-bnb-") as tmp:
            model.save_pretrained(tmp)
            loaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype, quantization_config=self.hf_config(dtype),
                                                          device_map=str(next(model.parameters()).device))
        save_to.mkdir(parents=True, exist_ok=True)
        loaded.save_pretrained(save_to)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_to)
        del loaded


class _FourBit(_Bnb):
    Config = FourBitConfig
    bits = 4
    quant_type = ""

    def scale_group(self, in_features: int) -> int:
        return BLOCK_4BIT

    def hf_config(self, dtype):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type, bnb_4bit_compute_dtype=dtype,
                                  bnb_4bit_use_double_quant=bool(self.cfg.double_quant))

    def swap(self, model) -> None:
        import bitsandbytes as bnb

        def make(old):
            new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                    compute_dtype=old.weight.dtype, compress_statistics=bool(self.cfg.double_quant),
                                    quant_type=self.quant_type, device="meta")
            new.weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, blocksize=BLOCK_4BIT,
                                           compress_statistics=bool(self.cfg.double_quant),
                                           quant_type=self.quant_type, module=new)
            return new

        _swap(model, make)


@QUANTIZERS.register("nf4", summary="4-bit NormalFloat, blocks of 64 (bitsandbytes)")
class NF4(_FourBit):
    """4-bit NormalFloat (bitsandbytes), blocks of 64."""

    paper = "Dettmers et al. 2023 (QLoRA), arXiv 2305.14314"
    quant_type = "nf4"


@QUANTIZERS.register("fp4", summary="4-bit float, blocks of 64, library defaults (bitsandbytes)")
class FP4(_FourBit):
    """4-bit float (bitsandbytes defaults), blocks of 64."""

    paper = "bitsandbytes FP4 (Dettmers et al. 2023)"
    quant_type = "fp4"


@QUANTIZERS.register("int8", summary="LLM.int8, outlier threshold 6 (bitsandbytes)")
class Int8(_Bnb):
    """LLM.int8 (bitsandbytes): per-row int8 weights, outliers in 16 bits."""

    paper = "Dettmers et al. 2022 (LLM.int8()), arXiv 2208.07339"
    bits = 8
    Config = Int8Config

    def hf_config(self, dtype):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(self.cfg.threshold))

    def swap(self, model) -> None:
        import bitsandbytes as bnb

        def make(old):
            new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, bias=old.bias is not None,
                                      has_fp16_weights=False, threshold=float(self.cfg.threshold), device="meta")
            # bitsandbytes (0.50.2) quantizes an Int8Params when it moves off the CPU (or onto it):
            # one built from a weight already on the GPU stays in 16/32 bits, its forward rounds on
            # the fly, and the weights the mechanism columns read are not int8 (tests/test_gpu.py)
            new.weight = bnb.nn.Int8Params(old.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            return new

        _swap(model, make)
