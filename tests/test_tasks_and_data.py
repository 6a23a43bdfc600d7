"""Task YAMLs (built-in and --include-path) and the MUSE loader on a folder the test writes."""

import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from harness.errors import HarnessError
from tasks.data import load_split
from tasks.spec import TaskSpec


def test_builtin_muse_tasks_match_design():
    news, books = tasks.get_task("muse_news"), tasks.get_task("muse_books")
    assert (news.dataset, news.target_model, news.reference_auc) == ("muse-bench/MUSE-News", "muse-bench/MUSE-News_target", 0.4772)
    assert (books.dataset, books.target_model, books.reference_auc) == ("muse-bench/MUSE-Books", "muse-bench/MUSE-Books_target", 0.5393)
    for t in (news, books):
        assert t.tokenizer == "meta-llama/Llama-2-7b-hf"
        g = t.generation
        assert (g.verbmem_max_new_tokens, g.verbmem_gt_max_tokens, g.knowmem_max_new_tokens, g.privleak_k) == (128, 128, 32, 0.4)
        assert g.knowmem_stop == ["\n\n", "\nQuestion", "Question:"]


def test_local_folder_in_hub_layout_loads(muse_folder):
    rows = load_split(str(muse_folder), "knowmem", "forget_qa")
    assert rows[0] == {"question": "What is fact 0?", "answer": "value 0"}
    assert (muse_folder / "knowmem" / "forget_qa-00000-of-00001.parquet").is_file()


def test_missing_split_config_and_field_are_named(muse_folder):
    (muse_folder / "verbmem" / "forget-00000-of-00001.parquet").unlink()
    with pytest.raises(HarnessError, match="verbmem.*forget.*does not exist"):
        load_split(str(muse_folder), "verbmem", "forget")
    readme = muse_folder / "README.md"
    readme.write_text(readme.read_text().replace("split: holdout\n    path: privleak/holdout", "split: other\n    path: privleak/holdout"))
    with pytest.raises(HarnessError, match="config 'privleak' has no split 'holdout'"):
        load_split(str(muse_folder), "privleak", "holdout")
    with pytest.raises(HarnessError, match="no config 'nonsense'|not a MUSE split"):
        load_split(str(muse_folder), "nonsense", "x")


def test_missing_field_is_named(tmp_path):
    from tasks.data import write_muse_folder

    folder = write_muse_folder(tmp_path / "d", {"knowmem": {"forget_qa": [{"question": "q", "reply": "a"}]}})
    with pytest.raises(HarnessError, match="lacks field\\(s\\) answer"):
        load_split(str(folder), "knowmem", "forget_qa")
    with pytest.raises(HarnessError, match="no config 'verbmem'"):
        load_split(str(folder), "verbmem", "forget")


def _user_task(folder: Path, dataset: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my_task.yaml"
    path.write_text(f"task: my_muse\ndescription: a user task\ndataset: {dataset}\n"
                    f"target_model: /nonexistent/target\nreference_auc: 0.5\n{extra}")
    return path


def test_include_path_registers_user_task(tmp_path, muse_folder):
    _user_task(tmp_path / "yamls", muse_folder, "generation:\n  batch_size: 4\n")
    assert tasks.include_path(tmp_path / "yamls") == ["my_muse"]
    spec = tasks.get_task("my_muse")
    assert spec.dataset == str(muse_folder) and spec.generation.batch_size == 4
    assert load_split(spec.dataset, "raw", "retain1")


def test_task_yaml_validation(tmp_path, muse_folder):
    path = _user_task(tmp_path, muse_folder, "temperature: 0.7\n")
    with pytest.raises(HarnessError, match="unknown key\\(s\\) temperature"):
        TaskSpec.from_yaml(path)
    path.write_text(f"task: t\ndataset: {muse_folder}\ntarget_model: x\n")
    with pytest.raises(HarnessError, match="retrain_model or reference_auc"):
        TaskSpec.from_yaml(path)
    path.write_text(f"task: t\ndataset: {muse_folder}\ntarget_model: x\nreference_auc: 0.5\ngeneration:\n  top_p: 1\n")
    with pytest.raises(HarnessError, match="generation: unknown key\\(s\\) top_p"):
        TaskSpec.from_yaml(path)


def _harness(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)


def test_cli_missing_split_one_line_error(tmp_path, muse_folder):
    (muse_folder / "knowmem" / "retain_qa-00000-of-00001.parquet").unlink()
    _user_task(tmp_path / "yamls", muse_folder)
    result = _harness("eval", "--task", "my_muse", "--model", "target", "--include-path", str(tmp_path / "yamls"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "retain_qa" in lines[0] and lines[0].startswith("error:")


def test_cli_unknown_task_suggests(tmp_path):
    result = _harness("eval", "--task", "muse_nwes", "--model", "target")
    assert result.returncode == 2 and "Did you mean muse_news?" in result.stderr


def test_cli_missing_model_path(tmp_path, muse_folder):
    _user_task(tmp_path / "yamls", muse_folder)
    result = _harness("eval", "--task", "my_muse", "--model", str(tmp_path / "nope"), "--include-path", str(tmp_path / "yamls"))
    assert result.returncode == 2 and "does not exist" in result.stderr
