"""The weights a (quantized) model actually computes with, whatever the format: plain linear
layers (fake-quantized or not) and bitsandbytes' 4-bit and 8-bit layers, dequantized. torch and
bitsandbytes are imported inside ``effective_weight``: ``harness ls`` imports this module (through
``harness.quantization``)."""

from __future__ import annotations

import copy

from harness.tensors import linear_names


def effective_weight(module):
    """The dequantized weight matrix (out x in, float32) of one linear layer."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:  # the format cannot occur without the library
        bnb = None
    w = module.weight
    if bnb is not None and isinstance(module, bnb.nn.Linear4bit):
        data, state = w.data, w.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for its kernel at the
            # first inference forward (absmax transposed to blocks x rows, in bf16). Unpack a
            # copy with the library's inverse; that inverse (0.50.2) leaves a non-nested absmax
            # transposed, so it is put back in row-major block order here (kept in bf16: that
            # is what the kernel computes with).
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            data, state = _convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
            if state.absmax.dim() == 2:
                state.absmax = state.absmax.T.reshape(-1).float()
        return bnb.functional.dequantize_4bit(data, state).float()
    if bnb is not None and isinstance(module, bnb.nn.Linear8bitLt):
        # the row scales move from the weight to the layer's state on the first forward
        scales = w.SCB if getattr(w, "SCB", None) is not None else module.state.SCB
        return bnb.functional.int8_vectorwise_dequant(w.data, scales).float()
    if isinstance(module, torch.nn.Linear):
        return w.data.float()
    raise TypeError(f"{type(module).__name__} is not a linear layer")


def effective_weights(model, copy: bool = False) -> dict:
    """``{module name: dequantized weight}`` for every linear layer but ``lm_head``; with
    ``copy``, tensors that outlive the model (a plain layer's weight is otherwise shared)."""
    weights = {name: effective_weight(model.get_submodule(name)) for name in linear_names(model)}
    return {name: w.detach().clone() for name, w in weights.items()} if copy else weights
