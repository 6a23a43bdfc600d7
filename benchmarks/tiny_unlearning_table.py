"""Unlearn the tiny world with every registered method in both modes, using the task's
defaults, and print a Markdown table of KnowMem_forget, Utility and VerbMem against the target.

    python benchmarks/tiny_unlearning_table.py [--seed N] [--mode full|lora] [--set KEY=VALUE ...] [method ...]

``--set`` overrides the task's defaults for every cell printed (a sweep: rerun with another
value); the bar columns are the test's (tests/test_unlearning_tiny.py).

Early-stopped runs show the step they stopped at and the forget NLL they stopped on.
"""

from __future__ import annotations

import copy
import time

import tasks
from harness.modeling import load_model, load_tokenizer
from harness.plugins import registry
from harness.unlearning import resolve_settings, unlearn
from tasks.data import load_split
from tasks.evaluate import raw_metrics
from tasks.tiny.prepare import prepare


def main(names: list[str], seed: int = 0, modes: tuple[str, ...] = ("full", "lora"),
         overrides: dict | None = None) -> None:
    from harness.threads import pin

    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    task = tasks.get_task("muse_tiny")
    prepare(task)
    tok, target = load_tokenizer(task.tokenizer_path), load_model(task.target_model, device="cpu")
    forget = [r["text"] for r in load_split(task.dataset, "raw", "forget")]
    retain = [r["text"] for r in load_split(task.dataset, "raw", "retain1")]
    ref = raw_metrics(target, tok, task)
    print(f"seed {seed}\n")
    print("| method | mode | KnowMem_f | Utility | VerbMem_f | KnowMem_f <= 50% | Utility >= 70% | steps | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| target | - | {ref['knowmem_f']:.1f} | {ref['knowmem_r']:.1f} | {ref['verbmem_f']:.1f} | | | | |")
    for name in names or registry("methods").names():
        for mode in modes:
            settings = resolve_settings(task, name, mode, {**(overrides or {}), "seed": seed})
            needs = registry("methods").get(name).needs_retain_set
            t0 = time.perf_counter()
            model, log = unlearn(settings, copy.deepcopy(target), tok, forget, retain if needs else None)
            seconds = time.perf_counter() - t0
            model = model.merge_and_unload() if mode == "lora" else model
            m = raw_metrics(model, tok, task)
            ok_f = "yes" if m["knowmem_f"] <= 0.5 * ref["knowmem_f"] else "no"
            ok_u = "yes" if m["knowmem_r"] >= 0.7 * ref["knowmem_r"] else "no"
            stop = log.get("early_stop")
            steps = f"{log['steps']}" + (f" (stopped, NLL {stop['checks'][-1][1]:.2f})" if stop and stop["stopped"] else "")
            print(f"| {name} | {mode} | {m['knowmem_f']:.1f} | {m['knowmem_r']:.1f} | {m['verbmem_f']:.1f} | {ok_f} | {ok_u} | {steps} | {seconds:.0f} |",
                  flush=True)


if __name__ == "__main__":
    import argparse

    from harness.orchestration.commands import parse_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("full", "lora"), help="one mode (default: both)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    main(args.methods, args.seed, (args.mode,) if args.mode else ("full", "lora"), parse_set(args.set))
