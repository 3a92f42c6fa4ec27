"""Properties of the tokenizer over arbitrary input (hypothesis), plus an optional live
comparison with tiktoken when it is installed (the fixture tests check the same without it)."""

import hashlib
import importlib.resources
import os
import shutil
import tempfile

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2np import Tokenizer
from gpt2np.tokenizer import (
    ASCII_PATTERN,
    OPENAI_PATTERN,
    _NEWER_THAN_UNICODE_16,
    _chunks,
    _pretokenizers,
    bpe_merge,
    pretokenize,
)

TOK = Tokenizer.gpt2()
NEWER = regex.compile(f"[{_NEWER_THAN_UNICODE_16}]")

# Text without lone surrogates (they are not UTF-8 and cannot round-trip).
text_strategy = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
# Text biased towards what the pattern distinguishes: letters, digits, spaces, apostrophes.
shaped_text = st.text(
    st.one_of(
        st.sampled_from(list("aZs'tdlmvre 0 9\t\n\r\x0b\x0c\u00a0\u3000.!🤖é東\u0301")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=80,
)
# Ids biased towards the single-byte tokens >= 0x80, which make broken UTF-8 when mixed.
HIGH_BYTE_IDS = [i for i in range(256) if TOK.token_bytes(i)[0] >= 0x80]
id_strategy = st.lists(
    st.one_of(st.integers(0, TOK.n_vocab - 1), st.sampled_from(HIGH_BYTE_IDS)), max_size=40
)

quick = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(text_strategy)
def test_round_trip(text):
    assert TOK.decode(TOK.encode_ordinary(text)) == text


@quick
@given(shaped_text)
def test_round_trip_shaped(text):
    ids = TOK.encode(text, disallowed_special=())
    assert TOK.decode(ids) == text
    assert all(0 <= i < TOK.n_vocab for i in ids)


@quick
@given(id_strategy)
def test_incremental_decoder_equals_decode(ids):
    want = TOK.decode(ids)
    dec = TOK.incremental_decoder()
    so_far = ""
    for i in ids:
        so_far += dec.feed(i)
        assert want.startswith(so_far)  # never emits something decode would not
    assert so_far + dec.flush() == want


@quick
@given(text_strategy)
def test_incremental_decoder_never_breaks_a_character(text):
    dec = TOK.incremental_decoder()
    parts = [dec.feed(i) for i in TOK.encode_ordinary(text)]
    assert all("\ufffd" not in p for p in parts) or "\ufffd" in text
    assert "".join(parts) + dec.flush() == text


@quick
@given(shaped_text)
def test_explain_agrees_with_encode(text):
    ex = TOK.explain(text, disallowed_special=())
    assert ex.ids == TOK.encode_ordinary(text)
    assert "".join(p.text for p in ex.pieces) == text
    for piece in ex.pieces:
        symbols = list(piece.stand_ins)
        for merge in piece.merges:  # replaying the recorded merges reproduces each step
            a, b = merge.pair
            k = next(k for k in range(len(symbols) - 1)
                     if symbols[k] == a and symbols[k + 1] == b and tuple(symbols[:k] + [a + b] + symbols[k + 2:]) == merge.symbols)
            symbols[k:k + 2] = [a + b]
        assert "".join(symbols) == piece.stand_ins


@quick
@given(st.text(st.characters(max_codepoint=127), max_size=120))
def test_ascii_fast_path_splits_like_the_full_pattern(text):
    general, ascii_only = _pretokenizers()
    assert ascii_only(text) == general(text)
    assert regex.findall(ASCII_PATTERN, text) == general(text)  # the Python 3.10 fallback


@quick
@given(st.text(st.sampled_from(list("ab1 .\n\n\t\r\u00a0é東'")), max_size=120), st.integers(0, 8))
def test_cutting_before_newlines_keeps_the_pieces(text, size):
    general, ascii_only = _pretokenizers()
    chunks = list(_chunks(text, size))
    assert "".join(chunks) == text
    assert [p for c in chunks for p in general(c)] == general(text)
    assert [p for c in chunks for p in (ascii_only(c) if c.isascii() else general(c))] == general(text)


@quick
@given(shaped_text)
def test_tiktoken_pattern_splits_like_openais(text):
    """OpenAI's original pattern and tiktoken's faster form agree (outside Unicode > 16.0)."""
    if NEWER.search(text):
        return
    assert regex.findall(OPENAI_PATTERN, text) == pretokenize(text)


def _read_merges():
    """vocab.bpe as OpenAI's encoder.py reads it: pair of stand-in strings -> rank (line order)."""
    text = (importlib.resources.files("gpt2np") / "assets" / "vocab.bpe").read_text(encoding="utf-8")
    return {tuple(line.split()): rank for rank, line in enumerate(text.split("\n")[1:-1])}


MERGES = _read_merges()


def _stand_ins() -> dict[int, str]:
    """docs/formats.md §9.1: printable bytes stand for themselves, the other 68 become U+0100 + n."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(0x100 + n) for n, b in enumerate(others)}}


STAND_IN = _stand_ins()


def _openai_bpe(piece: str) -> list[str]:
    """The merge loop of OpenAI's encoder.py (docs/formats.md §9.3), written independently: rank
    *pairs* by their vocab.bpe line, join every occurrence of the best pair left to right."""
    word = [STAND_IN[b] for b in piece.encode("utf-8")]
    while len(word) > 1:
        pairs = {p for p in zip(word, word[1:]) if p in MERGES}
        if not pairs:
            break
        best = min(pairs, key=MERGES.get)
        out, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = out
    return word


@quick
@given(st.text(st.sampled_from(list("abcdefghijklmnopqrstuvwxyz eETtHhiIoOnN'é東🤖")), min_size=1, max_size=40))
def test_heap_merges_equal_openais_loop(text):
    """The heap over a linked list (tiktoken's rule: rank a pair by the token it forms) gives
    the same tokens as OpenAI's pair-ranked loop."""
    data = text.encode()
    got = bpe_merge([data[i:i + 1] for i in range(len(data))], TOK._vocab.ranks)
    assert ["".join(STAND_IN[b] for b in t) for t in got] == _openai_bpe(text)


def test_every_token_merges_to_itself():
    """BPE on a token's own bytes gives that token back, so looking a whole piece up in the
    vocabulary (the fast path, as tiktoken does) never changes an answer."""
    ranks, bytes_to_id = TOK._vocab.ranks, TOK._vocab.bytes_to_id
    for token_id in range(TOK.n_vocab):
        data = TOK.token_bytes(token_id)
        if token_id == TOK.eot_token:
            continue
        merged = bpe_merge([data[i:i + 1] for i in range(len(data))], ranks)
        assert [bytes_to_id[t] for t in merged] == [token_id], (token_id, data)


# -- optional: tiktoken itself ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    cache = tempfile.mkdtemp(prefix="gpt2np-tiktoken-")
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    assets = importlib.resources.files("gpt2np") / "assets"
    for name in ("vocab.bpe", "encoder.json"):
        url = f"https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{name}"
        with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), "wb") as f:
            f.write((assets / name).read_bytes())
    try:
        yield tiktoken.get_encoding("gpt2")
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
        shutil.rmtree(cache, ignore_errors=True)  # leave nothing behind in /tmp


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=100))
def test_live_tiktoken_agrees(tiktoken_gpt2, text):
    assert TOK.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert TOK.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")
