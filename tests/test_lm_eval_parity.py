"""The lm-eval tasks in ``tasks/lm_eval`` give the harness's own KnowMem / VerbMem numbers.

Both paths run the tiny target and retrain models on CPU in fp32 with the same batch size
(the task's, 16) and greedy decoding; they must agree per example and, in the mean, to 1e-6.
The retrain model is included because the target saturates VerbMem at 100, which alone
would not show that the reference truncation and the EOS-only stopping match.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LM_EVAL_DIR = Path(__file__).resolve().parents[1] / "tasks" / "lm_eval"
TINY = {"muse_tiny_knowmem_forget": "knowmem_f", "muse_tiny_knowmem_retain": "knowmem_r",
        "muse_tiny_verbmem_forget": "verbmem_f"}


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    # Built-in tasks are left out: indexing them costs ~15 s and they are not needed.
    return TaskManager(include_path=str(LM_EVAL_DIR), include_defaults=False)


def test_tasks_and_groups_are_listed(task_manager):
    names = set(task_manager.all_tasks)
    for corpus in ("muse_tiny", "muse_news", "muse_books"):
        assert corpus in names
        for kind in ("knowmem_forget", "knowmem_retain", "verbmem_forget"):
            assert f"{corpus}_{kind}" in names


def _run_both(tiny_task, task_manager, which: str):
    import lm_eval
    from harness.modeling import load_model, load_tokenizer
    from tasks.evaluate import raw_metrics

    path = tiny_task.model_path(which)
    bs = tiny_task.generation.batch_size
    harness = raw_metrics(load_model(path, device="cpu"), load_tokenizer(tiny_task.tokenizer_path), tiny_task,
                          batch_size=bs, with_logs=True)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={path},dtype=float32,add_bos_token=True", tasks=list(TINY),
        task_manager=task_manager, batch_size=bs, device="cpu", bootstrap_iters=0, log_samples=True,
    )
    return harness, out


@pytest.mark.parametrize("which", ["target", "retrain"])
def test_lm_eval_matches_harness(tiny_task, task_manager, which):
    from tasks import metrics as M
    from tasks.evaluate import load_task_data

    harness, out = _run_both(tiny_task, task_manager, which)
    g, data = tiny_task.generation, load_task_data(tiny_task.dataset)
    icl = {"knowmem_f": data.forget_icl, "knowmem_r": data.retain_icl}
    for name, key in TINY.items():
        kwargs = out["configs"][name]["generation_kwargs"]
        knowmem = key in icl
        assert kwargs["max_gen_toks"] == (g.knowmem_max_new_tokens if knowmem else g.verbmem_max_new_tokens)
        assert kwargs["until"] == (g.knowmem_stop if knowmem else [])
        # Per example first, so that a mismatch names its prompt rather than only a mean.
        rows, samples = harness["logs"][key], sorted(out["samples"][name], key=lambda s: s["doc_id"])
        assert len(samples) == len(rows) == harness["counts"][key]
        for row, sample in zip(rows, samples):
            context, resp = sample["arguments"][0][0], sample["filtered_resps"][0]
            if knowmem:
                assert context == M.knowmem_prompt(icl[key], row["question"])
                resp = M.cut_at_stop(resp, g.knowmem_stop)
            else:
                assert context == row["prompt"] and sample["target"] == row["gt"]
            assert resp == row["prediction"], (name, context)
            assert sample["rougeL_f1"] == pytest.approx(row["rougeL_f1"] * 100, abs=1e-9)
        # Not exact: lm-eval averages x*100, the harness multiplies the mean by 100 (~1e-14 apart).
        value = out["results"][name]["rougeL_f1,none"]
        assert value == pytest.approx(harness[key], abs=1e-6), (name, value, harness[key])
    if which == "target":  # the target knows its world: agreement is not agreement on zero
        assert min(harness[k] for k in TINY.values()) > 50
