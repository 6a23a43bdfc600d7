"""Quantize the tiny world's target (and, with --retrain, its retrain model) with every
registered quantizer and print a Markdown table of the four MUSE metrics, the weight error
and the time each quantization took (calibrated ones on the task's retain split).

    python benchmarks/tiny_quantizer_table.py [--retrain] [quantizer ...]
"""

from __future__ import annotations

import argparse
import sys

import tasks
from harness.modeling import load_model, load_tokenizer
from harness.plugins import registry
from harness.quantization import make_quantizer, quantize_model
from quantizers.weights import effective_weights
from tasks.evaluate import finish, raw_metrics
from tasks.reference import task_references
from tasks.tiny.prepare import prepare


def relative_weight_error(model, qmodel) -> float:
    a, b = effective_weights(model), effective_weights(qmodel)
    num = sum(float(((b[n] - a[n]) ** 2).sum()) for n in a)
    return (num / sum(float((a[n] ** 2).sum()) for n in a)) ** 0.5


def main(args: list[str]) -> None:
    from harness.threads import pin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="the retrain model instead of the target")
    parser.add_argument("quantizers", nargs="*", help="registered quantizer names (default: all)")
    opts = parser.parse_args(args)
    known = registry("quantizers").names()
    unknown = [n for n in opts.quantizers if n not in known]
    if unknown:
        parser.error(f"unknown quantizer(s) {', '.join(unknown)}; `harness ls quantizers` lists them")
    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    which = "retrain" if opts.retrain else "target"
    names = opts.quantizers or known
    task = tasks.get_task("muse_tiny")
    prepare(task)
    refs = task_references(task)
    tok = load_tokenizer(task.tokenizer_path)
    model = load_model(task.model_path(which), device="cpu")
    print(f"{which} of muse_tiny (fp32 on CPU: the unquantized row)\n")
    print("| quantizer | VerbMem_f | KnowMem_f | Utility | PrivLeak | weight error | quantize s | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [("none (fp32)", model, None)] + [(n, None, n) for n in names]
    for label, qmodel, name in rows:
        seconds = "-"
        if name is not None:
            qmodel, record = quantize_model(make_quantizer(name, {}, task), model, tok, task)  # the task's settings
            seconds = f"{record['seconds']:.2f}"
        raw = raw_metrics(qmodel, tok, task)
        m = finish(raw, refs["auc_retrain"], refs["knowmem_f_target"])
        err = relative_weight_error(model, qmodel)
        print(f"| {label} | {m['verbmem_f']:.1f} | {m['knowmem_f']:.1f} | {m['knowmem_r']:.1f} | "
              f"{m['privleak']:.1f} | {err:.4f} | {seconds} | {sum(raw['seconds'].values()):.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
