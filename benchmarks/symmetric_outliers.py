"""Symmetric 4-bit round-to-nearest (zero exactly representable, as AutoGPTQ's default) on the
plain tiny target and on its outlier-channel version (tasks/tiny/outliers.py, x16): NPO+GDR full
fine-tuning at three learning rates, KnowMem and the mechanism figures before and after.

    python benchmarks/symmetric_outliers.py      # ~3 min on 2 CPU cores
"""

from __future__ import annotations

import copy

import tasks
from harness.modeling import load_model, load_tokenizer
from harness.quantization import make_quantizer, quantize_model
from harness.unlearning import resolve_settings, unlearn
from quantizers.mechanism import compare, forget_nll, forget_texts, function_kept
from quantizers.weights import effective_weights
from tasks.data import load_split
from tasks.evaluate import _knowmem, load_task_data
from tasks.tiny.outliers import add_outlier_channels


def main() -> None:
    from harness.threads import pin

    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    task = tasks.get_task("muse_tiny")
    tasks.prepare_task(task)
    tok, base = load_tokenizer(task.tokenizer_path), load_model(task.target_model, device="cpu")
    forget = [r["text"] for r in load_split(task.dataset, "raw", "forget")]
    retain = [r["text"] for r in load_split(task.dataset, "raw", "retain1")]
    data = load_task_data(task.dataset)

    def knowmem(model) -> tuple[float, float]:
        return (_knowmem(model, tok, task, data.forget_qa, data.forget_icl, 64)[0],
                _knowmem(model, tok, task, data.retain_qa, data.retain_icl, 64)[0])

    quantizer = make_quantizer("rtn4", {"symmetric": True})
    print("| target | lr | KnowMem_f / Utility @fp32 | @symmetric rtn4 | update / step | codes changed % "
          "| update kept | forget NLL rise kept |")
    print("|---|---|---|---|---|---|---|---|")
    for scale in (1, 16):
        target = copy.deepcopy(base)
        if scale != 1:
            add_outlier_channels(target, scale, 2)
        q_target, _ = quantize_model(quantizer, target, tok)
        name = "plain" if scale == 1 else f"outliers x{scale}"
        print(f"| {name} | (target) | {'%.1f / %.1f' % knowmem(target)} | {'%.1f / %.1f' % knowmem(q_target)} | | | | |")
        for lr in (1e-4, 3e-4, 1e-3):
            settings = resolve_settings(task, "npo_gdr", "full", {"lr": lr})
            model, _ = unlearn(settings, copy.deepcopy(target), tok, forget, retain)
            model.eval()
            q_model, _ = quantize_model(quantizer, model, tok)
            m = compare(target, model, effective_weights(q_target), effective_weights(q_model))
            g = task.generation
            nll = [forget_nll(x, tok, forget_texts(task), g.max_length, g.batch_size) for x in (target, model, q_target, q_model)]
            kept = function_kept(*nll)["forget_nll_kept"]
            print(f"| {name} | {lr:g} | {'%.1f / %.1f' % knowmem(model)} | {'%.1f / %.1f' % knowmem(q_model)} "
                  f"| {m['update_over_step']:.3f} | {m['codes_changed']:.1f} | {m['update_kept']:.2f} | {kept:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
