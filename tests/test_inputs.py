"""Input the way users write it, and bad input caught before any work (issue 14): numbers like
``1e-4``, files that are not UTF-8, values of the wrong type, out-of-range flags, folders the
harness did not write (never deleted), empty splits, and output that strict parsers, Markdown
and rich all read as intended. None of these needs a prepared world."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.orchestration.cli import main
from harness.orchestration.commands import parse_set
from harness.errors import HarnessError
from harness.orchestration.experiment import load_experiment


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


def test_exponent_floats_are_numbers(tmp_path):
    """PyYAML reads `1e-4` (no dot) as a string; the harness reads it as users mean it."""
    path = tmp_path / "e.yaml"
    path.write_text("unlearning: {full: {lr: 1e-4}, lora: {lr: 5E-4, epochs: 2}}\n")
    exp = load_experiment(str(path), {})
    assert exp.unlearning["full"]["lr"] == pytest.approx(1e-4) and isinstance(exp.unlearning["full"]["lr"], float)
    assert parse_set(["lr=5e-4", "epochs=3", "name=abc"]) == {"lr": 5e-4, "epochs": 3, "name": "abc"}
    from harness.unlearning import resolve_settings
    from tasks import get_task

    settings = resolve_settings(get_task("muse_tiny"), "ga_gdr", "full", parse_set(["lr=5e-4", "epochs=3"]))
    assert settings.train.lr == pytest.approx(5e-4) and settings.train.epochs == 3


def test_files_that_are_not_utf8_are_one_line(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("methods: [ga]  # café\n".encode("latin-1"))
    _one_line_error(capsys, main(["run", "--config", str(bad), "--dry-run"]), "not UTF-8", str(bad))
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "mine.yaml").write_bytes("task: mine\ndescription: café\n".encode("latin-1"))
    _one_line_error(capsys, main(["ls", "tasks", "--include-path", str(tasks_dir)]), "not UTF-8")


@pytest.mark.parametrize("argv,needle", [
    (["run", "--batch-size", "0"], "--batch-size: 0 must be at least 1"),
    (["run", "--batch-size", "-3"], "--batch-size: -3 must be at least 1"),
    (["run", "--batch-size", "abc"], "'abc' is not a whole number"),
    (["eval", "--task", "muse_tiny", "--model", "target", "--batch-size", "0"], "must be at least 1"),
    (["run", "--rank-quant", "nf9"], "--rank-quant nf9: not a quantizer of this run"),
    (["run", "--reference", "bf17"], "reference: unknown quantizer 'bf17'"),
    (["run", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["unlearn", "--task", "muse_tiny", "--method", "ga", "--mode", "full", "--set", "epochs=abc"],
     "epochs must be a whole number, got 'abc'"),
    (["unlearn", "--task", "muse_tiny", "--method", "ga", "--mode", "full", "--set", "warmup_steps=-5"],
     "warmup_steps must be >= 0"),
    (["quantize", "--task", "muse_tiny", "--model", "target", "--quant", "rtn4", "--set", "group_size=abc"],
     "group_size must be a whole number"),
])
def test_bad_flags_fail_in_one_line_before_any_work(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    flag = "--output" if argv[0] in ("unlearn", "quantize", "eval") else "--out"
    _one_line_error(capsys, main([*argv, flag, str(out)]), needle)
    assert not out.exists()


def test_experiment_values_of_the_wrong_type(tmp_path, capsys):
    for text, needle in [("batch_size: 0\n", "batch_size must be at least 1"),
                         ("batch_size: abc\n", "batch_size must be a whole number"),
                         ("seed: 1.5\n", "seed must be a whole number or null"),
                         ("reference: [bf16, int8]\n", "is not one quantizer name")]:
        path = tmp_path / "x.yaml"
        path.write_text(text)
        _one_line_error(capsys, main(["run", "--config", str(path), "--dry-run"]), needle)


def test_task_yaml_generation_values_are_typed(tmp_path):
    from tasks.spec import TaskSpec

    path = tmp_path / "t.yaml"
    path.write_text("task: t\ndataset: ./d\ntarget_model: ./m\ngeneration: {batch_size: abc}\n")
    with pytest.raises(HarnessError, match="batch_size must be a whole number, got 'abc'"):
        TaskSpec.from_yaml(path)


def test_a_model_path_that_is_a_file_says_so(tmp_path):
    from harness.modeling import check_model_path

    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(HarnessError, match="is a file; pass the model's folder"):
        check_model_path(str(file))


def test_empty_training_splits_and_malformed_front_matter(tmp_path):
    from tasks.data import read_front_matter, training_texts, write_muse_folder
    from tests.conftest import small_muse_rows

    rows = small_muse_rows()
    rows["raw"]["forget"] = [{"text": "  "}]
    folder = write_muse_folder(tmp_path / "d", rows)
    with pytest.raises(HarnessError, match="raw/forget holds no text"):
        training_texts(str(folder), "forget")
    assert len(training_texts(str(folder), "retain1")) == 4
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "README.md").write_text("---\nconfigs: [3]\n---\n")
    with pytest.raises(HarnessError, match="malformed 'configs:'"):
        read_front_matter(bad)
    (bad / "README.md").write_text("---\nconfigs: [{config_name: raw}\n---\n")
    with pytest.raises(HarnessError, match="not valid YAML"):
        read_front_matter(bad)


def test_folders_the_harness_did_not_write_are_never_deleted(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for argv, marker in [(["quantize", "--task", "muse_tiny", "--model", "target", "--quant", "rtn4"], "quantize.json"),
                         (["unlearn", "--task", "muse_tiny", "--method", "ga", "--mode", "full"], "unlearn.json")]:
        _one_line_error(capsys, main([*argv, "--output", str(mine), "--overwrite"]), "was not written by", marker)
    from tasks.tiny.prepare import prepare

    data = mine / "data"  # a user task reusing the tiny world's prepare: its dataset's parent is `mine`
    with pytest.raises(HarnessError, match="was not written by harness prepare"):
        prepare(SimpleNamespace(dataset=str(data)))
    assert (mine / "thesis.tex").read_text() == "years of work"
    from harness.store import check_replaceable

    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "quantize.json").write_text("{}")
    check_replaceable(ours, "quantize.json", "harness quantize")  # the harness's own: replaceable
    check_replaceable(tmp_path / "absent", "quantize.json", "harness quantize")


def test_json_has_no_nan_and_markdown_and_rich_take_names_as_text(capsys):
    from harness.plugins import METHODS
    from harness.store import to_json
    from leaderboard.markdown import _cell
    from methods.ga import GradientAscent

    text = to_json({"auc": float("nan"), "gap": [float("inf"), -float("inf"), 1.5]})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}")) == \
        {"auc": None, "gap": [None, None, 1.5]}
    assert _cell("two\nlines | here") == "two lines \\| here"

    class Markup(GradientAscent):
        """[/bold] a description that is [red]not markup[/red]"""

    METHODS.add("[/x]odd", Markup, summary=Markup.__doc__)
    try:
        assert main(["ls", "methods"]) == 0
    finally:
        METHODS.unregister("[/x]odd")
    assert "[/x]odd" in capsys.readouterr().out


def test_built_in_methods_know_their_name():
    from harness.plugins import registry

    for name in registry("methods").names():
        assert registry("methods").get(name).name == name
    with pytest.raises(HarnessError, match="method 'ga_gdr'"):
        registry("methods").get("ga_gdr")(gamma="x")


def test_ray_workers_get_no_credentials_and_a_too_small_cluster_is_refused():
    from harness.orchestration.ray_executor import check_capacity, worker_env

    env = worker_env({"HF_TOKEN": "hf_x", "HUGGING_FACE_HUB_TOKEN": "hf_y", "HF_HUB_OFFLINE": "1",
                      "HARNESS_CACHE": "/c", "TOKENIZERS_PARALLELISM": "false", "HARNESS_API_KEY": "k", "PATH": "/bin"})
    assert env == {"HF_HUB_OFFLINE": "1", "HARNESS_CACHE": "/c", "TOKENIZERS_PARALLELISM": "false"}
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    check_capacity(nodes, 2, gpu=False)
    with pytest.raises(HarnessError, match="reserves 4 CPUs .* largest Ray node has 2; set OMP_NUM_THREADS=2"):
        check_capacity(nodes, 4, gpu=False)
    with pytest.raises(HarnessError, match="no Ray node offers one"):
        check_capacity(nodes, 2, gpu=True)


def test_one_run_per_folder_and_a_crash_emptied_record_is_not_done(tmp_path, lock_holder):
    from harness.store import STAGE_FILE, Store, run_lock

    root = tmp_path / "run"
    holder = lock_holder(root)
    with pytest.raises(HarnessError, match=f"is in use by pid {holder.pid} on "):
        with run_lock(root):
            pass
    holder.kill()
    holder.wait()
    with run_lock(root):  # released when its holder died
        pass
    store = Store(root)
    (store.folder("s1")).mkdir(parents=True)
    (store.folder("s1") / STAGE_FILE).write_text("")
    assert not store.is_complete("s1")
    (store.folder("s1") / STAGE_FILE).write_text('{"status": "done"}')
    assert store.is_complete("s1")


def test_a_dead_ray_worker_is_a_failed_cell_not_a_crash(tmp_path, monkeypatch):
    """Ray raises from ``ray.get`` when a worker is killed (OOM, segfault): the run records the
    stage as failed, with the reason, and goes on (a fake Ray, so no cluster is started)."""
    import sys

    from harness.orchestration.plan import Plan, Stage
    from harness.orchestration.ray_executor import run_ray
    from harness.store import Store

    class WorkerCrashedError(Exception):
        pass

    class Ref:
        def __init__(self, stage):
            self.stage = stage

    class Remote:
        def options(self, **_):
            return self

        def remote(self, stage, context, *deps):
            return Ref(stage)

    class FakeRay:
        init = staticmethod(lambda **_: None)
        nodes = staticmethod(lambda: [{"Alive": True, "Resources": {"CPU": 64.0}}])
        remote = staticmethod(lambda **_: (lambda fn: Remote()))
        wait = staticmethod(lambda refs, num_returns: ([refs[0]], refs[1:]))

        @staticmethod
        def get(ref):
            if ref.stage["id"] == "dies":
                raise WorkerCrashedError("The worker died unexpectedly (SIGKILL)")
            return {"id": ref.stage["id"], "status": "done", "record": {"result": {"steps": 1, "seconds": 0.1}}}

    monkeypatch.setitem(sys.modules, "ray", FakeRay)
    stages = {i: Stage(i, "unlearn", "t", "ga", "full") for i in ("dies", "lives")}
    seen = []
    progress = SimpleNamespace(finished=lambda s, r: seen.append(("done", s.id)),
                               failed=lambda s, e: seen.append(("failed", s.id, e)),
                               skipped=lambda s, e: seen.append(("skipped", s.id)))
    store = Store(tmp_path / "run")
    from harness.orchestration.experiment import Experiment

    run_ray(Plan(stages, [], {}), list(stages.values()), Experiment(), store, [], progress)
    assert seen[1] == ("done", "lives")
    assert seen[0][:2] == ("failed", "dies") and "Ray worker lost (WorkerCrashedError" in seen[0][2]
    assert "WorkerCrashedError" in store.failure("dies")["error"]


def test_max_length_model_means_the_models_context():
    """MUSE never truncates PrivLeak texts: `max_length: model` scores whole documents up to the
    model's own context (MUSE's own tasks use it); other values stay as declared."""
    from tasks import get_task
    from tasks.evaluate import with_context_length
    from tasks.spec import GenerationSettings

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=4096))
    news = get_task("muse_news")
    assert news.generation.max_length == "model"
    assert with_context_length(news, model).generation.max_length == 4096 and news.generation.max_length == "model"
    tiny = get_task("muse_tiny")
    assert with_context_length(tiny, model) is tiny
    with pytest.raises(HarnessError, match="positive integer or 'model'"):
        GenerationSettings(max_length="all")
    with pytest.raises(HarnessError, match="no max_position_embeddings"):
        with_context_length(news, SimpleNamespace(config=SimpleNamespace()))


def test_outliers_script_refuses_bad_input_in_one_line(tmp_path):
    """tasks/tiny/outliers.py (the outlier study's model transform): a bad --model or --scale is
    one line on stderr, exit 2, before any model loads, and nothing is written."""
    import subprocess
    import sys

    out = tmp_path / "out"
    for args in (["--model", str(tmp_path / "missing")], ["--model", str(tmp_path), "--scale", "0"]):
        result = subprocess.run([sys.executable, "-m", "tasks.tiny.outliers", *args, "--out", str(out)],
                                capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert not out.exists()
