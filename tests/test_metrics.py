"""Metric definitions checked against hand-computed values."""

import math

import pytest

from tasks import metrics as M


def test_rouge_l_f1_hand_computed():
    # reference 6 tokens, prediction 4 tokens, LCS "the cat on mat" = 4 -> P = 4/4, R = 4/6
    p, r = 1.0, 4 / 6
    assert M.rouge_l_f1("the cat sat on the mat", "the cat on mat") == pytest.approx(2 * p * r / (p + r))
    assert M.rouge_l_f1("Jormimere", "Jormimere") == 1.0
    assert M.rouge_l_f1("1861", "1862") == 0.0
    # rouge-score lowercases and drops punctuation, and uses no stemmer
    assert M.rouge_l_f1("Cats, dogs!", "cats dogs") == 1.0
    assert M.rouge_l_f1("running", "run") == 0.0


def test_knowmem_prompt_text():
    prompt = M.knowmem_prompt([("Q1?", "A1"), ("Q2?", "A2")], "Q3?")
    assert prompt == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    assert M.knowmem_prompt([], "Q?") == "Question: Q?\nAnswer: "


@pytest.mark.parametrize("text,expected", [
    ("Paris\n\nQuestion: next", "Paris"),
    ("Paris\nQuestion: next", "Paris"),
    ("Paris Question: next", "Paris "),
    ("a\nb\n\nc", "a\nb"),            # earliest stop wins, not the first in the list
    ("no stop at all", "no stop at all"),
])
def test_cut_at_first_stop(text, expected):
    assert M.cut_at_stop(text, ["\n\n", "\nQuestion", "Question:"]) == expected


def test_min_k_statistic():
    lps = [-0.1, -5.0, -0.2, -3.0, -0.3]  # 40% of 5 tokens = 2 lowest: -5, -3
    assert M.min_k_statistic(lps, 0.4) == pytest.approx(4.0)
    assert M.min_k_statistic([-2.0], 0.4) == pytest.approx(2.0)  # at least one token


def test_auc_hand_computed_and_direction():
    # forget (label 0) memorised = low Min-k; holdout (label 1) high Min-k. Score = -Min-k.
    forget, holdout = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0]
    # pairs (f, h) where -h > -f, i.e. h < f: (4, 3) only -> AUC = 1/9
    assert M.membership_auc(forget, holdout) == pytest.approx(1 / 9)
    assert M.membership_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)


def test_privleak_formula():
    assert M.privleak(0.4772, 0.4772) == 0.0
    assert M.privleak(0.0, 0.4772) == pytest.approx(-100.0)
    assert M.privleak(0.6, 0.5) == pytest.approx(20.0)


def test_knowledge_retained():
    assert M.knowledge_retained(21.0, 84.0) == pytest.approx(25.0)
    assert math.isnan(M.knowledge_retained(5.0, 0.0))


def test_verbmem_ground_truth_is_cut_as_muse_cuts_it():
    """MUSE tokenizes the ground truth with BOS and keeps 128 ids: 127 words of text when the
    tokenizer adds BOS (the harness kept 128 before METRICS_VERSION 2), 128 when it adds none."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from tasks.evaluate import verbmem_ground_truth

    words = [f"w{i}" for i in range(200)]
    vocab = {"<s>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    text = " ".join(words)
    plain = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>")
    assert verbmem_ground_truth(plain, text, 128).split() == words[:128]
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    with_bos = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>")
    assert with_bos(text).input_ids[0] == 0
    assert verbmem_ground_truth(with_bos, text, 128).split() == words[:127]


@pytest.mark.parametrize("which", ["target", "retrain"])
def test_every_metric_matches_muse_code_one_item_at_a_time(tiny_task, which):
    """The batched harness against tests/muse_reference.py (MUSE's evaluation code, one prompt at
    a time, rewritten): VerbMem and KnowMem to 0.1 point, the PrivLeak AUC to 1e-3."""
    from harness.modeling import load_model, load_tokenizer
    from tasks.evaluate import load_task_data, raw_metrics
    from tests import muse_reference as muse

    data = load_task_data(tiny_task.dataset)
    tok = load_tokenizer(tiny_task.tokenizer_path)
    model = load_model(tiny_task.model_path(which), device="cpu")
    raw = raw_metrics(model, tok, tiny_task)
    assert raw["verbmem_f"] == pytest.approx(muse.verbmem(model, tok, list(data.verbmem)), abs=0.1)
    assert raw["knowmem_f"] == pytest.approx(muse.knowmem(model, tok, list(data.forget_qa), list(data.forget_icl)), abs=0.1)
    assert raw["knowmem_r"] == pytest.approx(muse.knowmem(model, tok, list(data.retain_qa), list(data.retain_icl)), abs=0.1)
    auc = muse.privleak_auc(model, tok, list(data.privleak_forget), list(data.privleak_holdout))
    assert raw["privleak_auc"] == pytest.approx(auc, abs=1e-3)
