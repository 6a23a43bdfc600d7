"""How much of a layer MANSU's magnitude floor may raise before it breaks the model, measured.

MANSU (``methods/mansu.py``) trains NPO+GDR, then raises the ``floor_fraction`` percent of each
layer's weights that moved most (per quantization bin) to at least ``floor`` bins. Its training
part is exactly ``npo_gdr``'s (same seed, same data), so this applies the floor to an ``npo_gdr``
model a run already unlearned and evaluates each fraction unquantized (the weights as computed,
fp32 on CPU: not the harness's bf16 row, which rounds them to bfloat16) and after rtn4: KnowMem
on forget and on retain (Utility), and the weights raised.

With ``--mode lora`` the floor is applied to the merged LoRA model, as MANSU's LoRA mode does:
the run's npo_gdr LoRA model or, if it has none, the target with a mansu LoRA unlearning's saved
adapter merged in (the adapter holds the training alone; the floor went into the base weight).

    python benchmarks/mansu_floor_sweep.py --run runs/robust_methods_smol [--task muse_smol] [--mode full] \
        [--fractions 0,0.01,0.03,0.1,0.3] [--floor 1] [--quant rtn4] [--output runs/mansu_floor_sweep_smol.json]
    python benchmarks/mansu_floor_sweep.py --run runs/robust_methods_smol_lora --mode lora \
        --output runs/mansu_floor_sweep_smol_lora.json

About 2 minutes per fraction on SmolLM2-135M (2 cores); seconds on the tiny world.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path


def unlearned_model(run: Path, task: str, mode: str) -> Path:
    """The npo_gdr model of ``run`` (``.../unlearned/model``) or, in LoRA mode, a mansu LoRA
    unlearning's adapter (``.../unlearned/adapter``: npo_gdr's training without the floor)."""
    found = sorted(run.glob(f"stages/unlearn-{task}-npo_gdr-{mode}-*/unlearned/model"))
    if not found and mode == "lora":
        found = sorted(run.glob(f"stages/unlearn-{task}-mansu-lora-*/unlearned/adapter"))
    if not found:
        wanted, method = ("npo_gdr or mansu", "mansu") if mode == "lora" else ("npo_gdr", "npo_gdr")
        raise SystemExit(f"error: no {wanted} {mode} unlearning of {task} in {run}/stages; run one first "
                         f"(harness run --tasks {task} --methods {method} --modes {mode} --out {run})")
    return found[0]


def load_unlearned(path: Path, target_path: str):
    """The model at ``path``, or the target with the LoRA adapter at ``path`` merged in."""
    from harness.modeling import load_model

    if path.name != "adapter":
        return load_model(str(path), device="cpu")
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model(target_path, device="cpu"), str(path)).merge_and_unload()


def main() -> None:
    from harness.threads import pin

    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder holding an npo_gdr unlearning")
    parser.add_argument("--task", default="muse_smol")
    parser.add_argument("--mode", choices=("full", "lora"), default="full", help="which npo_gdr unlearning to floor")
    parser.add_argument("--fractions", default="0,0.01,0.03,0.1,0.3", help="percent of each layer floored (0: none)")
    parser.add_argument("--floor", type=float, default=1.0, help="bins a floored weight moves at least")
    parser.add_argument("--quant", default="rtn4")
    parser.add_argument("--output", type=Path, help="also write the rows and their provenance as JSON "
                                                    "(benchmarks/robust_methods_docs.py renders it)")
    args = parser.parse_args()
    try:
        fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        raise SystemExit(f"error: --fractions must be comma-separated numbers, got {args.fractions!r}") from None
    if any(not 0 <= f <= 100 for f in fractions):
        raise SystemExit(f"error: --fractions must be percents from 0 to 100, got {args.fractions}")

    import tasks
    from harness.modeling import load_model, load_tokenizer
    from harness.plugins import registry
    from harness.provenance import provenance
    from harness.quantization import make_quantizer, quantize_model
    from harness.store import write_json
    from tasks.evaluate import raw_metrics

    task = tasks.get_task(args.task)
    path = unlearned_model(args.run, args.task, args.mode)
    tok = load_tokenizer(task.tokenizer_path)
    target, unlearned = load_model(task.target_model, device="cpu"), load_unlearned(path, task.target_model)
    quantizer = make_quantizer(args.quant, {}, task)
    group = getattr(quantizer.cfg, "group_size", None)  # the floor's bin is the deployed grid's
    if not isinstance(group, int):
        raise SystemExit(f"error: --quant {args.quant} has no integer group_size; pass a round-to-nearest grid (rtn3, rtn4)")
    rows = []
    for fraction in fractions:
        model = copy.deepcopy(unlearned)
        floored = {"floored_weights": 0, "floored_percent": 0.0}
        if fraction:
            method = registry("methods").get("mansu")(floor=args.floor, floor_fraction=fraction, group_size=group)
            method.configure(target)
            floored = method.finish(model)
        row = {"floor_fraction": fraction, **floored}
        for label, evaluated in (("fp32", model), (args.quant, quantize_model(quantizer, model, tok, task)[0])):
            raw = raw_metrics(evaluated, tok, task)
            row[label] = {"knowmem_f": raw["knowmem_f"], "knowmem_r": raw["knowmem_r"], "verbmem_f": raw["verbmem_f"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.output:
        write_json(args.output, {"task": args.task, "mode": args.mode, "unlearned": str(path), "floor": args.floor,
                                 "quant": args.quant,
                                 "group_size": group, "rows": rows, "provenance": provenance(seed=None)})
    print(f"\n{args.task}: npo_gdr {args.mode} ({path.parent.parent.name}) with MANSU's floor of {args.floor:g} rtn bin(s), group {group}")
    print(f"| floor_fraction % | weights raised | KnowMem_f fp32 -> {args.quant} | Utility (KnowMem_r) fp32 -> {args.quant} |")
    print("|---|---|---|---|")
    for r in rows:
        q = r[args.quant]
        print(f"| {r['floor_fraction']:g} | {r['floored_weights']:,} | {r['fp32']['knowmem_f']:.1f} -> {q['knowmem_f']:.1f} | "
              f"{r['fp32']['knowmem_r']:.1f} -> {q['knowmem_r']:.1f} |")


if __name__ == "__main__":
    main()
