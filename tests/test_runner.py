"""The runner: plan counts, capability skips, bad input (one line, exit 2, nothing written),
failure isolation, results rows with provenance, rerun without recomputation, resume after a
SIGKILL at a random moment, and the Ray executor agreeing with the local one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.orchestration.cli import main
from harness.orchestration.experiment import load_experiment
from harness.orchestration.plan import build_plan
from harness.plugins import METHODS
from harness.orchestration.results import read_results
from methods.base import UnlearningMethod

def tokens(run: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["token"] for p in (run / "stages").glob("*/stage.json")}


def metrics(run: Path) -> dict[tuple, dict]:
    out = {}
    for row in read_results(run):
        m = {k: v for k, v in row["metrics"].items() if k != "seconds"}
        out[(row["method"], row["mode"], row["quant"])] = m
    return out


@pytest.mark.parametrize("m,q", [(1, 1), (3, 2), (9, 9)])
def test_plan_counts(m, q):
    from harness.plugins import registry

    quant = registry("quantizers").names()[:q]
    exp = load_experiment(None, {"methods": registry("methods").names()[:m], "quant": quant})
    counts = build_plan(exp).counts()
    # an optional library missing here (llama-cpp-python) skips its quantizers, with the reason
    available = [n for n in quant if registry("quantizers").get(n).unavailable_reason() is None]
    rows = len(available) + ("bf16" not in quant)  # the bf16 reference joins every grid that does not name it
    assert counts["unlearning runs"] == 2 * m
    assert counts["evaluations"] == 2 * m * rows + 2 * rows


def test_reference_joins_the_grid_unless_opted_out(tmp_path, capsys):
    """`--quant gptq4` alone still evaluates every cell unquantized (the gap's baseline), and the
    dry run says so; `--reference none` opts out; a bad reference is one line before any work."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "ga_gdr", "--modes", "full", "--quant", "gptq4", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "6 evaluations" in printed and "reference: bf16 (added" in printed
    plan = build_plan(load_experiment(None, {"methods": "ga_gdr", "modes": "full", "quant": "gptq4"}))
    assert sorted({s.quant for s in plan.of_kind("evaluate")}) == ["bf16", "gptq4"]
    assert plan.reference == "bf16" and plan.reference_added
    assert main(["run", "--methods", "ga_gdr", "--modes", "full", "--quant", "gptq4", "--reference", "none",
                 "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "3 evaluations" in printed and "reference: none" in printed
    named = build_plan(load_experiment(None, {"methods": "ga_gdr", "quant": "rtn4,int8", "reference": "int8"}))
    assert sorted({s.quant for s in named.of_kind("evaluate")}) == ["int8", "rtn4"] and not named.reference_added
    assert main(["run", "--quant", "gptq4", "--reference", "bf17", "--out", str(out), "--dry-run"]) == 2
    assert "reference: unknown quantizer 'bf17'" in capsys.readouterr().err
    assert main(["run", "--quant", "gptq4", "--reference", "bf16,int8", "--out", str(out), "--dry-run"]) == 2
    assert "not one quantizer name" in capsys.readouterr().err
    assert not out.exists()
    # the default reference keeps fingerprints (and so run folders) of experiments from before it
    assert "reference" not in load_experiment(None, {}).identity()
    assert load_experiment(None, {"reference": "none"}).identity()["reference"] is None


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--methods", "ga,npo", "--quant", "gptq4,bf16", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "4 unlearning runs" in printed and "12 evaluations" in printed and "2 quantizations" not in printed
    assert not out.exists()


def test_shipped_experiment_file_is_valid(capsys):
    root = Path(__file__).parent.parent
    assert main(["run", "--config", str(root / "experiments" / "example.yaml"), "--dry-run"]) == 0
    assert "4 unlearning runs" in capsys.readouterr().out


def test_variants_and_per_task_overlays_resolve(tmp_path):
    """A variant is its own row with its method's settings changed; a variant declared for one
    mode has no cell in the other; unlearning.tasks lays over the global section."""
    path = tmp_path / "v.yaml"
    path.write_text("methods: [npo_gdr, slow, lin]\nquant: [bf16]\n"
                    "unlearning: {lora: {lora_r: 4}, tasks: {muse_tiny: {lora: {lora_r: 8}, methods: {npo_gdr: {full: {epochs: 2}}}}}}\n"
                    "variants: {slow: {method: npo_gdr, full: {lr: 1.0e-5}, lora: {lr: 2.0e-4}},\n"
                    "           lin: {method: npo_gdr, modes: [full], full: {only_linear: true}}}\n")
    plan = build_plan(load_experiment(str(path), {}))
    unlearn = {(s.method, s.mode): s.config["settings"] for s in plan.of_kind("unlearn")}
    assert sorted(unlearn) == [("lin", "full"), ("npo_gdr", "full"), ("npo_gdr", "lora"), ("slow", "full"), ("slow", "lora")]
    assert all(v["method"] == "npo_gdr" for v in unlearn.values()) and not plan.skipped
    assert unlearn[("slow", "full")]["train"]["lr"] == 1e-5 and unlearn[("slow", "lora")]["train"]["lr"] == 2e-4
    assert unlearn[("npo_gdr", "full")]["train"]["epochs"] == 2 and unlearn[("slow", "full")]["train"]["epochs"] == 2
    assert unlearn[("npo_gdr", "lora")]["lora"]["lora_r"] == 8 and unlearn[("lin", "full")]["train"]["only_linear"]
    assert len({s.id for s in plan.of_kind("unlearn")}) == 5


def test_reversion_study_experiment_is_valid(capsys):
    root = Path(__file__).parent.parent
    assert main(["run", "--config", str(root / "experiments" / "reversion_study.yaml"), "--dry-run"]) == 0
    assert "16 unlearning runs, 72 quantizations, 90 evaluations, 0 skipped cells" in capsys.readouterr().out


def test_capability_flags_skip_cells_with_a_reason():
    class FullOnly(UnlearningMethod):
        """Trains in full mode only."""

        name = "full_only_test"
        modes = ("full",)

    METHODS.add("full_only_test", FullOnly)
    try:
        plan = build_plan(load_experiment(None, {"methods": ["full_only_test"], "quant": ["bf16", "rtn4"]}))
    finally:
        METHODS.unregister("full_only_test")
    assert plan.counts()["unlearning runs"] == 1
    assert len(plan.skipped) == 2 and "does not train in lora mode" in plan.skipped[0]["reason"]


@pytest.mark.parametrize("args,message", [
    (["--methods", "gx"], "unknown method 'gx'. Did you mean ga?"),
    (["--tasks", "muse_nope"], "unknown task 'muse_nope'"),
    (["--modes", "full,qlora"], "unknown mode(s) qlora"),
    (["--quant", "gptq5"], "unknown quantizer 'gptq5'"),
    (["--methods", ","], "empty or malformed methods selection"),
    (["--config", "{missing}"], "no such file"),
    (["--config", "{bad_yaml}"], "not valid YAML"),
    (["--config", "{unknown_key}"], "unknown key(s) learning_rate"),
    (["--config", "{bad_setting}"], "unknown unlearning setting(s) lrr"),
    (["--config", "{bad_model}"], "does not exist"),
    (["--config", "{not_a_model}"], "has no config.json"),
    (["--config", "{no_split}"], "retain1"),
    (["--config", "{bad_variant}"], "unknown method 'npo_gd'. Did you mean npo_gdr?"),
    (["--config", "{variant_key}"], "variants.v: unknown key(s) lr"),
    (["--config", "{variant_setting}"], "unknown unlearning setting(s) lrr"),
    (["--config", "{other_task}"], "unlearning.tasks.muse_news: not one of the run's tasks"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path, capsys, tiny_task):
    from tests.conftest import small_muse_rows
    from tasks.data import write_muse_folder

    rows = small_muse_rows()
    del rows["raw"]["retain1"]
    broken = write_muse_folder(tmp_path / "broken", rows)
    files = {
        "missing": tmp_path / "nope.yaml",
        "bad_yaml": "methods: [ga\n",
        "unknown_key": "learning_rate: 1\n",
        "bad_setting": "methods: [ga]\nunlearning: {full: {lrr: 1}}\n",
        "bad_model": "models: {muse_tiny: {target_model: /nonexistent/model}}\n",
        "not_a_model": f"models: {{muse_tiny: {{target_model: {tmp_path}}}}}\n",
        "no_split": f"methods: [ga]\nquant: [bf16]\nmodels: {{muse_tiny: {{dataset: {broken}}}}}\n",
        "bad_variant": "methods: [v]\nvariants: {v: {method: npo_gd}}\n",
        "variant_key": "methods: [v]\nvariants: {v: {method: npo_gdr, lr: 1}}\n",
        "variant_setting": "methods: [v]\nvariants: {v: {method: npo_gdr, full: {lrr: 1}}}\n",
        "other_task": "unlearning: {tasks: {muse_news: {full: {lr: 1}}}}\n",
    }
    resolved = []
    for a in args:
        if a.startswith("{"):
            key = a.strip("{}")
            value = files[key]
            if isinstance(value, str):
                path = tmp_path / f"{key}.yaml"
                path.write_text(value)
                value = path
            a = str(value)
        resolved.append(a)
    out = tmp_path / "run"
    assert main(["run", *resolved, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_failure_is_isolated(tiny_task, tmp_path, capsys):
    class Exploding(UnlearningMethod):
        """Its loss is NaN: training must stop with a clear error."""

        name = "exploding_test"

        def forget_loss(self, model, batch, ref):
            return model(**batch).logits.sum() * float("nan")

    METHODS.add("exploding_test", Exploding)
    try:
        code = main(["run", "--methods", "exploding_test", "--modes", "full", "--quant", "bf16",
                     "--out", str(tmp_path / "r")])
    finally:
        METHODS.unregister("exploding_test")
    assert code == 1
    rows = {r["method"]: r for r in read_results(tmp_path / "r")}
    assert rows["target"]["status"] == "done" and rows["retrain"]["status"] == "done"
    assert rows["exploding_test"]["status"] == "failed" and "non-finite" in rows["exploding_test"]["error"]
    assert "failed" in capsys.readouterr().err


def test_results_rows_and_rerun_does_no_work(small_run, small_yaml, capsys):
    rows = read_results(small_run)
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
    cell = next(r for r in rows if r["method"] == "ga_gdr" and r["mode"] == "lora" and r["quant"] == "rtn4")
    assert cell["quantization"]["bits"] == 4 and cell["unlearning"]["settings"]["mode"] == "lora"
    assert {"unlearn_s", "quantize_s", "eval_s", "peak_rss_mb"} <= set(cell["timings"])
    prov = cell["provenance"]  # the stage's own
    assert cell["schema"] == 2 and prov["git"] and prov["libraries"]["torch"] and prov["time"]
    assert prov["device"].split(":")[0] in ("cpu", "cuda") and prov["dtype"].startswith("torch.")
    assert set(prov["cpu"]) == {"model", "flags", "kernels"} and prov["cpu"]["kernels"]["torch"]
    assert cell["unlearning"]["provenance"]["git"] == prov["git"]
    run_prov = json.loads((small_run / "run.json").read_text())["provenance"]
    assert run_prov["experiment"]["methods"] == ["ga_gdr"]
    before = tokens(small_run)
    # a stage computed at another commit is reused, says so, and its row keeps that commit
    record_file = small_run / "stages" / cell["stage"] / "stage.json"
    record = json.loads(record_file.read_text())
    record["provenance"]["git"]["commit"] = "0123456789" * 4
    record_file.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["run", "--config", str(small_yaml), "--out", str(small_run)]) == 0
    assert tokens(small_run) == before  # nothing recomputed
    err = capsys.readouterr().err
    assert "reusing 10 completed stages, " in err and "1 at 0123456789" in err, err
    again = {r["stage"]: r for r in read_results(small_run)}
    assert again[cell["stage"]]["provenance"]["git"]["commit"] == "0123456789" * 4
    assert main(["run", "--config", str(small_yaml), "--methods", "npo", "--out", str(small_run)]) == 2


def test_a_model_that_appears_during_the_run_is_reused_by_the_next(tiny_task, tmp_path, monkeypatch, capsys):
    """A world built (or a model fetched) by the run itself is named by its path in a plan made
    before it existed and by its content after; the stages must be stored under the second name,
    or the next run of the same experiment recomputes them all."""
    import shutil

    from harness.orchestration import runner

    late = tmp_path / "late_target"  # appears while the run validates its inputs, as a world being prepared does
    exp_file = tmp_path / "late.yaml"
    exp_file.write_text(f"methods: [ga_gdr]\nmodes: [full]\nquant: [bf16]\nunlearning: {{full: {{epochs: 1}}}}\n"
                        f"models: {{muse_tiny: {{target_model: {late}}}}}\n")
    validate = runner.validate_inputs

    def prepare_then_validate(plan):
        if not late.exists():
            shutil.copytree(tiny_task.target_model, late)
        validate(plan)

    monkeypatch.setattr(runner, "validate_inputs", prepare_then_validate)
    out = tmp_path / "r"
    assert main(["run", "--config", str(exp_file), "--out", str(out)]) == 0
    before = tokens(out)
    capsys.readouterr()
    assert main(["run", "--config", str(exp_file), "--out", str(out)]) == 0
    assert tokens(out) == before  # nothing recomputed
    assert "3 of 3 cells already done" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_20_random_kills(small_run, small_yaml, tmp_path):
    """SIGKILL running grids at 20 random moments in all (a grid is resumed after each kill until
    it finishes, then a fresh one is started): every finished grid gives the uninterrupted run's
    results, no finished stage is ever redone, and nothing temporary is left behind."""
    rng, kills, grids = random.Random(), 0, 0
    expected = metrics(small_run)
    while kills < 20:
        out = tmp_path / f"killed{grids}"
        grids += 1
        cmd = [sys.executable, "-m", "harness", "run", "--config", str(small_yaml), "--out", str(out)]
        seen: dict[str, str] = {}
        while True:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                assert proc.wait(timeout=rng.uniform(3, 15)) == 0
                break  # finished before this kill point
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
            now = tokens(out) if (out / "stages").exists() else {}
            assert all(now[k] == v for k, v in seen.items()), "a finished stage was recomputed"
            seen = now
        assert not list((out / "stages").glob(".*.tmp-*"))
        got = metrics(out)
        differ = {cell: (got[cell], expected[cell]) for cell in expected if got.get(cell) != expected[cell]}
        assert not differ, f"grid {grids} after {kills} kills differs from the uninterrupted run: {differ}"
    print(f"{kills} kills over {grids} grids")


def test_ray_executor_matches_local(small_run, small_yaml, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert main(["run", "--config", str(small_yaml), "--out", str(out), "--executor", "ray"]) == 0
    assert metrics(out) == metrics(small_run)


def test_save_quantized_and_overwrite(small_yaml, tiny_task, tmp_path):
    """--save-quantized keeps each quantized checkpoint (loadable); --overwrite recomputes."""
    from harness.modeling import load_model

    out = tmp_path / "saved"
    args = ["run", "--config", str(small_yaml), "--modes", "full", "--quant", "rtn4", "--save-quantized",
            "--out", str(out)]
    assert main(args) == 0
    saved = sorted((out / "stages").glob("eval-*-ga_gdr-full-rtn4-*/quantized"))
    assert len(saved) == 1 and (saved[0] / "config.json").is_file()
    assert load_model(str(saved[0]), device="cpu") is not None
    before = tokens(out)
    assert main(args + ["--overwrite"]) == 0
    after = tokens(out)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    assert metrics(out)[("ga_gdr", "full", "rtn4")] is not None


def test_the_users_command_gives_the_gap_and_the_answer_in_a_plain_log(tiny_task, tmp_path):
    """`harness run --methods ga_gdr,npo_gdr --modes full,lora --quant gptq4 | cat` (one epoch):
    every cell is also evaluated unquantized, so every ranking and detail row has its gap at
    gptq4; the log ends with the answer in plain lines, and holds no third-party progress bar."""
    config = tmp_path / "fast.yaml"
    config.write_text("unlearning: {full: {epochs: 1}, lora: {epochs: 1}}\n")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--config", str(config), "--methods",
                           "ga_gdr,npo_gdr", "--modes", "full,lora", "--quant", "gptq4", "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    log = done.stdout
    assert done.returncode == 0, log[-3000:]
    board = json.loads((out / "leaderboard.json").read_text())["tasks"]["muse_tiny"]
    assert board["reference"] == "bf16" and board["quantizers"] == ["bf16", "gptq4"]
    assert len(board["rows"]) == 4 and all(e["gap"]["gptq4"] is not None for e in board["rows"])
    md = (out / "leaderboard.md").read_text()
    ranking = [line for line in md.split("## muse_tiny", 1)[1].splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(ranking) == 4 and all(line.split("|")[10].strip()[0] in "+-" for line in ranking), ranking
    detail = [line for line in md.splitlines() if "| gptq4 |" in line and line.startswith(("| ga_gdr", "| npo_gdr"))]
    assert len(detail) == 4 and all(line.split("|")[9].strip()[0] in "+-" for line in detail), detail
    answer = log[log.index("The answer:"):]
    assert "muse_tiny (reference: bf16):" in answer and "top by robust score (worst of gptq4): 1. " in answer
    assert "largest quantization gap: " in answer and " @ gptq4, " in answer
    assert "largest Utility loss from quantization:" in answer and "leaderboard: " in answer
    assert "Loading weights" not in log and "Writing model shards" not in log and "it/s]" not in log
    assert not any(ch in log for ch in "┃━┏│"), "a rich table in a plain log"
    assert max(len(line) for line in answer.splitlines()) < 300
    page = (out / "leaderboard.html").read_text()
    assert page.index('<section id="answer">') < page.index("<table")


def test_a_second_run_on_a_busy_folder_is_one_line(tiny_task, tmp_path, capsys, lock_holder):
    out = tmp_path / "busy"
    holder = lock_holder(out)
    assert main(["run", "--methods", "ga", "--modes", "full", "--quant", "bf16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and f"in use by pid {holder.pid}" in err, err
    assert [p.name for p in out.iterdir()] == [".lock"]  # nothing else was written
