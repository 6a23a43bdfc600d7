"""The CUDA path (marked ``gpu``, skipped without one): where a GPU must give the CPU's answer
it does, and where it computes differently by design (bf16 weights, mixed-precision training)
the whole pipeline still runs and forgets.

* Evaluation of the tiny target in fp32 on CUDA scores what it scores on the CPU: greedy texts
  (batched, left-padded, from the shared few-shot prefix's cache) and PrivLeak's log-probs. Only
  the order of floating-point sums differs, so a greedy token may flip where two logits tie:
  each generation metric may differ by one item's worth (one answer, one VerbMem prompt), the
  AUC by 0.01, and the test prints the differences.
* bitsandbytes' CUDA kernels round the tiny target's weights to the values its CPU backend
  does (nf4, fp4; int8 up to a rounding tie, one code of a few weights): the format a user
  deploys on a GPU is the one the CPU tests check. (This test found that an int8 layer built
  from a weight already on the GPU was never quantized: quantizers/bnb.py.)
* A small grid (NPO+GDR, full and LoRA; bf16, nf4, int8, gguf_q4_0) runs end to end on CUDA
  with the harness's CUDA defaults; every stage records the GPU in its provenance, and the
  unlearned models forget (KnowMem_forget well under the target's).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

AUC_TOLERANCE = 0.01
GRID = """\
methods: [npo_gdr]
modes: [full, lora]
quant: [bf16, nf4, int8, gguf_q4_0]
"""


def test_evaluation_on_cuda_in_fp32_matches_the_cpu(tiny_task, tiny_target):
    from harness.generation import greedy_generate
    from harness.modeling import load_model
    from tasks import metrics as M
    from tasks.evaluate import load_task_data, raw_metrics

    cpu_model, tok = tiny_target
    gpu_model = load_model(tiny_task.target_model, device="cuda", dtype=torch.float32)
    cpu, gpu = raw_metrics(cpu_model, tok, tiny_task), raw_metrics(gpu_model, tok, tiny_task)
    deltas = {k: gpu[k] - cpu[k] for k in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc")}
    print("cuda fp32 - cpu:", {k: round(v, 4) for k, v in deltas.items()}, "seconds", cpu["seconds"], gpu["seconds"])
    for k in ("verbmem_f", "knowmem_f", "knowmem_r"):  # ROUGE-L points: one item of the split at most
        assert abs(deltas[k]) <= 100 / cpu["counts"][k] + 1e-6, f"{k} differs by {deltas[k]:.2f} on CUDA"
    assert abs(deltas["privleak_auc"]) <= AUC_TOLERANCE
    data = load_task_data(tiny_task.dataset)  # the shared-prefix cache on CUDA: same text as without it
    prompts = [M.knowmem_prompt(data.forget_icl, q) for q, _ in data.forget_qa]
    g = tiny_task.generation
    runs = [greedy_generate(gpu_model, tok, prompts, g.knowmem_max_new_tokens, 16, stop=g.knowmem_stop,
                            share_prefix=share) for share in (True, False)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["nf4", "fp4", "int8"])
def test_bitsandbytes_rounds_on_cuda_as_on_the_cpu(name, tiny_target):
    import copy

    from harness.plugins import registry
    from quantizers.weights import effective_weights

    model, tok = tiny_target
    q = registry("quantizers").get(name)()
    on_cpu = effective_weights(q.quantize(model, tok, None))
    on_gpu = effective_weights(q.quantize(copy.deepcopy(model).to("cuda"), tok, None))
    on_gpu = {n: w.cpu() for n, w in on_gpu.items()}
    differ = sum(int((on_cpu[n] != on_gpu[n]).sum()) for n in on_cpu)
    total = sum(w.numel() for w in on_cpu.values())
    steps = max(float(((on_cpu[n] - on_gpu[n]).abs() / (on_cpu[n].abs().amax(1, keepdim=True) / 127)).max())
                for n in on_cpu)
    print(f"{name}: {differ} of {total} weights differ between the CUDA and CPU kernels, by at most {steps:.3f} "
          f"int8 steps of their row")
    if name == "int8":  # the kernels may round a tie the other way: one code, for few weights
        assert differ <= 1e-4 * total and steps <= 1.001
    else:
        assert differ == 0


def test_a_small_grid_runs_and_forgets_on_cuda(tiny_task, tmp_path):
    from harness.orchestration.cli import main
    from harness.orchestration.results import read_results

    (tmp_path / "grid.yaml").write_text(GRID)
    assert main(["run", "--config", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "run")]) == 0
    rows = read_results(tmp_path / "run")
    assert rows and all(r["status"] == "done" for r in rows)
    assert all(r["provenance"]["device"].startswith("cuda:") for r in rows)
    assert all(r["provenance"]["dtype"] == "torch.bfloat16" for r in rows)
    knowmem = {(r["method"], r["mode"], r["quant"]): r["metrics"]["knowmem_f"] for r in rows}
    for key, value in sorted(knowmem.items()):
        print(key, round(value, 1), "utility", round(next(r for r in rows if (r["method"], r["mode"], r["quant"]) == key)
                                                      ["metrics"]["knowmem_r"], 1))
    target = knowmem["target", None, "bf16"]
    for mode in ("full", "lora"):
        assert knowmem["npo_gdr", mode, "bf16"] <= 0.5 * target, f"npo_gdr/{mode} did not forget on CUDA"
