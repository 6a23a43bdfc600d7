"""Evaluation speed on a 135M model: one full MUSE evaluation of ``muse_smol``'s target, the
harness's way (length-sorted batches, the shared few-shot prefix computed once, KnowMem
generation stopped at MUSE's stop strings) against a one-prompt-at-a-time ``generate`` loop that
runs every prompt whole and every answer to its token limit. Prints both times, the ratio and
whether every metric and every generated text is identical.

    harness prepare muse_smol && python benchmarks/smol_eval_speed.py [--model target] [--task muse_smol]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from harness.threads import pin

    pin()  # as every harness process: the same floats whatever ran before (harness/threads.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="muse_smol")
    parser.add_argument("--model", default="target", help="target, retrain or a model folder")
    parser.add_argument("--skip-loop", action="store_true", help="time the harness's evaluation only")
    args = parser.parse_args()

    import torch

    import tasks
    from harness.modeling import load_model, load_tokenizer
    from tasks.evaluate import load_task_data, raw_metrics

    task = tasks.get_task(args.task)
    load_task_data(task.dataset)
    tok = load_tokenizer(task.tokenizer_path)
    model = load_model(task.model_path(args.model), device="cpu")
    print(f"{task.task} {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} threads")

    def timed(**kwargs):
        t0 = time.perf_counter()
        out = raw_metrics(model, tok, task, with_logs=True, **kwargs)
        return out, time.perf_counter() - t0

    fast, t_fast = timed()
    print(f"harness (batch {task.generation.batch_size}, stop strings): {t_fast:.1f}s  "
          f"per metric: {fast['seconds']}")
    if args.skip_loop:
        return
    slow, t_slow = timed(batch_size=1, early_stop=False, share_prefix=False)
    print(f"one prompt at a time, whole, to the token limit: {t_slow:.1f}s  per metric: {slow['seconds']}")
    names = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc")
    same = all(fast[k] == slow[k] for k in names)
    texts = sum(a["prediction"] != b["prediction"] for k in ("verbmem_f", "knowmem_f", "knowmem_r")
                for a, b in zip(fast["logs"][k], slow["logs"][k]))
    print("metrics: " + ", ".join(f"{k} {fast[k]:.3f} vs {slow[k]:.3f}" for k in names))
    print(f"speed-up {t_slow / t_fast:.1f}x; metrics identical: {same}; generations that differ: {texts}")


if __name__ == "__main__":
    main()
