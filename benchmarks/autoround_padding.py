"""AutoRound with padded calibration, measured: the task's target cut to its first decoding layers.

AutoRound tunes on batches of calibration sequences. Through llm-compressor 0.14.0.1 and
auto-round 0.15.1, documents of different lengths are right-padded to batch them and the padded
positions enter the tuning loss (``quantizers/autoround.py``, ``calibration_dataset``), so
``autoround4`` packs its calibration into sequences of one length. This script quantizes the
target, cut to ``--layers`` decoding layers (so a 30-layer model takes a minute or two), with
rtn4, gptq4, autoround4 as the harness runs it (packed) and autoround4 given one document per
sequence (padded, as before version 3), and prints for each the mean relative weight error of
the decoding layers and the relative error of the last hidden state on a held-out forget
document, against the unquantized model.

    python benchmarks/autoround_padding.py [--task muse_smol] [--layers 8] [--iters 50]

About 3 minutes for 8 SmolLM2 layers at 50 steps (2 cores); seconds on muse_tiny.
"""

from __future__ import annotations

import argparse
import copy
import time


def cut_to_layers(model, n: int):
    """``model`` keeping its first ``n`` decoding layers (Llama-style ``model.model.layers``)."""
    model.model.layers = model.model.layers[:n]
    model.config.num_hidden_layers = n
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:n]
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="muse_smol")
    parser.add_argument("--layers", type=int, default=8, help="decoding layers kept (from the first)")
    parser.add_argument("--iters", type=int, default=None, help="AutoRound steps per layer (default: the task's)")
    args = parser.parse_args()

    import torch

    import tasks
    from harness.modeling import load_model, load_tokenizer
    from harness.quantization import make_quantizer, quantize_model
    from quantizers.calibration import from_task, settings_for
    from quantizers.llmc import LLMCompressorQuantizer

    task = tasks.get_task(args.task)
    tokenizer = load_tokenizer(task.target_model)
    model = cut_to_layers(load_model(task.target_model), args.layers)
    held_out = from_task(task, settings_for(task, {"source": "raw/forget", "samples": 1})).texts[0]
    ids = tokenizer(held_out, return_tensors="pt", truncation=True, max_length=256).input_ids
    calibration = from_task(task)
    lengths = sorted(len(x) for x in tokenizer(calibration.texts, truncation=True,
                                               max_length=calibration.max_length)["input_ids"])
    print(f"{args.task}, first {args.layers} decoding layers; calibration: {len(lengths)} documents of "
          f"{lengths[0]}-{lengths[-1]} tokens; held-out forget document: {ids.shape[1]} tokens")

    def last_hidden(m):
        with torch.no_grad():
            return m(ids, output_hidden_states=True).hidden_states[-1]

    reference = last_hidden(model)
    runs = [("rtn4", "rtn4", False), ("gptq4", "gptq4", False),
            ("autoround4 (packed)", "autoround4", False), ("autoround4 (padded)", "autoround4", True)]
    print("| quantizer | seconds | weight rel. error | output rel. error |\n|---|---|---|---|")
    for label, name, padded in runs:
        settings = {"iters": args.iters} if name == "autoround4" and args.iters else {}
        quantizer = make_quantizer(name, settings, task)
        if padded:  # one document per sequence, as every other llm-compressor quantizer gets it
            quantizer.calibration_dataset = LLMCompressorQuantizer.calibration_dataset.__get__(quantizer)
        start = time.perf_counter()
        quantized, _ = quantize_model(quantizer, copy.deepcopy(model), tokenizer, task)
        seconds = time.perf_counter() - start
        errors = [((q - w).norm() / w.norm()).item()
                  for (key, w), (_, q) in zip(model.named_parameters(), quantized.named_parameters())
                  if w.dim() == 2 and ".layers." in key]
        out = last_hidden(quantized)
        print(f"| {label} | {seconds:.0f} | {sum(errors) / len(errors):.3f} | "
              f"{((out - reference).norm() / reference.norm()).item():.3f} |", flush=True)


if __name__ == "__main__":
    main()
