"""Byte-level BPE: GPT-2's tokenizer, byte-exact with tiktoken's ``gpt2`` encoding.

The path of a string through ``encode``::

    text ──special tokens split out (if allowed)──▶ segments
    segment ──PRETOKENIZE_PATTERN──▶ pieces          "Hello world!" -> "Hello", " world", "!"
    piece ──UTF-8──▶ bytes ──BPE merges──▶ tokens     b" world" -> [b" world"]
    token ──vocabulary──▶ id                          b" world" -> 995

BPE on one piece starts from its single bytes and repeatedly joins the adjacent pair whose
joined bytes form the *oldest* token of the vocabulary (the lowest rank: the line of
``vocab.bpe`` that created it; the leftmost pair wins a tie) until no adjacent pair forms a
token.  Like tiktoken, a pair is ranked by the token its concatenation forms, and a piece that
is already a whole token is looked up directly.

``vocab.bpe`` and ``encoder.json`` spell bytes as printable characters ("stand-ins", see
``bytes_to_unicode``) so that a space is ``Ġ`` and a newline ``Ċ``.  Internally this module
works on raw ``bytes`` and uses the stand-ins only to read the files and to show its work
(``Tokenizer.explain``).

``decode`` joins the tokens' bytes and decodes them as UTF-8, replacing invalid bytes with
U+FFFD; ``Tokenizer.incremental_decoder`` does the same one token at a time for streaming.
"""

from __future__ import annotations

import codecs
import collections
import functools
import itertools
import heapq
import importlib.resources
import json
import operator
import os
import re
import sys
from dataclasses import dataclass, field
from typing import AbstractSet, Collection, Iterable, Literal

import regex

__all__ = [
    "Tokenizer",
    "IncrementalDecoder",
    "Explanation",
    "PieceExplanation",
    "Merge",
    "bytes_to_unicode",
    "bpe_merge",
    "PRETOKENIZE_PATTERN",
    "ASCII_PATTERN",
    "compile_pretokenizer",
    "pretokenize",
    "to_stand_ins",
    "from_stand_ins",
    "OPENAI_PATTERN",
    "ENDOFTEXT",
]

ENDOFTEXT = "<|endoftext|>"

#: OpenAI's pre-tokenizing pattern as written in gpt-2's ``encoder.py``: contractions,
#: letter runs, digit runs and runs of other symbols (each with at most one leading space),
#: then whitespace, leaving the last space of a run for the next word.
OPENAI_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: The same splits written as tiktoken writes them (possessive ``++`` never backtracks, and
#: ``\s++$`` takes trailing whitespace in one step); this is the pattern ``encode`` runs.
#: ``\s`` means the same in the ``regex`` module and in tiktoken (Unicode White_Space).
PRETOKENIZE_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

#: Letters (\p{L}) and digits (\p{N}) that Unicode assigned after version 16.0, whose tables
#: tiktoken's Rust regex engine uses.  A newer ``regex`` module knows them as letters, which
#: would split text differently from tiktoken, so the compiled pattern treats them as "other"
#: symbols (found by comparing the two on every code point; a no-op for an older ``regex``).
_NEWER_THAN_UNICODE_16 = (
    r"\u0558\u058B-\u058C\u088F\u0C5C\u0CDC\u208F\u209D-\u209F\uA7CE-\uA7CF\uA7D2\uA7D4\uA7DD"
    r"\uA7E2\uA7F1\uAB6C-\uAB6D\U000107BB-\U000107BF\U00010940-\U00010959\U00010EC5-\U00010EC7"
    r"\U00010ED9-\U00010EEE\U00011B0A\U00011DB0-\U00011DDB\U00011DE0-\U00011DE9\U00011DF1"
    r"\U0001246F\U00012475-\U0001247F\U00012550-\U00012686\U00016EA0-\U00016EB8"
    r"\U00016EBB-\U00016ED3\U00016FF2-\U00016FF6\U000187F8-\U000187FF\U00018CD6-\U00018CDA"
    r"\U00018D09-\U00018D20\U00018D80-\U00018DF2\U00018E00-\U00019191\U000191A0-\U000191D2"
    r"\U0001B123-\U0001B128\U0001B168\U0001D6A6\U0001DF1F-\U0001DF24\U0001DF2B-\U0001DF81"
    r"\U0001DF90-\U0001DF96\U0001DFCD-\U0001DFFF\U0001E6C0-\U0001E6DE\U0001E6E0-\U0001E6E2"
    r"\U0001E6E4-\U0001E6E5\U0001E6E7-\U0001E6ED\U0001E6F0-\U0001E6F4\U0001E6FE-\U0001E6FF"
    r"\U0002B73A-\U0002B73F\U0002B81E\U0002CEA2-\U0002CEAD\U000323B0-\U00033479"
    r"\U0003D000-\U0003FC3F"
)


def compile_pretokenizer(pattern: str = PRETOKENIZE_PATTERN) -> regex.Pattern:
    """Compile a pre-tokenizing pattern with ``\\p{L}``/``\\p{N}`` pinned to Unicode 16.0.

    ``regex``'s VERSION1 set syntax subtracts the newer characters, ``[\\p{L}--[...]]``.  The
    ASCII letters and digits are listed first only for speed: most text is mostly ASCII, and
    they are tested before the long list of exceptions.
    """
    newer = _NEWER_THAN_UNICODE_16
    other = "\0"  # a placeholder, so that the two replacements below leave this class alone
    pinned = (
        pattern.replace(r"[^\s\p{L}\p{N}]", other)
        .replace(r"\p{L}", rf"[A-Za-z[\p{{L}}--[{newer}]]]")
        .replace(r"\p{N}", rf"[0-9[\p{{N}}--[{newer}]]]")
        .replace(other, rf"[[^\s\p{{L}}\p{{N}}]{newer}]")
    )
    return regex.compile(pinned, flags=regex.VERSION1)


#: ``PRETOKENIZE_PATTERN`` for text that is pure ASCII, where ``\p{L}`` is ``[A-Za-z]``,
#: ``\p{N}`` is ``[0-9]`` and ``\s`` is ``[\t\n\v\f\r ]``.  Python's own ``re`` (3.11+, which
#: knows possessive quantifiers) runs it about 3x faster than ``regex`` runs the full pattern.
ASCII_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^\t\n\v\f\r A-Za-z0-9]++"""
    r"""|[\t\n\v\f\r ]++$|[\t\n\v\f\r ]+(?![^\t\n\v\f\r ])|[\t\n\v\f\r ]"""
)


@functools.lru_cache(maxsize=1)
def _pretokenizers():
    """(splitter for any text, splitter for ASCII text): compiled once, shared."""
    general = compile_pretokenizer(PRETOKENIZE_PATTERN).findall
    if sys.version_info >= (3, 11):
        ascii_only = re.compile(ASCII_PATTERN).findall
    else:  # no possessive quantifiers in re before 3.11
        ascii_only = regex.compile(ASCII_PATTERN).findall
    return general, ascii_only


def pretokenize(text: str) -> list[str]:
    """Split text into the pieces that BPE works on one by one (no piece crosses a split).

    >>> pretokenize("Hello world!  It's 2024.")
    ['Hello', ' world', '!', ' ', ' It', "'s", ' 2024', '.']
    """
    general, ascii_only = _pretokenizers()
    if text.isascii():
        return ascii_only(text)
    pieces: list[str] = []
    for chunk in _chunks(text):
        pieces += ascii_only(chunk) if chunk.isascii() else general(chunk)
    return pieces


def _chunks(text: str, size: int = 1024):
    """Cut text, about every ``size`` characters, just before a newline that follows a
    non-space character.  No piece spans such a point (pieces end before whitespace unless
    they are whitespace), and the pattern reads each side alone exactly as it reads them
    together, so the pieces of the chunks are the pieces of the text.  This lets the ASCII
    fast path take the ASCII parts of mostly-ASCII text."""
    start = 0
    while True:
        cut = text.find("\n", start + max(size, 1))
        while cut > 0 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut < 0:
            yield text[start:]
            return
        yield text[start:cut]
        start = cut


_CACHE_SIZE = 50_000  # pieces whose BPE result is remembered (a bounded, first-in-first-out cache)


# --------------------------------------------------------------------------------------------
# Bytes and their printable stand-ins
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> stand-in character map of GPT-2's vocabulary files (formats.md 5.6).

    The 188 printable bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves;
    the other 68 (control bytes, space, 0x7F..0xA0, 0xAD) become U+0100 + n in increasing
    order, so a space (0x20) is ``Ġ`` (U+0120) and ``\\n`` is ``Ċ`` (U+010A).  Every byte
    thus has a visible, distinct character, and a token is a plain string of them.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(0x100 + n) for n, b in enumerate(others)})
    return dict(sorted(mapping.items()))


# str.translate tables: a byte string decoded as latin-1 has one character per byte (code point =
# byte value), so one C-level translate turns bytes into stand-ins and back without a Python loop.
_TO_STAND_IN = {b: c for b, c in bytes_to_unicode().items()}
_FROM_STAND_IN = {ord(c): b for b, c in bytes_to_unicode().items()}


def to_stand_ins(data: bytes) -> str:
    """Bytes -> their stand-in characters: ``b" hi\\n"`` -> ``"ĠhiĊ"``."""
    return data.decode("latin-1").translate(_TO_STAND_IN)


def from_stand_ins(symbols: str) -> bytes:
    """Stand-in characters -> bytes (the inverse of ``to_stand_ins``)."""
    text = symbols.translate(_FROM_STAND_IN)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        bad = next(c for c in symbols if ord(c) not in _FROM_STAND_IN)
        raise ValueError(
            f"{symbols!r} is not a byte-level token: {bad!r} (U+{ord(bad):04X}) is none of "
            "the 256 byte stand-ins"
        ) from None


# --------------------------------------------------------------------------------------------
# The merge loop
# --------------------------------------------------------------------------------------------


def bpe_merge(symbols: list[bytes], ranks: dict[bytes, int], on_merge=None) -> list[bytes]:
    """Byte-pair merges on one piece: join the lowest-ranked adjacent pair until none is ranked.

    ``symbols`` is the piece as single bytes; ``ranks[a + b]`` is the rank of the token that
    joining ``a`` and ``b`` forms (missing = never joined).  Among all adjacent pairs the one
    with the lowest rank is joined first, the leftmost on a tie — the order OpenAI's
    ``encoder.py`` and tiktoken follow.

    Cost O(n log n) for n bytes, not O(n²): the symbols form a linked list (``nxt``/``prv``
    hold neighbour positions), and the candidate pairs wait in a heap keyed by
    ``(rank, position of the left symbol)``.  A joint only changes the two pairs next to it,
    so it pushes at most two new candidates; entries made stale by earlier joins are skipped
    when popped (a pair still at the same position with the same rank is the same pair,
    because a rank names exactly one byte string and boundaries only ever disappear).

    ``on_merge(left, right, rank, position)`` is called after each joint (used by ``explain``).
    Returns the final symbols, left to right.
    """
    n = len(symbols)
    if n < 2:
        return list(symbols)
    sym: list[bytes | None] = list(symbols)  # None once joined into its left neighbour
    nxt = list(range(1, n + 1))  # n marks "no right neighbour"
    prv = list(range(-1, n - 1))  # -1 marks "no left neighbour"
    get, push, pop = ranks.get, heapq.heappush, heapq.heappop
    pair_ranks = map(get, map(operator.add, symbols[:-1], symbols[1:]))
    heap = [(rank, i) for i, rank in enumerate(pair_ranks) if rank is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = pop(heap)
        left = sym[i]
        j = nxt[i]
        if left is None or j == n:
            continue
        right = sym[j]
        joined = left + right
        if get(joined) != rank:  # stale: a neighbour changed since this pair was pushed
            continue
        sym[i], sym[j] = joined, None
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            r = get(joined + sym[k])
            if r is not None:
                push(heap, (r, i))
        p = prv[i]
        if p >= 0:
            r = get(sym[p] + joined)
            if r is not None:
                push(heap, (r, p))
        if on_merge is not None:
            on_merge(left, right, rank, i)
    return [s for s in sym if s is not None]


# --------------------------------------------------------------------------------------------
# Long pieces: runs of one character
# --------------------------------------------------------------------------------------------
#
# A run of one character is a single piece ("aaaa..." is one \p{L}++ match), and the heap merge
# holds a few Python objects per byte of it: 10 MB of "a" took 54 s and 2.3 GB.  For a piece
# longer than ``_LONG_PIECE`` bytes that is mostly long runs of one character, ``_bpe_segments``
# takes exactly the steps ``bpe_merge`` takes, on the piece written as "segments": a block of
# symbols and how many times it repeats ("aaaa" is (a,) x 4; "éé" is (\xc3, \xa9) x 2).
#
# ``bpe_merge`` joins the lowest-ranked adjacent pair, leftmost on a tie.  In a segment every
# copy of the block has the same pairs, the first copy's leftmost; when that pair is the lowest
# of all, ``bpe_merge`` joins it, then (nothing else having changed) the same pair in the next
# copy, and so on to the last copy, unless a pair that one of these joints creates (the joined
# symbol with its neighbours) ranks lower still and so comes first.  When none does, the whole
# sweep is one step here: the block loses one boundary in every copy.  When one does, a single
# pair is joined, exactly as in ``bpe_merge``, and the next step sees the new pair.  The sweep
# is also only taken when no other pair of the block joins into the same bytes (same rank, so
# the order between them would be by position).  Runs of one symbol (blocks of one) sweep as
# (x x)(x x)... from the left.  Neighbouring segments have one pair between them.

_LONG_PIECE = 512  # bytes: longer pieces look for long runs before the heap merge
# At most 4096 per match: ``re`` keeps ~100 bytes per repetition of a back-reference until the
# match ends; ``_spans_of_runs`` joins the matches that follow each other.
_LONG_CHAR_RUN = re.compile(r"(.)\1{63,4095}", re.DOTALL)


def _spans_of_runs(pattern: re.Pattern, text) -> list[tuple[int, int]]:
    """``(begin, end)`` of the runs of one character that ``pattern`` finds in ``text``,
    matches that continue the same run joined."""
    spans: list[list[int]] = []
    for m in pattern.finditer(text):
        begin, end = m.span()
        if spans and spans[-1][1] == begin and text[begin - 1:begin] == text[begin:begin + 1]:
            spans[-1][1] = end
        else:
            spans.append([begin, end])
    return [(begin, end) for begin, end in spans]


def _long_piece_bpe(piece: str, data: bytes, ranks: dict[bytes, int]) -> list[tuple[list[bytes], int]]:
    """``bpe_merge`` of a piece as ``[(tokens, repeat), ...]``: ``tokens`` repeated ``repeat``
    times, in order (``data`` is ``piece`` in UTF-8).  Pieces that are mostly runs of 64 or
    more of one character go through ``_bpe_segments``; others through ``bpe_merge``."""
    spans = _spans_of_runs(_LONG_CHAR_RUN, piece)
    if 2 * sum(end - begin for begin, end in spans) < len(piece):
        return [(bpe_merge(_singles(data), ranks), 1)]
    segments: list[tuple[tuple[bytes, ...], int]] = []
    done = 0
    for begin, end in spans + [(len(piece), len(piece))]:
        segments += [((b,), 1) for b in _singles(piece[done:begin].encode("utf-8"))]
        if end > begin:
            segments.append((tuple(_singles(piece[begin].encode("utf-8"))), end - begin))
        done = end
    return [(list(block), count) for block, count in _bpe_segments(segments, ranks)]


def _singles(data: bytes) -> list[bytes]:
    return list(map(_SINGLE_BYTES.__getitem__, data))


def _bpe_segments(segments: list[tuple[tuple[bytes, ...], int]],
                  ranks: dict[bytes, int]) -> list[tuple[tuple[bytes, ...], int]]:
    """``bpe_merge`` on a piece given as ``[(block of symbols, count), ...]``; the result in the
    same form.  See the comment above for why each step is one of ``bpe_merge``'s, or a sweep of
    them in its order.

    The heap holds, per segment, an entry for the first copy of each pair in its block, one for
    the first pair between two copies (the "junction") and one for the pair with the next
    segment, keyed like ``bpe_merge``'s by (rank, byte offset of the left symbol).  Segments are
    never changed in place: a step replaces some by new ones (joining neighbours with equal
    blocks), so an entry is stale once its segment is gone or its neighbour has changed.
    """
    get = ranks.get
    blk: list[tuple[bytes, ...]] = []
    cnt: list[int] = []
    pos: list[int] = []  # byte offset of the segment in the piece
    offs: list[list[int]] = []  # byte offset of each symbol in the block; [-1] is the block's length
    nxt: list[int] = []
    prv: list[int] = []
    alive: list[bool] = []
    heap: list[tuple[int, int, int, int, int]] = []  # (rank, offset, segment, which pair, next segment)
    JUNCTION, BOUNDARY = -1, -2  # which pair of a segment; 0, 1, ...: that pair of its block

    def new_segment(block, count, offset) -> int:
        a = len(blk)
        blk.append(block)
        cnt.append(count)
        pos.append(offset)
        offs.append(list(itertools.accumulate(map(len, block), initial=0)))
        nxt.append(-1)
        prv.append(-1)
        alive.append(True)
        return a

    def push_entries(a: int, boundary_only: bool = False) -> None:
        block, count, p, off = blk[a], cnt[a], pos[a], offs[a]
        if not boundary_only:
            for i in range(len(block) - 1):
                r = get(block[i] + block[i + 1])
                if r is not None:
                    heapq.heappush(heap, (r, p + off[i], a, i, -1))
            if count >= 2:
                r = get(block[-1] + block[0])
                if r is not None:
                    heapq.heappush(heap, (r, p + off[-2], a, JUNCTION, -1))
        b = nxt[a]
        if b >= 0:
            r = get(block[-1] + blk[b][0])
            if r is not None:
                heapq.heappush(heap, (r, p + (count - 1) * off[-1] + off[-2], a, BOUNDARY, b))

    def joined(items):
        """``items`` with a block that occurs once split into its symbols (so that blocks never
        grow by joining neighbours), and neighbours of equal blocks joined."""
        out: list[list] = []
        for block, count, offset in items:
            if count <= 0:
                continue
            parts = [(block, count, offset)]
            if count == 1 and len(block) > 1:
                parts = [((symbol,), 1, offset + k) for symbol, k in zip(block, itertools.accumulate(map(len, block), initial=0))]
            for part, n, at in parts:
                if out and out[-1][0] == part:
                    out[-1][1] += n
                else:
                    out.append([part, n, at])
        return out

    head = -1
    for block, count in segments:  # the first list: equal neighbours joined
        if head >= 0 and blk[-1] == block:
            cnt[-1] += count
            continue
        a = new_segment(block, count, pos[-1] + cnt[-1] * offs[-1][-1] if blk else 0)
        if a > 0:
            nxt[a - 1], prv[a] = a, a - 1
        else:
            head = a
    for a in range(len(blk)):
        push_entries(a)

    def replace(first: int, last: int, items) -> None:
        nonlocal head
        left, right = prv[first], nxt[last]
        k = first
        while True:
            alive[k] = False
            if k == last:
                break
            k = nxt[k]
        items = joined(items)
        if left >= 0 and blk[left] == items[0][0]:
            items[0] = [blk[left], cnt[left] + items[0][1], pos[left]]
            alive[left] = False
            left = prv[left]
        if right >= 0 and blk[right] == items[-1][0]:
            items[-1][1] += cnt[right]
            alive[right] = False
            right = nxt[right]
        new = [new_segment(*item) for item in items]
        for a, b in zip(new, new[1:]):
            nxt[a], prv[b] = b, a
        prv[new[0]], nxt[new[-1]] = left, right
        if left >= 0:
            nxt[left] = new[0]
            push_entries(left, boundary_only=True)
        else:
            head = new[0]
        if right >= 0:
            prv[right] = new[-1]
        for a in new:
            push_entries(a)

    def ranks_after(pairs, r) -> bool:
        """Every pair (a byte string) that is a token ranks after ``r``."""
        return all(get(pair, r + 1) > r for pair in pairs)

    while heap:
        r, p, a, which, b = heapq.heappop(heap)
        if not alive[a] or (which == BOUNDARY and (nxt[a] != b or not alive[b])):
            continue  # stale
        block, count, start, size = blk[a], cnt[a], pos[a], offs[a][-1]
        L = len(block)
        if which == BOUNDARY:  # the last symbol of a's last copy joins the first of b's first copy
            last = start + (count - 1) * size
            other = blk[b]
            replace(a, b, [(block, count - 1, start),
                           (block[:-1] + (block[-1] + other[0],) + other[1:], 1, last),
                           (other, cnt[b] - 1, pos[b] + offs[b][-1])])
            continue
        left = blk[prv[a]][-1] if prv[a] >= 0 else None
        if L == 1:  # a run: (x x)(x x)... from the left
            x = block[0]
            xx, half = x + x, count // 2
            pairs = []
            if half >= 2:  # the pairs the sweep creates before its last joint
                pairs += [xx + x] + ([left + xx] if left is not None else []) + ([xx + xx] if half >= 3 else [])
            if ranks_after(pairs, r):
                items = [((xx,), half, start), (block, count % 2, start + 2 * half * len(x))]
            else:
                items = [((xx,), 1, start), (block, count - 2, start + 2 * len(x))]
        elif which >= 0:  # pair i of the block, in every copy
            i = which
            m = block[i] + block[i + 1]
            merged = block[:i] + (m,) + block[i + 2:]
            same = [block[k] + block[k + 1] for k in range(L - 1) if k != i] + [block[-1] + block[0]]
            pairs = []
            if count >= 2:  # the neighbours of m when a later copy is still to be joined
                pairs.append(m + (block[i + 2] if i + 2 < L else block[0]))
                if i >= 1:
                    pairs.append(block[i - 1] + m)
                elif left is not None:
                    pairs.append(left + m)
                if count >= 3 and i == 0:
                    pairs.append((m if L == 2 else block[-1]) + m)
            if count == 1 or (m not in same and ranks_after(pairs, r)):
                items = [(merged, count, start)]
            else:
                items = [(merged, 1, start), (block, count - 1, start + size)]
        else:  # the junction: the last symbol of each copy joins the first of the next
            m = block[-1] + block[0]
            same = [block[k] + block[k + 1] for k in range(L - 1)]
            pairs = []
            if count >= 3:  # the neighbours of m when a later junction is still to be joined
                pairs += [m + block[1], (block[0] if L == 2 else block[-2]) + m]
                if count >= 4 and L == 2:
                    pairs.append(m + m)
            if count >= 3 and m not in same and ranks_after(pairs, r):
                items = [(block[:-1], 1, start),
                         ((m,) + block[1:-1], count - 1, start + offs[a][-2]),
                         (block[-1:], 1, start + (count - 1) * size + offs[a][-2])]
            else:
                items = [(block[:-1] + (m,) + block[1:], 1, start), (block, count - 2, start + 2 * size)]
        replace(a, a, items)
    out = []
    a = head
    while a >= 0:
        out.append((blk[a], cnt[a]))
        a = nxt[a]
    return out


# --------------------------------------------------------------------------------------------
# Reading the vocabulary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    """The tables built once from ``encoder.json`` + ``vocab.bpe`` (shared by tokenizers)."""

    id_to_bytes: list[bytes]  # token id -> its bytes (special tokens: their UTF-8 text)
    bytes_to_id: dict[bytes, int]  # ordinary tokens only
    ranks: dict[bytes, int]  # bytes of a merged token -> its line in vocab.bpe (0-based)
    text_to_ids: dict[str, tuple[int]]  # tokens whose bytes are valid UTF-8, by text: (id,)
    special: dict[str, int]  # special token text -> id


def _read_vocab(encoder_json, vocab_bpe) -> _Vocab:
    encoder_json, vocab_bpe = os.fspath(encoder_json), os.fspath(vocab_bpe)
    try:
        with open(encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{encoder_json}: not valid JSON ({err})") from None
    if not isinstance(encoder, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in encoder.items()
    ):
        raise ValueError(f"{encoder_json}: expected a JSON object mapping token strings to ids")
    with open(vocab_bpe, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if not lines or not lines[0].startswith("#version"):
        raise ValueError(f"{vocab_bpe}: expected a first line '#version: 0.2', found {lines[0][:40]!r}")

    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{vocab_bpe}, line {number}: expected two symbols 'A B', found {line!r}")
        joined = from_stand_ins(parts[0]) + from_stand_ins(parts[1])
        ranks.setdefault(joined, len(ranks))

    n_vocab = len(encoder)
    if sorted(encoder.values()) != list(range(n_vocab)):
        raise ValueError(f"{encoder_json}: token ids must be exactly 0..{n_vocab - 1}, each once")
    id_to_bytes: list[bytes] = [b""] * n_vocab
    bytes_to_id: dict[bytes, int] = {}
    special: dict[str, int] = {}
    for token, token_id in encoder.items():
        try:
            data = from_stand_ins(token)
        except ValueError:
            data = None
        if data is not None and (len(data) == 1 or data in ranks):
            bytes_to_id[data] = token_id
            id_to_bytes[token_id] = data
        elif token.startswith("<|") and token.endswith("|>"):  # e.g. "<|endoftext|>"
            special[token] = token_id
            id_to_bytes[token_id] = token.encode("utf-8")
        else:
            raise ValueError(
                f"{encoder_json}: token {token!r} (id {token_id}) is neither a byte, nor made by a "
                f"merge in {vocab_bpe}, nor a special token like '<|endoftext|>' (is {vocab_bpe} "
                "truncated?)"
            )
    missing_bytes = [b for b in range(256) if bytes([b]) not in bytes_to_id]
    if missing_bytes:
        raise ValueError(
            f"{encoder_json}: byte 0x{missing_bytes[0]:02X} "
            f"({bytes_to_unicode()[missing_bytes[0]]!r}) has no token; all 256 bytes need one"
        )
    missing = next((r for r in ranks if r not in bytes_to_id), None)
    if missing is not None:
        raise ValueError(
            f"{encoder_json}: the merge producing {to_stand_ins(missing)!r} "
            f"(line {ranks[missing] + 2} of {vocab_bpe}) has no id"
        )

    text_to_ids = {}
    for data, token_id in bytes_to_id.items():
        try:
            text_to_ids[data.decode("utf-8")] = (token_id,)
        except UnicodeDecodeError:
            pass  # a token holding part of a character can never be a whole piece
    return _Vocab(id_to_bytes, bytes_to_id, ranks, text_to_ids, special)


@functools.lru_cache(maxsize=1)
def _bundled_vocab() -> _Vocab:
    assets = importlib.resources.files(__package__) / "assets"
    with importlib.resources.as_file(assets / "encoder.json") as enc, importlib.resources.as_file(
        assets / "vocab.bpe"
    ) as bpe:
        return _read_vocab(enc, bpe)


def _fix_surrogates(text: str) -> str:
    """What tiktoken does to text that is not valid UTF-8: join surrogate pairs, replace lone
    surrogates with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


class Tokenizer:
    """GPT-2's byte-level BPE tokenizer.

    >>> tok = Tokenizer.gpt2()
    >>> tok.encode("Hello world")
    [15496, 995]
    >>> tok.decode([15496, 995])
    'Hello world'
    """

    def __init__(self, vocab: _Vocab, cache_size: int = _CACHE_SIZE):
        self._vocab = vocab
        self._id_to_bytes = vocab.id_to_bytes
        _pretokenizers()  # compile the patterns now rather than inside the first encode
        self._split = pretokenize
        self._special = dict(vocab.special)
        self._pieces = _PieceTable(vocab.text_to_ids, self._bpe_ids, cache_size)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> "Tokenizer":
        """The tokenizer of every GPT-2 size, from the vocabulary bundled in ``gpt2np/assets``."""
        return cls(_bundled_vocab())

    @classmethod
    def from_files(cls, encoder_json, vocab_bpe) -> "Tokenizer":
        """A tokenizer from OpenAI-format files: ``encoder.json`` (token -> id) and ``vocab.bpe``
        (one merge per line, in rank order).  Entries of ``encoder.json`` that are neither a
        byte nor made by a merge must look like ``<|name|>``: they are the special tokens."""
        return cls(_read_vocab(encoder_json, vocab_bpe))

    # -- sizes ---------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """Number of token ids (GPT-2: 50257)."""
        return len(self._id_to_bytes)

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>`` (GPT-2: 50256)."""
        try:
            return self._special[ENDOFTEXT]
        except KeyError:
            raise ValueError(f"this vocabulary has no {ENDOFTEXT} token") from None

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id."""
        return dict(self._special)

    def __repr__(self) -> str:
        return f"<Tokenizer n_vocab={self.n_vocab} special={sorted(self._special)}>"

    # -- encoding ------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, treating special-token text like any other text."""
        _check_text(text)
        try:
            return self._encode_segment(text)
        except UnicodeEncodeError:  # lone surrogates: fix the whole text as tiktoken does
            return self._encode_segment(_fix_surrogates(text))

    def encode(
        self,
        text: str,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Text -> ids, with tiktoken's rules for special tokens.

        - text of an ``allowed_special`` token becomes its id (``"all"``: every special token);
        - text of a ``disallowed_special`` token raises ``ValueError`` (default ``"all"``: every
          special token not allowed), so untrusted text cannot smuggle in ``<|endoftext|>``;
        - special-token text that is neither (e.g. ``disallowed_special=()``) is ordinary text.
        """
        text, allowed = self._check_special(text, allowed_special, disallowed_special)
        ids: list[int] = []
        for part, special in self._segments(text, allowed):
            if special:
                ids.append(self._special[part])
            else:
                ids += self._encode_segment(part)
        return ids

    def _check_special(self, text, allowed_special, disallowed_special) -> tuple[str, frozenset[str]]:
        """Apply tiktoken's rules before encoding: raise on a disallowed special token, fix
        surrogates.  Unlike tiktoken, names that are not special tokens are an error.
        Returns (text, the allowed special tokens)."""
        _check_text(text)
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = frozenset(self._special) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        found = [token for token in disallowed if token in text]
        if found:
            token = min(found, key=text.find)
            raise ValueError(
                f"the text contains the special token {token!r}, which is disallowed; pass "
                f"allowed_special={{{token!r}}} to encode it as id {self._special[token]}, or "
                "disallowed_special=() to encode it as ordinary text"
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: fix the whole text as tiktoken does
                text = _fix_surrogates(text)
        return text, allowed

    def _segments(self, text: str, allowed: frozenset[str]):
        """Yield (part, is_special): the text cut at allowed special tokens.  The ordinary
        parts are split into pieces on their own, so no piece crosses a special token."""
        if not allowed or not any(token in text for token in allowed):
            yield text, False
            return
        splitter = regex.compile("(" + "|".join(regex.escape(t) for t in allowed) + ")")
        for index, part in enumerate(splitter.split(text)):
            if index % 2 or part:
                yield part, bool(index % 2)

    def _special_set(self, value, name: str) -> frozenset[str]:
        if value == "all":
            return frozenset(self._special)
        if isinstance(value, str):
            raise TypeError(f"{name} must be 'all' or a set of special tokens, not the string {value!r}")
        tokens = frozenset(value)
        unknown = tokens - self._special.keys()
        if unknown:
            raise ValueError(
                f"{name} names {sorted(unknown)[0]!r}, which is not a special token of this "
                f"vocabulary (special tokens: {sorted(self._special)})"
            )
        return tokens

    def _encode_segment(self, text: str) -> list[int]:
        """Ordinary text -> ids: split into pieces, look each up (whole tokens and remembered
        pieces are one C-level dict lookup; others run BPE once), concatenate the ids."""
        return list(itertools.chain.from_iterable(map(self._pieces.__getitem__, self._split(text))))

    def _bpe_ids(self, piece: str) -> tuple[int, ...]:
        """The ids of one piece that is not a whole token, by BPE on its bytes.  (Tuples, not
        lists: the garbage collector stops tracking tuples of ints, which keeps its passes
        over the big piece table cheap.)"""
        data = piece.encode("utf-8")  # UnicodeEncodeError on lone surrogates: encode() fixes
        bytes_to_id = self._vocab.bytes_to_id
        if data in bytes_to_id:  # a token that is no valid UTF-8 by itself (not in the table)
            return (bytes_to_id[data],)
        if len(data) > _LONG_PIECE:  # long runs of one character: see _long_piece_bpe
            ids: list[int] = []
            for tokens, repeat in _long_piece_bpe(piece, data, self._vocab.ranks):
                ids += list(map(bytes_to_id.__getitem__, tokens)) * repeat
            return tuple(ids)
        symbols = list(map(_SINGLE_BYTES.__getitem__, data))
        return tuple(map(bytes_to_id.__getitem__, bpe_merge(symbols, self._vocab.ranks)))

    # -- decoding ------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the bytes of their tokens, joined."""
        ids = _as_id_list(ids)
        table = self._id_to_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join(map(table.__getitem__, ids))
        except (IndexError, TypeError):
            for i in ids:
                self._check_id(i)
            raise  # not reached: _check_id raises for the offending id

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text.  Bytes that are not valid UTF-8 (e.g. half of an emoji) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token."""
        return self._id_to_bytes[self._check_id(token_id)]

    def _check_id(self, token_id) -> int:
        try:
            index = token_id.__index__()
        except (AttributeError, TypeError):
            raise TypeError(
                f"token ids must be integers, got {token_id!r} ({type(token_id).__name__})"
            ) from None
        if not 0 <= index < self.n_vocab:
            raise ValueError(
                f"token id {index} is outside the vocabulary: ids run from 0 to "
                f"{self.n_vocab - 1} (vocabulary size {self.n_vocab})"
            )
        return index

    def incremental_decoder(self) -> "IncrementalDecoder":
        """A decoder for streaming: ``feed(id)`` returns the text that is complete so far."""
        return IncrementalDecoder(self)

    # -- the reader's view ---------------------------------------------------------------

    def explain(
        self,
        text: str,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> "Explanation":
        """Show the work of ``encode``: the pieces, their bytes and stand-ins, every merge.

        >>> Tokenizer.gpt2().explain("Hello world").pieces[1].merges[0]
        Merge('Ġ' + 'w' -> 'Ġw' (rank 10); symbols: Ġw o r l d)
        """
        ids = self.encode(text, allowed_special, disallowed_special)
        text, allowed = self._check_special(text, allowed_special, disallowed_special)
        pieces = []
        for part, special in self._segments(text, allowed):
            if special:
                pieces.append(PieceExplanation.special_token(part, self._special[part]))
            else:
                pieces += [self._explain_piece(piece) for piece in self._split(part)]
        explanation = Explanation(text, tuple(pieces), ids)
        assert [i for p in pieces for i in p.ids] == ids, "explain disagrees with encode"
        return explanation

    def _explain_piece(self, piece: str) -> "PieceExplanation":
        data = piece.encode("utf-8")
        start = [data[i : i + 1] for i in range(len(data))]
        symbols = list(start)
        merges = []

        def record(left, right, rank, position):
            # Rebuild the symbol list from the joined bytes: slow, but this is for reading.
            offset = 0  # bpe_merge names a pair by the byte offset of its left symbol
            for k, s in enumerate(symbols):
                if offset == position:
                    symbols[k : k + 2] = [left + right]
                    break
                offset += len(s)
            merges.append(
                Merge((to_stand_ins(left), to_stand_ins(right)), rank,
                      tuple(to_stand_ins(s) for s in symbols))
            )

        final = bpe_merge(start, self._vocab.ranks, on_merge=record)
        whole = self._vocab.bytes_to_id.get(data)
        tokens = [data] if whole is not None else final
        return PieceExplanation(
            text=piece,
            bytes=data,
            stand_ins=to_stand_ins(data),
            merges=tuple(merges),
            tokens=tuple(to_stand_ins(t) for t in tokens),
            ids=tuple(self._vocab.bytes_to_id[t] for t in tokens),
            whole_token=whole is not None,
        )


class _PieceTable(dict):
    """Piece text -> its ids.  It starts as every whole token; a piece that is missing runs
    BPE once (``__missing__``) and is remembered.  At most ``limit`` remembered pieces are
    kept (first in, first out), so encoding a huge file cannot grow memory without bound;
    pieces longer than ``longest`` characters are not remembered at all (a run of one letter
    can be megabytes long)."""

    longest = 1024

    def __init__(self, whole_tokens: dict[str, tuple[int]], bpe_ids, limit: int):
        super().__init__(whole_tokens)
        self._bpe_ids = bpe_ids
        self.limit = max(1, limit)
        self.remembered: collections.deque[str] = collections.deque()

    def __missing__(self, piece: str) -> tuple[int, ...]:
        ids = self._bpe_ids(piece)
        if len(piece) > self.longest:
            return ids
        if len(self.remembered) >= self.limit:
            for _ in range(max(1, self.limit // 10)):
                self.pop(self.remembered.popleft(), None)  # (None: robust to threads)
        self[piece] = ids
        self.remembered.append(piece)
        return ids


_SINGLE_BYTES = [bytes([b]) for b in range(256)]


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"encode expects text as str, got {type(text).__name__}")


def _as_id_list(ids) -> list:
    if isinstance(ids, list):
        return ids
    if hasattr(ids, "tolist") and getattr(ids, "ndim", 1) == 1:  # a 1-D NumPy array
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"decode expects a sequence of token ids, got {type(ids).__name__}")
    return list(ids)


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


class IncrementalDecoder:
    """Decode a stream of ids one at a time without ever splitting a UTF-8 character.

    A token may end in the middle of a character (an emoji is often three tokens), so the
    bytes of an incomplete character wait until the tokens that complete it arrive.  Bytes
    that can never start or continue a valid character come out as U+FFFD as soon as that is
    certain, exactly as ``bytes.decode("utf-8", "replace")`` would place them, so the joined
    output of ``feed`` and ``flush`` always equals ``Tokenizer.decode`` of the same ids.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        # CPython's stateful UTF-8 decoder holds back only a valid-but-unfinished prefix, which
        # is what makes chunked decoding agree with one-shot decoding.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Add one token; return the characters it completes (possibly "")."""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: return what is still held (an unfinished character becomes U+FFFD)
        and start afresh."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet returned (part of a character)."""
        return self._utf8.getstate()[0]


# --------------------------------------------------------------------------------------------
# The reader's view
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """One BPE step: ``pair`` joined (by the rank of the token it forms), giving ``symbols``."""

    pair: tuple[str, str]
    rank: int
    symbols: tuple[str, ...]

    def __repr__(self) -> str:
        a, b = self.pair
        return (f"Merge({a!r} + {b!r} -> {a + b!r} (rank {self.rank}); "
                f"symbols: {' '.join(self.symbols)})")


@dataclass(frozen=True)
class PieceExplanation:
    """One pre-tokenized piece and how it became tokens.

    ``stand_ins`` are its bytes as vocabulary characters, ``merges`` the BPE steps in order,
    ``tokens``/``ids`` the result.  ``whole_token`` says the piece is itself a token and was
    looked up directly (the merges then show how BPE arrives at the same token).
    """

    text: str
    bytes: bytes
    stand_ins: str
    merges: tuple[Merge, ...]
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    whole_token: bool = False
    special: bool = False

    @classmethod
    def special_token(cls, text: str, token_id: int) -> "PieceExplanation":
        data = text.encode("utf-8")
        return cls(text, data, text, (), (text,), (token_id,), whole_token=True, special=True)

    def __repr__(self) -> str:
        kind = " special" if self.special else ""
        return (f"PieceExplanation({self.text!r}{kind}: bytes {self.bytes!r} -> "
                f"{' '.join(self.stand_ins)} -> {len(self.merges)} merges -> "
                f"{list(self.tokens)} = {list(self.ids)})")


@dataclass(frozen=True)
class Explanation:
    """The work of ``encode`` on one text: ``pieces`` in order and the final ``ids``."""

    text: str
    pieces: tuple[PieceExplanation, ...]
    ids: list[int] = field(default_factory=list)

    def table(self) -> str:
        """A plain-text table: one row per piece."""
        rows = [("piece", "bytes", "stand-ins", "merges", "tokens", "ids")]
        for p in self.pieces:
            rows.append((repr(p.text), p.bytes.hex(" "), p.stand_ins,
                         "special" if p.special else str(len(p.merges)),
                         " ".join(p.tokens), " ".join(map(str, p.ids))))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Explanation({self.text!r}: {len(self.pieces)} pieces, "
                f"{len(self.ids)} ids)\n{self.table()}")

    __str__ = table
