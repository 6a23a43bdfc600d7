"""The embedded tiny MUSE world: generator, training determinism, and memorisation figures."""

import json
import subprocess
import sys

import pytest

from tasks.tiny.world import make_people, muse_splits


def test_generator_is_deterministic_and_seeded():
    assert muse_splits(0) == muse_splits(0)
    assert muse_splits(0) != muse_splits(1)


def test_holdout_and_forget_people_never_leak():
    people = make_people(0)
    data = muse_splits(0)
    seen_by_retrain = " ".join(r["text"] for s in ("retain1", "retain2") for r in data["raw"][s])
    seen_by_target = seen_by_retrain + " ".join(r["text"] for r in data["raw"]["forget"])
    for person in people["holdout"]:
        assert person.name not in seen_by_target
    for person in people["forget"]:
        assert person.name not in seen_by_retrain
    asked = {qa["question"] for qa in data["knowmem"]["forget_qa"]}
    assert not asked & {qa["question"] for qa in data["knowmem"]["forget_qa_icl"]}


def test_training_is_deterministic():
    from tasks.tiny.train import TinyModelConfig, build_model, fit, train_tokenizer

    texts = [r["text"] for r in muse_splits(0)["raw"]["forget"][:4]]
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, epochs=2)
    states = []
    for _ in range(2):
        tok = train_tokenizer(texts, vocab_size=300)
        model = build_model(tok, cfg)
        fit(model, tok, texts, cfg)
        states.append(model.state_dict())
    assert all((states[0][k] == states[1][k]).all() for k in states[0])


def test_prepare_is_cached(tiny_task):
    from pathlib import Path

    from tasks.tiny.prepare import prepare

    stamp = Path(tiny_task.dataset).parent / "prepare.json"
    before = stamp.stat().st_mtime
    prepare(tiny_task)
    assert stamp.stat().st_mtime == before


@pytest.fixture(scope="module")
def target_raw(tiny_task, tiny_target):
    from tasks.evaluate import raw_metrics

    model, tok = tiny_target
    return raw_metrics(model, tok, tiny_task, batch_size=8, with_logs=True)


def test_target_memorised_its_data(target_raw):
    assert target_raw["knowmem_f"] >= 60
    assert target_raw["verbmem_f"] >= 60
    assert target_raw["knowmem_r"] >= 60
    assert target_raw["privleak_auc"] < 0.1  # forget texts far more likely than holdout


def test_retrain_never_saw_forget(tiny_task, target_raw):
    from harness.modeling import load_model, load_tokenizer
    from tasks.evaluate import raw_metrics

    raw = raw_metrics(load_model(tiny_task.retrain_model, device="cpu"), load_tokenizer(tiny_task.tokenizer_path), tiny_task)
    assert raw["knowmem_f"] < 0.5 * target_raw["knowmem_f"]
    assert raw["knowmem_r"] >= 60
    assert 0.2 < raw["privleak_auc"] < 0.8  # cannot tell forget from holdout


def test_metrics_do_not_depend_on_batch_size(tiny_task, tiny_target, target_raw):
    from tasks.evaluate import raw_metrics

    model, tok = tiny_target
    single = raw_metrics(model, tok, tiny_task, batch_size=1)
    for key in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc"):
        assert single[key] == pytest.approx(target_raw[key], abs=1e-9), key


def test_cli_eval_target_writes_json(tiny_task, tmp_path):
    out = tmp_path / "m.json"
    result = subprocess.run([sys.executable, "-m", "harness", "eval", "--task", "muse_tiny", "--model", "target",
                             "--output", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "KnowMem_forget" in result.stdout and "PrivLeak" in result.stdout
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    assert metrics["privleak"] == pytest.approx(-100 * (1 - metrics["privleak_auc"] / metrics["auc_retrain"]))
    assert metrics["knowledge_retained"] == pytest.approx(100.0)
    assert record["provenance"]["libraries"]["torch"]
    assert record["references"]["auc_source"].startswith("retrain model")
    assert len(metrics["logs"]["knowmem_f"]) == metrics["counts"]["knowmem_f"]
