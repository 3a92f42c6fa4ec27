"""Long runs of one character: the same ids as tiktoken, in bounded time and memory.

A run of one character is one piece ("aaaa..." matches ``\\p{L}++``), so BPE runs on all of
it at once; the heap merge kept five Python objects per byte (10 MB of "a": 54 s, 2.3 GB).

The expected ids below were made by tiktoken 0.14.0 (encoding "gpt2", ``encode_ordinary``),
an independent implementation, with ``scripts/make_tokenizer_fixture.py``'s offline loader::

    ids = enc.encode_ordinary(text)
    len(ids), ids[:3], ids[-3:], sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]
"""

from __future__ import annotations

import hashlib
import random
import time
import tracemalloc

import pytest

from gpt2np import Tokenizer
from gpt2np.tokenizer import _long_piece_bpe, bpe_merge

TOK = Tokenizer.gpt2()

TIKTOKEN = [  # (runs of (character, count), number of ids, first 3, last 3, sha256 prefix)
    ([("a", 1000003)], 250001, [24794, 24794, 24794], [24794, 24794, 46071], "26b34cde0645bff5"),
    ([("a", 1000)], 250, [24794, 24794, 24794], [24794, 24794, 24794], "ed6cff0b54b0e149"),
    ([("a", 1001)], 251, [24794, 24794, 24794], [24794, 24794, 64], "2b63ce2194d97456"),
    ([("a", 1002)], 251, [24794, 24794, 24794], [24794, 24794, 7252], "a97e8e6e881770f2"),
    ([("a", 1003)], 251, [24794, 24794, 24794], [24794, 24794, 46071], "e4de6e1f9a873e8c"),
    ([("!", 1000001)], 125001, [34635, 34635, 34635], [34635, 13896, 50184], "8e0d0f9e60ae2e69"),
    ([("!", 1000)], 125, [34635, 34635, 34635], [34635, 34635, 34635], "9a4389da3b1c4fd7"),
    ([("!", 1001)], 126, [34635, 34635, 34635], [34635, 13896, 50184], "a6ea5375692389cd"),
    ([("!", 1002)], 126, [34635, 34635, 34635], [34635, 34635, 3228], "cafd68d806098749"),
    ([("!", 1003)], 126, [34635, 34635, 34635], [34635, 34635, 10185], "570f113431f3619b"),
    ([("!", 1004)], 126, [34635, 34635, 34635], [34635, 34635, 13896], "e62fc956ee3ca4b2"),
    ([("!", 1005)], 126, [34635, 34635, 34635], [34635, 34635, 50184], "3c7b930be9c609da"),
    ([("!", 1006)], 127, [34635, 34635, 34635], [34635, 13896, 3228], "6c5cd02886d3214e"),
    ([("!", 1007)], 127, [34635, 34635, 34635], [34635, 13896, 10185], "8a4a5b7866614bfc"),
    ([("0", 300007)], 18751, [25645, 25645, 25645], [25645, 25645, 24598], "6df2d60f1fa00f26"),
    ([("0", 1000)], 63, [25645, 25645, 25645], [25645, 25645, 8269], "9f9ddbd3f76fd8f2"),
    ([("0", 1001)], 64, [25645, 25645, 25645], [25645, 10535, 830], "e24554d82403c3d9"),
    ([("0", 1009)], 65, [25645, 25645, 25645], [8269, 10535, 830], "2e9e37fc47a265d9"),
    ([("0", 1015)], 64, [25645, 25645, 25645], [25645, 25645, 24598], "998efed8cff84561"),
    ([("x", 100013)], 12503, [24223, 24223, 24223], [24223, 12343, 87], "24e72c3e364c76ee"),
    ([("\n", 100001)], 50001, [628, 628, 628], [628, 628, 198], "d9cca656f4ecfc8c"),
    ([(" ", 100001)], 100001, [220, 220, 220], [220, 220, 220], "7ad632f327c57e76"),
    ([("é", 500001)], 500001, [2634, 2634, 2634], [2634, 2634, 2634], "ce6674dd1af2f27d"),
    ([("一", 100000)], 100000, [31660, 31660, 31660], [31660, 31660, 31660], "69b463a3ce20d486"),
    ([("🤖", 50001)], 150003, [8582, 97, 244], [8582, 97, 244], "8b133753861a97df"),
    ([("…", 2001)], 251, [29146, 29146, 29146], [29146, 29146, 1399], "b0b9d9acb94e2427"),
    ([(" ", 1), ("a", 200001)], 50001, [257, 24794, 24794], [24794, 24794, 24794], "4ff157cb6cb2815d"),
    ([("b", 1), ("a", 200002), ("c", 1)], 50002, [7012, 24794, 24794], [24794, 24794, 330], "30ccd91cb67705e4"),
    ([("a", 500), ("b", 501), ("a", 502)], 502, [24794, 24794, 24794], [24794, 24794, 64], "e323ba69ae127748"),
    ([("a", 100000), ("é", 100001)], 125001, [24794, 24794, 24794], [2634, 2634, 2634], "537d57a7ac4696b1"),
    ([("Z", 3), ("z", 100003)], 50004, [30148, 57, 3019], [3019, 3019, 89], "7158528943814e20"),
    ([("=", 100005)], 1565, [23926, 23926, 23926], [10052, 1421, 28], "cc92c1a3641d86f3"),
    ([("-", 100006)], 1564, [10097, 10097, 10097], [10097, 3880, 23031], "c1429c9b59ad4620"),
    ([(".", 100007)], 1564, [23193, 23193, 23193], [23193, 8864, 25780], "0fefd5559042fb0f"),
    ([("é", 3), ("a", 100001), ("é", 100002), ("b", 2)], 125007, [2634, 2634, 2634], [2634, 2634, 11848],
     "ea37609bdfb733e5"),
    ([("\t", 50001)], 50001, [197, 197, 197], [197, 197, 197], "f0739854ab8df5d6"),
    ([("?", 70001)], 8751, [35709, 35709, 35709], [35709, 9805, 19622], "0db2b2a50c20be0c"),
    # characters of several bytes whose repeats make tokens across characters ("……", "──", ...)
    ([("…", 100001)], 12501, [29146, 29146, 29146], [29146, 29146, 1399], "1a5d30d747052c59"),
    ([("─", 100003)], 12502, [28542, 28542, 28542], [28542, 8418, 7280], "40ce0d050c0656c0"),
    ([("—", 50001)], 3126, [30542, 30542, 30542], [30542, 30542, 960], "0fe65e0498c0ed6f"),
    ([("═", 30001)], 15001, [31732, 31732, 31732], [31732, 31732, 28670], "00d3afd9a054cce8"),
    ([("ー", 30002)], 30002, [6312, 6312, 6312], [6312, 6312, 6312], "edde1d11a7a0dfdf"),
    ([("•", 30001)], 7501, [39967, 39967, 39967], [39967, 39967, 3581], "b29536a469aa0b5c"),
    ([("·", 20003)], 10002, [35147, 35147, 35147], [35147, 35147, 9129], "361f845a9c71109f"),
    ([("★", 20001)], 10001, [28353, 28353, 28353], [28353, 28353, 15583], "2398e30e80cb1dcf"),
    ([("–", 20002)], 10001, [25608, 25608, 25608], [25608, 25608, 25608], "3f0858bdf712d1ff"),
    ([("x", 7), ("─", 5000), ("é", 3000), (" ", 1), ("—", 4001)], 3878, [12343, 31811, 28542], [30542, 30542, 30542],
     "a71a978b7cec47c9"),
    ([("-", 3), ("—", 10001), ("-", 7)], 628, [6329, 30542, 30542], [30542, 960, 26866], "a958161db102909f"),
]


def _text(runs) -> str:
    return "".join(c * n for c, n in runs)


@pytest.mark.parametrize("runs, n_ids, head, tail, digest", TIKTOKEN,
                         ids=["+".join(f"{c!r}x{n}" for c, n in t[0]) for t in TIKTOKEN])
def test_same_ids_as_tiktoken(runs, n_ids, head, tail, digest):
    ids = TOK.encode_ordinary(_text(runs))
    assert (len(ids), ids[:3], ids[-3:]) == (n_ids, head, tail)
    assert hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16] == digest


def test_memory_is_a_few_bytes_per_character():
    """The heap merge held ~200 bytes per byte of the piece (10 MB of "a": 2.3 GB)."""
    n = 400_000
    text = "a" * n
    tok = Tokenizer.gpt2()  # a fresh piece table: nothing remembered from other tests
    tracemalloc.start()
    try:
        ids = tok.encode_ordinary(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ids) == n // 4
    assert peak < 16 * n, f"peak {peak / 1e6:.1f} MB for {n / 1e6:.1f} MB of 'a' (expected under 16 bytes each)"


def test_time_is_linear_not_per_merge():
    """2 MB of one character: the heap merge took ~5.5 s here; tiktoken takes ~0.7 s."""
    tok = Tokenizer.gpt2()
    for ch in "a!─":
        text = ch * (2_000_000 // len(ch.encode()))
        start = time.perf_counter()
        tok.encode_ordinary(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{elapsed:.1f} s for 2 MB of {ch!r}"


def test_a_long_piece_is_not_remembered():
    """The piece table remembers short pieces only: a 1 MB key would stay until evicted."""
    tok = Tokenizer.gpt2()
    tok.encode_ordinary("b" * 100_000)
    assert not [p for p in tok._pieces.remembered if len(p) > 10_000]


# ---- the long-piece algorithm against the plain heap merge --------------------------------

def _flat(chunks):
    return [t for tokens, repeat in chunks for _ in range(repeat) for t in tokens]


def _heap(data: bytes, ranks) -> list[bytes]:
    return bpe_merge([data[i:i + 1] for i in range(len(data))], ranks)


def _random_runs(rng, alphabet, n_runs, max_len):
    return "".join(rng.choice(alphabet) * rng.randint(1, max_len) for _ in range(n_runs))


def test_matches_the_heap_merge_on_run_shaped_text_with_the_gpt2_vocabulary():
    """Pieces made of runs (and runs of multi-byte characters) of every kind of symbol the
    pattern keeps together: letters, digits, punctuation, spaces."""
    rng = random.Random(15)
    ranks = TOK._vocab.ranks
    for alphabet in ("ab", "aZ", "a", "é", "aé", "!?", "!.=-", "0", "09", " \n", "…", "一é"):
        for _ in range(12):
            piece = _random_runs(rng, alphabet, rng.randint(1, 6), rng.choice([3, 40, 400]))
            data = piece.encode()
            assert _flat(_long_piece_bpe(piece, data, ranks)) == _heap(data, ranks), piece[:40]


def _random_vocab(rng, sources: list[bytes], n: int) -> dict:
    """Random ranks for ``n`` random stretches (2 to 9 bytes, any offset) of the ``sources``, in no
    particular order: a rank table need not grow by merges, so the sweeps must fall back whenever
    their conditions fail (e.g. ``aaaa`` ranked before ``aa``, or a token across two characters
    ranked before the character)."""
    ranks = {}
    while len(ranks) < n:
        src = rng.choice(sources) * 10
        k = rng.randint(2, 9)
        i = rng.randrange(len(src) - k)
        ranks.setdefault(src[i:i + k], len(ranks))
    order = list(ranks)
    rng.shuffle(order)
    return {t: i for i, t in enumerate(order)}


def test_matches_the_heap_merge_with_random_rank_tables():
    rng = random.Random(1515)
    for trial in range(300):
        alphabet = "ab" if trial % 3 else "a"
        ranks = _random_vocab(rng, [b"a", b"b", b"ab", b"aab", b"abb"], rng.choice([3, 8, 30]))
        piece = _random_runs(rng, alphabet, rng.randint(1, 5), rng.choice([5, 60, 700]))
        data = piece.encode()
        assert _flat(_long_piece_bpe(piece, data, ranks)) == _heap(data, ranks), (piece[:40], ranks)


def test_multi_byte_runs_with_random_rank_tables():
    """Runs of 2- and 3-byte characters, with tokens inside a character, across two, or both."""
    rng = random.Random(99)
    chars = "éè…"
    sources = [c.encode() for c in chars] + [b"".join(c.encode() for c in pair) for pair in ("éè", "è…", "…é")]
    for trial in range(300):
        ranks = _random_vocab(rng, sources, rng.choice([2, 6, 20, 60]))
        if trial % 2:  # make sure character-sized tokens exist
            for c in chars:
                ranks.setdefault(c.encode(), len(ranks))
        piece = _random_runs(rng, chars[:rng.randint(1, 3)], rng.randint(1, 4), rng.choice([5, 200, 900]))
        data = piece.encode()
        assert _flat(_long_piece_bpe(piece, data, ranks)) == _heap(data, ranks), (piece[:20], ranks)
