"""Outlier weight channels for a Llama model, without changing what it computes.

Pretrained LLMs have heavy-tailed weights: a few input channels hold weights many times larger
than the rest, and a 4-bit group's step is set by its largest weight. The tiny world's target
has none, so its 4-bit grid is fine compared with its weights. This transform gives it such
channels exactly, by moving a scale between a layer and what feeds it (a function-preserving
reparametrisation, up to float rounding):

* hidden channel j: RMSNorm weight[j] / s, the q/k/v (or gate/up) columns j * s;
* intermediate channel i: up_proj row i / s, down_proj column i * s (SiLU(gate) * up is
  linear in up);
* attention value channel k: v_proj row k / s, o_proj column k * s (attention is linear in V).

    python -m tasks.tiny.outliers --model TARGET_DIR --scale 8 --channels 2 --out DIR

Used by the reversion study (``experiments/reversion_study_outliers.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from harness.modeling import load_model, load_tokenizer
from harness.store import check_replaceable, folder_aside, write_json


def add_outlier_channels(model, scale: float, channels: int, seed: int = 0) -> dict[str, Any]:
    """Scale ``channels`` input channels of every linear layer by ``scale`` (in place);
    returns which channels, per layer."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda n: torch.randperm(n, generator=g)[:channels]  # noqa: E731
    record = []
    with torch.no_grad():
        for index, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            hidden_a, hidden_m = pick(attn.q_proj.in_features), pick(mlp.gate_proj.in_features)
            inter, value = pick(mlp.down_proj.in_features), pick(attn.o_proj.in_features)
            layer.input_layernorm.weight[hidden_a] /= scale
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[:, hidden_a] *= scale
            layer.post_attention_layernorm.weight[hidden_m] /= scale
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[:, hidden_m] *= scale
            mlp.up_proj.weight[inter, :] /= scale
            mlp.down_proj.weight[:, inter] *= scale
            attn.v_proj.weight[value, :] /= scale
            attn.o_proj.weight[:, value] *= scale
            record.append({"layer": index, "hidden_attn": hidden_a.tolist(), "hidden_mlp": hidden_m.tolist(),
                           "intermediate": inter.tolist(), "value": value.tolist()})
    return {"scale": scale, "channels": channels, "seed": seed, "layers": record}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Give a Llama model outlier weight channels, function unchanged.")
    parser.add_argument("--model", required=True, help="the model folder to transform")
    parser.add_argument("--scale", type=float, default=8.0)
    parser.add_argument("--channels", type=int, default=2, help="channels per layer input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)  # everything checked before the model loads
    if args.scale <= 0 or args.channels < 1:
        raise HarnessError(f"--scale must be > 0 and --channels >= 1, got {args.scale} and {args.channels}")
    if not (Path(args.model) / "config.json").is_file():
        raise HarnessError(f"--model {args.model} is not a model folder (no config.json)")
    check_replaceable(out, "outliers.json", "tasks/tiny/outliers.py")
    model = load_model(args.model, device="cpu")
    record = add_outlier_channels(model, args.scale, args.channels, args.seed)
    with folder_aside(out) as tmp:  # the harness's one folder write: whole or not at all
        model.save_pretrained(tmp)
        load_tokenizer(args.model).save_pretrained(tmp)
        write_json(tmp / "outliers.json", {"source": args.model, **record})
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except HarnessError as exc:  # a one-line error, as the harness's own commands give
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
