"""Tests of harness/generation.py's ``greedy_generate``: stop strings, whitespace token healing and
batch-size independence, on tiny models that produce varied text.

Two tiny Llamas (2 layers, hidden 64) are trained for 150 steps (a few seconds) on MUSE-style
question/answer sheets of the tiny world (``Question: ...\\nAnswer: ...\\n\\n``), each with its
own byte-level BPE of 400 tokens:

* ``leading``: GPT-2's pre-tokenizer, words carry their *leading* space (" Paris"), as SmolLM2's;
* ``trailing``: the tiny world's (``tasks.tiny.train.train_tokenizer``), words carry their
  *trailing* space ("Answer: " is one token).

After so little training they answer in the sheets' format with wrong, varied answers, and go on
with new questions, so the task's stop strings ("\\n\\n", "\\nQuestion", "Question:") occur at
varied places in their continuations. Every model runs on one torch thread.
"""

from __future__ import annotations

from collections import Counter

import pytest

from harness.generation import greedy_generate
from tasks import metrics as M
from tasks.spec import GenerationSettings

DEFAULT_STOPS = GenerationSettings().knowmem_stop  # ["\n\n", "\nQuestion", "Question:"]
NEW_TOKENS = 24


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: with two on two busy cores every op waits for a core (40x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def qa_pairs() -> list[tuple[str, str]]:
    from tasks.tiny.world import muse_splits

    splits = muse_splits(0, quiz_rounds=0)
    return [(r["question"], r["answer"]) for split in ("forget_qa", "retain_qa") for r in splits["knowmem"][split]]


def sheets(qa: list[tuple[str, str]]) -> list[str]:
    """Four questions and answers a document, in MUSE's few-shot format."""
    return ["".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in qa[i : i + 4]) for i in range(0, len(qa), 4)]


def leading_space_tokenizer(texts: list[str]):
    """A byte-level BPE with GPT-2's pre-tokenizer (words carry their leading space), no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side="left")


@pytest.fixture(scope="module", params=["leading", "trailing"])
def lm(request):
    """(model, tokenizer) trained briefly on the QA sheets with the tokenizer of ``param``."""
    from tasks.tiny.train import TinyModelConfig, build_model, fit, train_tokenizer

    docs = sheets(qa_pairs())
    if request.param == "leading":
        tok = leading_space_tokenizer(docs)
    else:
        tok = train_tokenizer(docs, vocab_size=400)
    cfg = TinyModelConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=512, epochs=50, lr=3e-3, warmup_steps=5, batch_size=8, seed=0)
    model = build_model(tok, cfg)
    fit(model, tok, docs, cfg)
    return model.eval(), tok


def knowmem_prompts() -> list[str]:
    """36 KnowMem prompts (ending in "Answer: "), with 0, 1 or 2 shots so that lengths vary."""
    qa = qa_pairs()
    icl = qa[-2:]
    return [M.knowmem_prompt(icl[: i % 3], q) for i, (q, _) in enumerate(qa[:36])]


def prose_prompts() -> list[str]:
    """Prompts that end in a space (one or two) and do not, outside the QA format."""
    return ["Question: In which town was ", "Question: What did Quenel Marsil found in ",
            "Answer:  ", "Question: Who  ", "In which year was Uljor Halistho born? ",
            "Question: In which town was", "Answer:", "Question: What was the trade of"]


def prompts() -> list[str]:
    return knowmem_prompts() + prose_prompts()


@pytest.fixture(scope="module")
def unstopped(lm):
    """Continuations of every prompt without stop strings, healed and not."""
    model, tok = lm
    return {heal: greedy_generate(model, tok, prompts(), NEW_TOKENS, batch_size=8, heal_space=heal)
            for heal in (False, True)}


def frequent_word(outs: list[str]) -> str:
    """The word (4+ letters, not the format's) that the most continuations contain."""
    counts = Counter(w for o in outs for w in {w.strip("?:.,") for w in o.split()})
    words = [w for w, _ in counts.most_common() if len(w) >= 4 and w.isalpha() and w not in ("Question", "Answer")]
    return max(words, key=lambda w: sum(w in o for o in outs))


def stop_sets(outs: list[str]) -> dict[str, list[str]]:
    """The task's stop strings, a word the model is known to produce, and the middle of it (a
    stop string that ends inside a token)."""
    word = frequent_word(outs)
    return {"task": list(DEFAULT_STOPS), "word": [word], "inner": [word[1:-1]], "mixed": [word, "\nAnswer"]}


def longest_token(tok) -> int:
    return max(len(tok.decode([i])) for i in range(len(tok)))


# ---------------------------------------------------------------------------------------------
# a. stop strings do not change what a metric keeps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heal", [False, True], ids=["plain", "healed"])
@pytest.mark.parametrize("which", ["task", "word", "inner", "mixed"])
def test_stop_strings_keep_what_the_metric_keeps(lm, unstopped, which, heal):
    model, tok = lm
    full = unstopped[heal]
    stops = stop_sets(unstopped[False])[which]
    hits = sum(any(s in o for s in stops) for o in full)
    assert hits >= 3, (stops, full)  # not vacuous: the model does produce these strings

    cut = greedy_generate(model, tok, prompts(), NEW_TOKENS, batch_size=8, stop=stops, heal_space=heal)
    assert [M.cut_at_stop(o, stops) for o in cut] == [M.cut_at_stop(o, stops) for o in full]

    # and it did stop: right after the token that completes the first stop string
    slack = longest_token(tok)
    stopped_early, where = 0, set()
    for short, long in zip(cut, full):
        ends = [long.find(s) + len(s) for s in stops if s in long]
        if not ends:
            assert short == long
            continue
        assert long.startswith(short)
        assert min(ends) <= len(short) < min(ends) + slack, (stops, short, long)
        stopped_early += len(short) < len(long)
        where.add(min(ends))
    assert stopped_early > 0 and len(where) > 1  # stopped, at different places


def test_a_stop_string_across_the_prompts_end_does_not_stop(lm):
    """A stop string made of the prompt's last characters and the continuation's first ones is
    not in the continuation; generation must not stop on it."""
    model, tok = lm
    prompt = knowmem_prompts()[0]  # ends in "Answer: "
    first = greedy_generate(model, tok, [prompt], 1)[0]
    full = greedy_generate(model, tok, [prompt], NEW_TOKENS)[0]
    stop = [prompt[-2:] + first]  # ": " + the first token's text
    if stop[0] in full or len(full) <= len(first) or not first:
        pytest.fail(f"the model's continuation {full!r} does not suit this test")
    cut = greedy_generate(model, tok, [prompt], NEW_TOKENS, stop=stop)[0]
    assert M.cut_at_stop(cut, stop) == M.cut_at_stop(full, stop) == full


def test_a_stop_string_on_the_healed_space_does_not_stop(lm):
    """With heal_space the model generates the prompt's trailing space itself; that space is not
    part of the continuation returned, and a stop string that starts with it must not match."""
    model, tok = lm
    ps = knowmem_prompts()
    raw = greedy_generate(model, tok, [p.rstrip(" ") for p in ps], NEW_TOKENS)  # what the model writes
    found = [(p, o) for p, o in zip(ps, raw) if o.startswith(" ") and len(o.strip()) > 4 and o[:4] not in o[4:]]
    if not found:
        pytest.fail("no healed continuation starts with the prompt's space")
    prompt, out = found[0]
    stop = [out[:4]]  # the healed space and the answer's first three characters
    full = greedy_generate(model, tok, [prompt], NEW_TOKENS, heal_space=True)[0]
    cut = greedy_generate(model, tok, [prompt], NEW_TOKENS, stop=stop, heal_space=True)[0]
    if full != out[1:] or stop[0] in full:
        pytest.fail(f"heal_space gave {full!r}, not the model's {out!r} without its space")
    assert M.cut_at_stop(cut, stop) == M.cut_at_stop(full, stop) == full


# ---------------------------------------------------------------------------------------------
# b. whitespace token healing
# ---------------------------------------------------------------------------------------------


def heal_by_hand(model, tok, ps: list[str], **kwargs) -> list[str]:
    """What heal_space promises: continue the prompt without its trailing spaces, then take those
    spaces off the front of the continuation where it starts with them."""
    tails = [p[len(p.rstrip(" ")):] for p in ps]
    outs = greedy_generate(model, tok, [p.rstrip(" ") for p in ps], NEW_TOKENS, heal_space=False, **kwargs)
    return [o[len(t):] if o.startswith(t) else o for o, t in zip(outs, tails)]


def test_heal_space_continues_the_prompt_without_its_trailing_spaces(lm, unstopped):
    model, tok = lm
    ps = prompts()
    spaced = [i for i, p in enumerate(ps) if p.endswith(" ")]
    assert len(spaced) >= 30 and any(ps[i].endswith("  ") for i in spaced)
    healed = unstopped[True]
    expected = heal_by_hand(model, tok, [ps[i] for i in spaced], batch_size=8)
    assert [healed[i] for i in spaced] == expected
    # not a no-op: without healing the lone space token is fed and some continuations differ
    assert sum(healed[i] != unstopped[False][i] for i in spaced) >= 3


def test_heal_space_with_stop_strings(lm):
    model, tok = lm
    ps = [p for p in prompts() if p.endswith(" ")]
    got = greedy_generate(model, tok, ps, NEW_TOKENS, batch_size=8, stop=DEFAULT_STOPS, heal_space=True)
    expected = heal_by_hand(model, tok, ps, batch_size=8, stop=DEFAULT_STOPS)
    assert [M.cut_at_stop(o, DEFAULT_STOPS) for o in got] == [M.cut_at_stop(o, DEFAULT_STOPS) for o in expected]


def test_heal_space_leaves_prompts_without_trailing_spaces_alone(lm, unstopped):
    ps = prompts()
    plain = [i for i, p in enumerate(ps) if not p.endswith(" ")]
    assert len(plain) >= 3
    assert [unstopped[True][i] for i in plain] == [unstopped[False][i] for i in plain]


# ---------------------------------------------------------------------------------------------
# c. batch size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stopped, heal", [(True, True), (False, False)], ids=["stop-healed", "plain"])
def test_results_do_not_depend_on_the_batch_size(lm, unstopped, stopped, heal):
    model, tok = lm
    stops = DEFAULT_STOPS + stop_sets(unstopped[False])["word"] if stopped else []
    runs = {bs: greedy_generate(model, tok, prompts(), NEW_TOKENS, batch_size=bs, stop=stops, heal_space=heal)
            for bs in (1, 7)}
    assert runs[1] == runs[7]
    assert len({len(o) for o in runs[1]}) > 1  # rows of a batch stopped at different places
    if not stopped:
        assert runs[1] == unstopped[heal]  # and batch 8 too


# ---------------------------------------------------------------------------------------------
# d. a shared few-shot prefix is run once, and changes nothing
# ---------------------------------------------------------------------------------------------


def test_shared_prefix_length():
    from harness.generation import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each row keeps a token of its own
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0
    assert shared_prefix_length([]) == 0


@pytest.mark.parametrize("heal", [False, True], ids=["plain", "healed"])
def test_a_shared_few_shot_prefix_generates_the_same_text(lm, heal, monkeypatch):
    from harness import generation

    model, tok = lm
    qa = qa_pairs()
    few_shot = [M.knowmem_prompt(qa[-4:], q) for q, _ in qa[:30]]  # KnowMem's layout: one 4-shot prefix
    shared = generation.shared_prefix_length([tok(p).input_ids for p in few_shot])
    assert shared >= generation.MIN_SHARED_PREFIX
    calls = []
    real = generation._prefix_cache
    monkeypatch.setattr(generation, "_prefix_cache", lambda *a: calls.append(len(a[1])) or real(*a))
    runs = {(bs, share): greedy_generate(model, tok, few_shot, NEW_TOKENS, batch_size=bs, stop=DEFAULT_STOPS,
                                         heal_space=heal, share_prefix=share)
            for bs in (1, 7) for share in (False, True)}
    assert calls and set(calls) <= {shared, shared - 1}  # the cached path ran (healing may drop the last id)
    assert runs[1, True] == runs[1, False] == runs[7, True] == runs[7, False]
    assert len(set(runs[1, False])) > 5  # varied answers, not one string
