"""GPT-2's zero-shot tasks: prompt construction, output cutting, example files, end to end."""

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from gpt2np import GenerationSettings, Tokenizer, tasks

from helpers import Scripted


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.gpt2()


def test_summary_prompt():
    assert tasks.summary_prompt("An article.\n\n") == "An article.\nTL;DR:"
    with pytest.raises(ValueError, match="article"):
        tasks.summary_prompt("  ")


def test_translation_prompt():
    prompt = tasks.translation_prompt(" Good morning. ", examples=[("Yes", "Oui"), ("No.", "Non.")])
    assert prompt == "Yes = Oui\nNo. = Non.\nGood morning. ="
    default = tasks.translation_prompt("Hi")
    assert default.count("\n") == len(tasks.TRANSLATION_EXAMPLES)
    assert default.startswith("The cat is sleeping on the chair. = Le chat dort sur la chaise.\n")
    with pytest.raises(ValueError, match="item 0"):
        tasks.translation_prompt("Hi", examples=["not a pair"])
    with pytest.raises(ValueError, match="newline"):
        tasks.translation_prompt("Hi", examples=[("a\nb", "c")])


def test_qa_prompt():
    prompt = tasks.qa_prompt("Who?", document="Some text.\n", examples=[("Q1?", "A1")])
    assert prompt == "Some text.\n\nQ: Q1?\nA: A1\n\nQ: Who?\nA:"
    assert tasks.qa_prompt("Who?", examples=[]) == "Q: Who?\nA:"
    assert tasks.qa_prompt("Who?").startswith("Q: What is the capital of France?\nA: Paris\n\n")


@pytest.mark.parametrize(
    "text, n, want",
    [
        (" One. Two! Three? Four.", 3, "One. Two! Three?"),
        (" One. Two", 3, "One."),
        (" no end at all", 3, "no end at all"),
        (' He said "Stop." Then... left. 3.5 is a number. x', 3, 'He said "Stop." Then... left.'),
        ("A. B.", 1, "A."),
    ],
)
def test_first_sentences(text, n, want):
    assert tasks.first_sentences(text, n) == want


def test_first_line():
    assert tasks.first_line(" Le chat.\nThe dog = Le chien") == "Le chat."
    assert tasks.first_line("\nanything") == ""


def test_load_pairs(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("# English\tFrench\nHello\tBonjour\n\nThanks\tMerci\n", encoding="utf-8")
    assert tasks.load_pairs(tsv) == [("Hello", "Bonjour"), ("Thanks", "Merci")]
    js = tmp_path / "pairs.json"
    js.write_text(json.dumps([["Q?", "A"], {"q": "Q2?", "a": "A2"}]), encoding="utf-8")
    assert tasks.load_pairs(js) == [("Q?", "A"), ("Q2?", "A2")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one part\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected two tab-separated parts"):
        tasks.load_pairs(bad)
    badjs = tmp_path / "bad.json"
    badjs.write_text('[["a", "b", "c"]]', encoding="utf-8")
    with pytest.raises(ValueError, match="item 0 is not a pair"):
        tasks.load_pairs(badjs)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no example pairs"):
        tasks.load_pairs(empty)


def test_summarize_end_to_end(tok):
    model = Scripted(tok.encode(" The cat sat. It was happy! Then it left. And more text"))
    out = tasks.summarize(model, tok, "A long article about a cat.", seed=0)
    assert out == "The cat sat. It was happy! Then it left."
    assert model.prompts == [tok.encode("A long article about a cat.\nTL;DR:")]


def test_translate_end_to_end(tok):
    model = Scripted(tok.encode(" Le chien dort.\nThe house = La maison"))
    out = tasks.translate(model, tok, "The dog sleeps.", examples=[("Yes", "Oui")])
    assert out == "Le chien dort."
    assert model.prompts == [tok.encode("Yes = Oui\nThe dog sleeps. =")]
    assert model.calls == len(tok.encode(" Le chien dort.\n"))  # stopped at the newline


def test_answer_end_to_end(tok):
    model = Scripted(tok.encode(" Ada Lovelace\n\nQ: next"))
    out = tasks.answer(model, tok, "Who wrote the first program?", document="History of computing.")
    assert out == "Ada Lovelace"
    assert model.prompts == [tok.encode(tasks.qa_prompt("Who wrote the first program?", "History of computing."))]


def test_continue_text(tok):
    model = Scripted(tok.encode(" and so on"))
    assert tasks.continue_text(model, tok, "Once upon a time", max_new_tokens=10) == " and so on"


def test_continue_text_takes_settings_and_uses_no_deprecated_name(tok):
    ids = tok.encode(" and so on and on")
    settings = GenerationSettings(max_new_tokens=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert tasks.continue_text(Scripted(ids), tok, "x", settings=settings) == tok.decode(ids[:3])
        assert tasks.continue_text(Scripted(ids), tok, "x", 2, settings=settings) == tok.decode(ids[:2])
        assert tasks.translate(Scripted(tok.encode(" Oui\n")), tok, "Yes") == "Oui"


def test_summarize_samples_from_the_top_2(tok):
    """Three tokens nearly tied at the top: top-k 2 sampling only ever picks the first two."""
    a, b, c = tok.encode(" a")[0], tok.encode(" b")[0], tok.encode(" c")[0]

    class Constant:
        config = SimpleNamespace(n_vocab=50257, n_ctx=1024)

        def new_cache(self, batch_size=1, max_len=None):
            return SimpleNamespace(length=0)

        def __call__(self, ids, attention_mask=None, cache=None, last_only=False):
            logits = np.zeros((np.asarray(ids).shape[0], 50257), dtype=np.float32)
            logits[:, [a, b, c]] = [5.0, 4.9, 4.8]
            return logits

    out = tasks.summarize(Constant(), tok, "An article.", seed=1)
    words = out.split()
    assert len(words) == 100 and set(words) == {"a", "b"}
