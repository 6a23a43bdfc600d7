"""The base-grid confound of ``muse_smol``, measured: SmolLM2's GGUF weights sit on Q4_1's grid
(asymmetric, blocks of 32). A 4-bit quantizer with that grid (RTN, group 32, asymmetric) rounds a
slightly fine-tuned target back onto the base and erases the fine-tune itself. For a target
fine-tuned from the GGUF base as it is (dither 0) and from the dithered base the task uses
(dither 1: one step of uniform noise), this prints, at RTN group 32 and group 64: the share of the
fine-tune's weight update kept (``update kept``, 1 = kept on average, 0 = erased), the share of
its forget-loss drop kept, and the target's KnowMem_forget after quantization.

    harness prepare muse_smol && python benchmarks/smol_grid_confound.py [--epochs N]

The dither-0 target is fine-tuned here with the task's recipe (about 20 minutes on 2 cores,
cached in $HARNESS_CACHE/muse_smol_confound); ``--epochs N`` fine-tunes both targets for N epochs
instead (a shorter fine-tune, the same comparison; the table says how long).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main() -> None:
    from harness.threads import pin

    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="fine-tune both targets this long (default: the world's recipe)")
    parser.add_argument("--groups", default="32,64")
    args = parser.parse_args()

    import tasks
    from harness.model_sources import obtain_base, parse_spec
    from harness.modeling import load_model, load_tokenizer
    from harness.paths import cache_dir
    from harness.inspection import inspect_update
    from harness.quantization import make_quantizer, quantize_model
    from quantizers.mechanism import forget_texts
    from tasks.evaluate import raw_metrics
    from tasks.smol import prepare as smol

    task = tasks.get_task("muse_smol")
    smol.prepare(task)
    spec = parse_spec(task.base_model)
    recipe = dataclasses.replace(smol.RECIPE, epochs=args.epochs or smol.RECIPE.epochs)
    raw = smol.world_splits()["raw"]
    texts = [r["text"] for s in ("forget", "retain1", "retain2") for r in raw[s]]
    pairs = {}
    for dither in (spec.dither, 0.0):
        base = obtain_base(dataclasses.replace(spec, dither=dither)) / "model"
        if dither == spec.dither and recipe == smol.RECIPE:
            target = Path(task.target_model)  # the world's own target
        else:
            target = cache_dir() / "muse_smol_confound" / f"target-dither{dither:g}-e{recipe.epochs}"
            if not (target / "config.json").is_file():
                t0 = time.perf_counter()
                smol._fine_tune(base, texts, target, f"target from the dither-{dither:g} base", recipe)
                print(f"fine-tuned from the dither-{dither:g} base in {time.perf_counter() - t0:.0f}s ({recipe.epochs} epochs)")
        pairs[f"dither {dither:g}" + (" (the task's)" if dither == spec.dither else " (GGUF grid)")] = (base, target)
    tok = load_tokenizer(task.tokenizer_path)
    forget = forget_texts(task)
    rows, grid = [], []
    for label, (base_path, target_path) in pairs.items():
        base, target = load_model(str(base_path), device="cpu"), load_model(str(target_path), device="cpu")
        grid.append({"base": label, **q4_1_roundtrip(base, target)})
        print(json.dumps(grid[-1]))
        bf = raw_metrics(target, tok, task)["knowmem_f"]
        for group in [int(g) for g in args.groups.split(",")]:
            quantizer = make_quantizer("rtn4", {"group_size": group}, task)
            stats = inspect_update(target, base, tok, quantizer, task, None, forget)
            qtarget, _ = quantize_model(quantizer, target, tok, task)
            km = raw_metrics(qtarget, tok, task)["knowmem_f"]
            rows.append({"base": label, "group": group, "update_over_step": stats["update_over_step"],
                         "update_kept": stats["update_kept"], "codes_changed": stats["codes_changed"],
                         "forget_nll_drop": -stats["forget_nll_rise"], "forget_nll_kept": stats["forget_nll_kept"],
                         "knowmem_f_bf": bf, "knowmem_f_q": km, "epochs": recipe.epochs})
            print(json.dumps(rows[-1]))
    print("\nGGUF Q4_1 (gguf's reference quantizer, the base file's own format):")
    print("| base | base weights Q4_1 returns unchanged % | fine-tune kept by Q4_1 (weights) |")
    print("|---|---|---|")
    for g in grid:
        print(f"| {g['base']} | {g['unchanged_pct']:.1f} | {g['update_kept']:.2f} |")
    print("\nRTN (llm-compressor, integer zero point):")
    print("| base | RTN group | fine-tune / step | codes changed % | fine-tune kept (weights) | "
          "forget-loss drop kept | target KnowMem_f fp32 -> 4-bit |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['base']} | {r['group']} | {r['update_over_step']:.3f} | {r['codes_changed']:.1f} | "
              f"{r['update_kept']:.2f} | {r['forget_nll_kept']:.2f} | {r['knowmem_f_bf']:.1f} -> {r['knowmem_f_q']:.1f} |")


if __name__ == "__main__":
    main()


def q4_1_roundtrip(base, target) -> dict:
    """GGUF Q4_1 (asymmetric, blocks of 32, float minimum) through the ``gguf`` package's own
    quantizer, on every linear layer but lm_head: the share of the base's weights it returns
    exactly, and the share of the fine-tune (target - base) the quantized target keeps."""
    import gguf
    import numpy as np

    from harness.tensors import linear_names

    def q(w: np.ndarray) -> np.ndarray:
        t = gguf.GGMLQuantizationType.Q4_1
        return gguf.quants.dequantize(gguf.quants.quantize(w, t), t).reshape(w.shape)

    same = total = 0
    dot = norm = 0.0
    for name in linear_names(base):
        b = base.get_submodule(name).weight.detach().float().numpy()
        t = target.get_submodule(name).weight.detach().float().numpy()
        qb = q(b)
        same += int((qb == b).sum())
        total += b.size
        d, dq = (t - b).astype(np.float64), (q(t) - qb).astype(np.float64)
        dot, norm = dot + float((d * dq).sum()), norm + float((d * d).sum())
    return {"unchanged_pct": 100.0 * same / total, "update_kept": dot / norm}
