"""AutoRound (Cheng et al. 2024, arXiv 2309.05516): ``autoround4``.

Tunes each weight's rounding (up or down) and each group's clipping range with signed gradient
descent on the block-wise output error over calibration text, decoding layer by decoding
layer, then rounds with the tuned values. Same integer scheme as RTN and GPTQ (group 128,
asymmetric), so the three differ only in how they choose the integers. Applied by
llm-compressor's ``AutoRoundModifier`` (auto-round does the tuning), whose checkpoints vLLM
serves. Its calibration documents are packed into sequences of one length
(``calibration_dataset`` says why). ``torch.compile`` of the tuning loop is off: it costs more
than it saves on a CPU and on the small models the tests use. llm-compressor is imported in
``modifier()``, after auto-round's log level is set, so that building the quantizer loads no
library.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass

from harness.config import require_positive
from harness.plugins import QUANTIZERS
from quantizers.llmc import IntWeightConfig, LLMCompressorQuantizer, int_weight_scheme


@dataclass
class AutoRoundConfig(IntWeightConfig):
    iters: int = 200  # tuning steps per decoding layer (auto-round's default)
    batch_size: int = 8  # calibration sequences per tuning step

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "iters", "batch_size")


@QUANTIZERS.register("autoround4", summary="4-bit AutoRound, group 128, asym, calibrated (llm-compressor)")
class AutoRound4(LLMCompressorQuantizer):
    """4-bit AutoRound, group 128, asymmetric, calibrated on the task's retain text."""

    family = "autoround"
    paper = "Cheng et al. 2024, arXiv 2309.05516"
    bits = 4
    needs_calibration = True
    # 2: AutoRound's own zero points (after_oneshot); version 1 clipped asymmetric groups.
    # 3: calibration packed into equal-length sequences (calibration_dataset)
    version = 3
    Config = AutoRoundConfig

    def modifier(self):
        if not sys.stderr.isatty():  # its INFO lines per block (ANSI-coloured) would fill plain logs
            os.environ.setdefault("AR_LOG_LEVEL", "WARNING")  # read when auto_round is first imported
        from auto_round.utils.device_manager import get_ar_device
        from llmcompressor.modifiers.autoround import AutoRoundModifier

        # auto-round tunes in bf16 on a CPU with AVX512-BF16, and llm-compressor then feeds the
        # bf16 layer fp32 inputs: "expected m1 and m2 to have the same dtype" (auto-round through
        # llm-compressor 0.14.0.1). Tune in fp32, as auto-round does on every other CPU, so the
        # result does not depend on the processor either.
        get_ar_device("cpu")._bf16_supported = False

        if not sys.stderr.isatty():
            importlib.import_module("auto_round.logger")  # creates the logger, at the environment's level
            logging.getLogger("autoround").setLevel(logging.WARNING)

        return AutoRoundModifier(config_groups=int_weight_scheme(self.bits, self.cfg), ignore=["lm_head"],
                                 iters=int(self.cfg.iters), batch_size=int(self.cfg.batch_size),
                                 enable_torch_compile=False)

    def calibration_dataset(self, tokenizer, calibration):
        """The calibration documents packed into sequences of one length (``packed``).
        AutoRound tunes on batches of sequences; llm-compressor 0.14.0.1 right-pads documents of
        different lengths with zeros to batch them and hands AutoRound a mask of the padding,
        which auto-round 0.15.1 no longer reads (its loss mask comes from token ids that
        ``quantize_block`` never receives). The padded positions then enter the tuning loss,
        with zeros as the full-precision block's input and the previous tuned block's output as
        the quantized block's: on SmolLM2-135M (documents of 111-253 tokens) the loss from the
        third layer on was that mismatch (5330 at the start of layer 3's tuning; 0.26 packed) and
        the target fell to KnowMem_forget 12.7 (rtn4 31.1). Sequences of one length need no
        padding. benchmarks/autoround_padding.py measures it."""
        from quantizers.calibration import packed

        return packed(tokenizer, calibration.texts, calibration.max_length)

    def describe(self, calibration=None):
        record = super().describe(calibration)
        if record.get("calibration"):
            record["calibration"] = {**record["calibration"], "layout": "packed"}
        return record

    def after_oneshot(self, model) -> None:
        """Give each layer AutoRound's own zero points. llm-compressor 0.14.0.1 hands AutoRound's
        tuned scales to the layers but not its zero points (``_postprocess_qparams`` maps
        ``scale`` only), so an asymmetric layer keeps the placeholder zero point 0 and every
        group not centred on zero is clipped when it is dequantized or saved: on SmolLM2-135M
        the target fell from 75.2 KnowMem_forget to 2.5. auto-round stores the zero point
        unsigned (0 .. 2^bits - 1, left on the layer as ``zp``), compressed-tensors signed
        (-2^(bits-1) .. 2^(bits-1) - 1): the same grid, shifted by 2^(bits-1)."""
        import torch

        with torch.no_grad():
            for module in model.modules():
                zp = getattr(module, "zp", None)
                target = getattr(module, "weight_zero_point", None)
                if isinstance(zp, torch.Tensor) and target is not None:
                    shifted = zp.reshape(target.shape).to(torch.float32) - 2 ** (self.bits - 1)
                    target.copy_(shifted.round().to(target.dtype))
