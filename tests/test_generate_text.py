"""Text in, text out: streaming (UTF-8 safe), stop strings, the empty prompt, batches of prompts.

Most tests use a scripted stand-in for the model (same call signature as GPT2): its next
token is always the next id of a fixed script, so the expected text is simply
``tokenizer.decode(script)`` cut at the first stop string, an independent computation.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gpt2np
from gpt2np import GPT2, Config, Tokenizer, sampling
from gpt2np.generation import GenerationSettings, generate_text

from helpers import Scripted

EOT = 50256


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.gpt2()


TEXT = "Hello wörld! The robot 🤖 said: ñandú — ok. STOP and more text after it."


def test_the_script_splits_characters_across_tokens(tok):
    ids = tok.encode(TEXT)
    broken = [i for i in ids if not _valid_utf8(tok.decode_bytes([i]))]
    assert broken, "the test text should contain tokens that are only part of a character"


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_the_stop_string_complete_first_wins(tok):
    # "bc" is complete before "abcd" is, even when one token brings both
    for text in ["xabcdy", "x abcd y"]:
        ids = tok.encode(text)
        got = generate_text(Scripted(ids), tok, "x", max_new_tokens=20, stop=["abcd", "bc"])
        assert got == text[: text.index("bc")]


def test_whole_text_and_stream_agree(tok):
    ids = tok.encode(TEXT)
    whole = generate_text(Scripted(ids), tok, "x", max_new_tokens=100)
    assert whole == tok.decode(ids)  # the script ends with EOT, which is not returned
    pieces = list(generate_text(Scripted(ids), tok, "x", max_new_tokens=100, stream=True))
    assert "".join(pieces) == whole
    assert len(pieces) > 10  # really streamed, piece by piece
    for piece in pieces:
        assert "\ufffd" not in piece  # no character was ever split


def test_stream_pieces_arrive_as_tokens_do(tok):
    ids = tok.encode("one two three")
    model = Scripted(ids)
    stream = generate_text(model, tok, "x", max_new_tokens=100, stream=True)
    assert next(stream) == "one" and model.calls == 1
    assert next(stream) == " two" and model.calls == 2


def test_stop_string_ends_generation_and_is_not_returned(tok):
    ids = tok.encode(TEXT)
    model = Scripted(ids)
    out = generate_text(model, tok, "x", max_new_tokens=100, stop="STOP")
    assert out == TEXT[: TEXT.index("STOP")]
    # the model is not asked for more tokens after the stop string appeared
    stop_token = next(n for n in range(1, len(ids) + 1) if "STOP" in tok.decode(ids[:n]))
    assert model.calls == stop_token


@pytest.mark.parametrize(
    "stop",
    ["STOP", ["zzz", "STOP"], ["robot", "STOP"], "🤖", "ö", "! The", ["ok.", "ok"], "t.", "not there"],
)
def test_stop_strings_streamed_and_whole(tok, stop):
    ids = tok.encode(TEXT)
    stops = [stop] if isinstance(stop, str) else stop
    cut = min([TEXT.index(s) for s in stops if s in TEXT], default=len(TEXT))
    want = TEXT[:cut]
    assert generate_text(Scripted(ids), tok, "x", max_new_tokens=100, stop=stop) == want
    pieces = list(generate_text(Scripted(ids), tok, "x", max_new_tokens=100, stop=stop, stream=True))
    assert "".join(pieces) == want
    # a piece never shows text that belongs to the stop string
    shown = ""
    for piece in pieces:
        shown += piece
        assert want.startswith(shown)


def test_max_new_tokens_cuts_the_text(tok):
    ids = tok.encode(TEXT)
    want = tok.decode(ids[:7])
    assert generate_text(Scripted(ids), tok, "x", max_new_tokens=7) == want
    assert "".join(generate_text(Scripted(ids), tok, "x", max_new_tokens=7, stream=True)) == want


def test_cut_in_the_middle_of_a_character_gives_the_replacement_char(tok):
    ids = tok.encode("🤖")
    assert len(ids) > 1
    want = tok.decode(ids[:1])  # an incomplete character: U+FFFD, as bytes.decode(errors="replace")
    assert "\ufffd" in want
    assert generate_text(Scripted(ids), tok, "x", max_new_tokens=1) == want
    assert "".join(generate_text(Scripted(ids), tok, "x", max_new_tokens=1, stream=True)) == want


def test_empty_prompt_starts_from_endoftext(tok):
    model = Scripted(tok.encode(" hi"))
    assert generate_text(model, tok, "", max_new_tokens=5) == " hi"
    assert model.prompts == [[EOT]]


def test_prompt_encoding(tok):
    model = Scripted([])
    generate_text(model, tok, "a<|endoftext|>b", max_new_tokens=2)
    assert model.prompts == [tok.encode("a<|endoftext|>b", allowed_special="all")]
    assert EOT in model.prompts[0]
    generate_text(model, tok, "a<|endoftext|>b", max_new_tokens=2, special_tokens=False)
    assert model.prompts == [tok.encode_ordinary("a<|endoftext|>b")]
    assert EOT not in model.prompts[0]


def test_errors_come_at_the_call_even_when_streaming(tok):
    model = Scripted([1, 2], n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx"):
        generate_text(model, tok, "one two three four five", max_new_tokens=5, stream=True)
    with pytest.raises(ValueError, match="stop strings"):
        generate_text(model, tok, "x", stop=[""])
    with pytest.raises(ValueError, match="temperature"):
        generate_text(model, tok, "x", temperature=-1, stream=True)
    with pytest.raises(ValueError, match="prompt must be a string"):
        generate_text(model, tok, 123)
    assert model.calls == 0


def test_batch_of_prompts(tok):
    a, b = tok.encode("first answer. STOP x"), tok.encode("second, longer answer")
    model = Scripted(a, b)
    out = generate_text(model, tok, ["short", "a much longer prompt here"], max_new_tokens=50, stop="STOP")
    assert out == ["first answer. ", "second, longer answer"]
    assert model.prompts == [tok.encode("short"), tok.encode("a much longer prompt here")]
    with pytest.raises(ValueError, match="stream"):
        generate_text(model, tok, ["a", "b"], stream=True)


def test_public_name():
    assert gpt2np.generate_text is generate_text
    assert gpt2np.GenerationSettings is GenerationSettings
    assert {"generate_text", "GenerationSettings", "generate"} <= set(gpt2np.__all__)


def test_old_name_generate_warns_and_still_works(tok):
    ids = tok.encode(" old name")
    with pytest.warns(DeprecationWarning, match="use gpt2np.generate_text") as record:
        out = gpt2np.generate(Scripted(ids), tok, "x", max_new_tokens=10)
    assert out == generate_text(Scripted(ids), tok, "x", max_new_tokens=10) == " old name"
    assert record[0].filename == __file__  # the warning points at the caller
    with pytest.warns(DeprecationWarning, match="generate_text"):
        pieces = list(gpt2np.generate(Scripted(ids), tok, "x", max_new_tokens=10, stream=True))
    assert "".join(pieces) == " old name"
    with pytest.warns(DeprecationWarning, match="generate_text"):  # the old module's name too
        assert sampling.generate(Scripted(ids), tok, "x", max_new_tokens=10) == " old name"


def test_settings_object_and_keywords_give_the_same_text(tok):
    model = GPT2.random(Config(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=1), seed=4)
    kw = dict(max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.95, repetition_penalty=1.3, seed=7)
    want = generate_text(model, tok, "Hello", **kw)
    settings = GenerationSettings(**kw)
    assert generate_text(model, tok, "Hello", settings=settings) == want
    assert "".join(generate_text(model, tok, "Hello", stream=True, settings=settings)) == want
    # a keyword given overrides that field of the settings object, and only that one
    other = generate_text(model, tok, "Hello", **{**kw, "seed": 8})
    assert other != want
    assert generate_text(model, tok, "Hello", settings=settings, seed=8) == other
    assert settings.seed == 7  # the object itself is not changed


def test_settings_stop_ids_apply_to_text(tok):
    ids = tok.encode(" one two three")
    two = tok.encode(" two")[0]
    assert generate_text(Scripted(ids), tok, "x", settings=GenerationSettings(stop_ids=(two,))) == " one"
    # without settings the text stops at the tokenizer's <|endoftext|> only
    assert generate_text(Scripted(ids), tok, "x") == " one two three"
    with pytest.raises(ValueError, match="settings must be a GenerationSettings"):
        generate_text(Scripted(ids), tok, "x", settings={"temperature": 1.0})


def test_non_finite_logits_are_an_error_not_text(tok):
    """+inf logits used to pass the NaN check: greedy printed the inf token ("!!!!!"), sampling
    drew <|endoftext|> from NaN probabilities and returned ""."""

    class Inf(Scripted):
        def __call__(self, *args, **kwargs):
            logits = super().__call__(*args, **kwargs)
            logits[:, 0] = np.inf  # token 0 is "!"
            return logits

    for kw in [{}, {"temperature": 1.0, "seed": 0}]:
        with pytest.raises(ValueError, match=r"\+inf logits at step 0"):
            generate_text(Inf(tok.encode(" text")), tok, "x", max_new_tokens=5, **kw)
        with pytest.raises(ValueError, match=r"\+inf logits at step 0"):
            list(generate_text(Inf(tok.encode(" text")), tok, "x", max_new_tokens=5, stream=True, **kw))


def test_real_tiny_model_stream_equals_whole(tok):
    """A random model over the full GPT-2 vocabulary: its ids are arbitrary (many are parts
    of characters), and the streamed text still equals the decoded whole."""
    model = GPT2.random(Config(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=1), seed=1)
    kw = dict(max_new_tokens=30, temperature=1.0, seed=5)
    whole = generate_text(model, tok, "Hello", **kw)
    assert "".join(generate_text(model, tok, "Hello", stream=True, **kw)) == whole
    ids = gpt2np.generation.generate_ids(model, tok.encode("Hello"), **kw)
    assert whole == tok.decode(ids)
    greedy = generate_text(model, tok, ["Hello", "A longer prompt"], max_new_tokens=8)
    assert greedy == [generate_text(model, tok, p, max_new_tokens=8) for p in ["Hello", "A longer prompt"]]


ALPHABET = st.sampled_from(list("ab .\n") + ["é", "🤖", "ñ", "語"])


@settings(max_examples=60, deadline=None)
@given(text=st.text(ALPHABET, min_size=0, max_size=25), stops=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=3))
def test_stop_strings_property(tok, text, stops):
    """Whatever the text and stop strings: the text up to the stop string that is complete
    first (whatever the tokens), streamed or not; a streamed piece never shows text that is
    later cut."""
    ids = tok.encode(text)
    # read character by character, the text stops as soon as any stop string is complete
    end = next((n for n in range(len(text) + 1) if any(s in text[:n] for s in stops)), None)
    want = text if end is None else text[: min(text[:end].find(s) for s in stops if s in text[:end])]
    assert generate_text(Scripted(ids), tok, "x", max_new_tokens=60, stop=stops or None) == want
    shown = ""
    for piece in generate_text(Scripted(ids), tok, "x", max_new_tokens=60, stop=stops or None, stream=True):
        assert piece
        shown += piece
        assert want.startswith(shown)
    assert shown == want
