"""The seed paper's preset (experiments/paper_muse.yaml): its plan, its resolved settings, and a
real run without the Llama-2-7B models failing in one line before any work (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PRESET = ROOT / "experiments" / "paper_muse.yaml"


def _harness(tmp_path, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HARNESS_CACHE": str(tmp_path / "cache")}  # an empty hub cache: the models are surely absent
    return subprocess.run([sys.executable, "-m", "harness", "run", "--config", str(PRESET), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def plan():
    from harness.orchestration.experiment import load_experiment
    from harness.orchestration.plan import build_plan

    return build_plan(load_experiment(str(PRESET), {}))


def _settings(plan, task: str, method: str, mode: str) -> dict:
    [stage] = [s for s in plan.of_kind("unlearn") if (s.task, s.method, s.mode) == (task, method, mode)]
    return stage.config["settings"]


def test_dry_run_prints_the_plan_without_the_models(tmp_path):
    result = _harness(tmp_path, "--dry-run", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "16 unlearning runs, 120 quantizations, 140 evaluations, 0 skipped cells" in result.stdout
    assert "muse_news: 8 unlearning runs, 70 quantize-and-evaluate stages (14 baseline)" in result.stdout
    assert "muse_books: 8 unlearning runs" in result.stdout
    assert not (tmp_path / "run").exists()


def test_plan_counts_and_stable_ids(plan):
    from harness.orchestration.experiment import load_experiment
    from harness.orchestration.plan import build_plan

    # 2 tasks x 4 methods x 2 modes; 16 x 7 quantizers + (target, retrain) x 7 per task
    assert plan.counts() == {"unlearning runs": 16, "quantizations": 120, "evaluations": 140, "skipped cells": 0}
    assert list(build_plan(load_experiment(str(PRESET), {})).stages) == list(plan.stages)
    unlearn = plan.of_kind("unlearn")
    # hub models are stamped with the commit of their cached snapshot ("unresolved" before the download)
    assert {s.config["target"].split("@")[0] for s in unlearn} == {"muse-bench/MUSE-News_target",
                                                                 "muse-bench/MUSE-Books_target"}
    assert all("@" in s.config["target"] for s in unlearn)


@pytest.mark.parametrize("task,method,mode,train,method_cfg,lora", [
    ("muse_books", "npo_gdr", "lora", {"lr": 7e-4, "epochs": 5}, {"alpha": 0.1, "beta": 0.1},
     {"lora_r": 64, "lora_alpha": 128}),
    ("muse_books", "ga_gdr", "lora", {"lr": 1e-4, "epochs": 10}, {"alpha": 100.0}, {"lora_r": 16, "lora_alpha": 16}),
    ("muse_books", "npo_klr", "lora", {"lr": 1e-4, "epochs": 5}, {"alpha": 0.1}, {"lora_r": 16, "lora_alpha": 32}),
    ("muse_news", "ga_klr", "full", {"lr": 1e-5, "epochs": 5}, {"alpha": 100.0}, None),
    ("muse_news", "ga_gdr", "full", {"lr": 1e-5, "epochs": 10}, {"alpha": 100.0}, None),
    ("muse_news", "npo_gdr", "full", {"lr": 1e-5, "epochs": 10}, {"alpha": 0.1, "beta": 0.1}, None),
    ("muse_news", "npo_klr", "lora", {"lr": 1e-4, "epochs": 5}, {"alpha": 0.1}, {"lora_r": 64, "lora_alpha": 128}),
    ("muse_news", "npo_gdr", "lora", {"lr": 1e-4, "epochs": 10}, {"alpha": 0.1}, {"lora_r": 16, "lora_alpha": 16}),
    ("muse_news", "ga_gdr", "lora", {"lr": 1e-4, "epochs": 10}, {"alpha": 100.0}, {"lora_r": 64, "lora_alpha": 64}),
])
def test_cells_resolve_to_the_papers_settings(plan, task, method, mode, train, method_cfg, lora):
    s = _settings(plan, task, method, mode)
    common = {"batch_size": 4, "grad_accum": 8, "max_length": 2048, "warmup_steps": 0, "seed": 0}
    assert {k: s["train"][k] for k in {**train, **common}} == {**train, **common}
    assert {k: s["method_settings"][k] for k in method_cfg} == method_cfg
    if lora is None:
        assert s["lora"] is None
    else:
        assert s["lora"] == {**lora, "lora_dropout": 0.05, "lora_targets": []}


def test_real_run_without_the_models_is_one_line(tmp_path):
    out = tmp_path / "run"
    result = _harness(tmp_path, "--out", str(out))
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "muse-bench/MUSE-News_target" in err and "models.muse_news.target_model" in err
    assert not out.exists()
