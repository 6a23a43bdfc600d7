"""What quantization does to an unlearning update, measured on the weights (the mechanism
behind a quantization gap). T is the target, U the unlearned model, Q(.) a quantizer's
deployed (dequantized) weights, over every quantized linear layer (all but ``lm_head``):

    values_changed %     share of weights whose deployed value differs at all: Q(U) != Q(T)
                         (a moved group scale or zero point shifts every value of its group)
    step                 sqrt(12) * RMS(Q(T) - T), per layer: the step of a uniform grid with
                         the same rounding error (exact for round-to-nearest on a uniform grid;
                         for NF4, GPTQ and AWQ the comparable scale)
    codes_changed %      share of weights whose deployed value moved by at least half a step:
                         the update crossed a rounding boundary (a different code), format-agnostic
    update_over_step     RMS(U - T) / step: update size in quantization steps
    update_kept          <Q(U) - Q(T), U - T> / |U - T|^2: the share of the update that the
                         deployed weights still carry (1: kept on average; 0: erased)
    unquantized_share %  |update outside the quantized layers|^2 / |whole update|^2 (embeddings,
                         norms, lm_head: what quantization never touches)

and on the function, for every format (AWQ included, whose rescaled channels make its weights
incomparable one by one: the weight statistics are then left out), on a sample of forget text:

    forget_nll_rise      NLL(U) - NLL(T): how much unlearning raised the forget loss (nats/token)
    forget_nll_kept      (NLL(Q(U)) - NLL(Q(T))) / (NLL(U) - NLL(T)): the share of that rise the
                         quantized model keeps (1: all of it; 0: quantization undid it)

Round-to-nearest moves a weight across a boundary with probability ~update/step, so small
updates change few codes yet are kept on average (update_kept ~ 1); reversion needs
update_kept well below 1, which these figures show per layer (``harness inspect``).
Hand-written: no quantization library reports these statistics.
"""

from __future__ import annotations

import math
from typing import Any

from harness.generation import token_logprobs
from quantizers.weights import effective_weights
from tasks.data import load_split

FORGET_SAMPLE = 32  # forget documents the function-level figures are measured on
# the per-weight figures, left out for a quantizer that rescales channels (its weights are in
# another parametrisation than the model's)
WEIGHT_FIGURES = ("values_changed", "codes_changed", "step", "update_over_step", "update_kept")


def forget_texts(task) -> list[str]:
    """The task's forget sample for the function-level figures: its first FORGET_SAMPLE documents."""
    return [r["text"] for r in load_split(task.dataset, "raw", "forget")][:FORGET_SAMPLE]


def forget_nll(model, tokenizer, texts, max_length: int, batch_size: int) -> float:
    """Mean per-token NLL of ``texts`` under ``model`` (the sample the function-level figures use)."""
    lps = [lp for row in token_logprobs(model, tokenizer, texts, batch_size, max_length) for lp in row]
    return -sum(lps) / max(len(lps), 1)


def function_kept(nll_t: float, nll_u: float, nll_qt: float, nll_qu: float) -> dict[str, Any]:
    rise = nll_u - nll_t
    return {"forget_nll_rise": rise, "forget_nll_kept": (nll_qu - nll_qt) / rise if abs(rise) > 1e-9 else None}


def _named_params(model) -> dict[str, Any]:
    return {name: p.detach() for name, p in model.state_dict().items()}


def compare(target, unlearned, q_target: dict, q_unlearned: dict, per_layer: bool = False) -> dict[str, Any]:
    """Mechanism statistics of ``unlearned`` against ``target``; ``q_*`` are the deployed
    weights (``quantizers.weights.effective_weights``) of both models under one quantizer."""
    t_w, u_w = effective_weights(target), effective_weights(unlearned)
    totals = {"numel": 0, "moved": 0, "changed": 0, "upd2": 0.0, "err2": 0.0, "dot": 0.0}
    layers = []
    for name, t in t_w.items():
        u, qt, qu = u_w[name], q_target[name].float(), q_unlearned[name].float()
        d, dq = u - t, qu - qt
        err2 = float(((qt - t).double() ** 2).sum())
        half_step = 0.5 * math.sqrt(12 * err2 / t.numel())
        stats = {"numel": t.numel(), "moved": int((dq != 0).sum()), "changed": int((dq.abs() >= half_step).sum()),
                 "upd2": float((d.double() ** 2).sum()), "err2": err2, "dot": float((dq.double() * d.double()).sum())}
        for k in totals:
            totals[k] += stats[k]
        if per_layer:
            layers.append({"layer": name, **_summary(stats)})
    quantized = set(f"{n}.weight" for n in t_w)
    t_params, u_params = _named_params(target), _named_params(unlearned)
    outside = sum(float(((u_params[k].float() - v.float()).double() ** 2).sum())
                  for k, v in t_params.items() if k not in quantized and k in u_params)
    out = _summary(totals)
    whole = totals["upd2"] + outside
    out["unquantized_share"] = round(100 * outside / whole, 3) if whole > 0 else None
    if per_layer:
        out["layers"] = layers
    return out


def _summary(s: dict[str, float]) -> dict[str, Any]:
    n = max(s["numel"], 1)
    step = math.sqrt(12 * s["err2"] / n)
    update_rms = math.sqrt(s["upd2"] / n)
    return {"numel": s["numel"], "values_changed": round(100 * s["moved"] / n, 4),
            "codes_changed": round(100 * s["changed"] / n, 4),
            "update_rms": update_rms, "step": step,
            "update_over_step": (update_rms / step) if step > 0 else None,
            "update_kept": (s["dot"] / s["upd2"]) if s["upd2"] > 0 else None}
