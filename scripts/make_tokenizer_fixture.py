"""Make tests/fixtures/tokenizer_tiktoken.json: tiktoken's "gpt2" ids for a varied corpus.

The corpus is assembled here (hand-written samples in many scripts and shapes, and seeded
random text), then tiktoken — an independent implementation — encodes and decodes it.  The
same tiktoken version gives the same file byte for byte.  The tests compare gpt2np's tokenizer with these recorded answers, so
the test suite does not need tiktoken.

Runs offline: tiktoken reads the vocabulary from its cache folder, where this script copies
the bundled files under the names tiktoken looks for (the sha1 of their URLs).

    python scripts/make_tokenizer_fixture.py            # needs tiktoken (the "dev" extra)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import random
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
ASSETS = ROOT / "gpt2np" / "assets"
OUT = ROOT / "tests" / "fixtures" / "tokenizer_tiktoken.json"
VOCAB_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{}"


def load_tiktoken():
    """tiktoken's gpt2 encoding, loaded without a network from the bundled vocabulary."""
    cache = os.environ.setdefault(
        "TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gpt2np-tiktoken-cache")
    )
    os.makedirs(cache, exist_ok=True)
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1(VOCAB_URL.format(name).encode()).hexdigest()
        shutil.copy(ASSETS / name, os.path.join(cache, key))
    import tiktoken

    return tiktoken, tiktoken.get_encoding("gpt2")


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

PROSE = """\
The lighthouse keeper had not expected visitors in November. The ferry ran twice a week in
summer and not at all once the storms began, so when a small boat scraped against the jetty
one grey afternoon, she put down her book and went out in her oilskins to see who was mad
enough to cross the sound in that weather.

It was a woman of about sixty, with a rucksack, a folding easel and a face reddened by the
wind. "I'm painting the islands," she said, as if that explained everything. "All of them.
I've done forty-one. Yours is forty-two, and I'd like to stay until I've got the light right."

They didn't talk much that first evening. The keeper heated soup; the painter ate two bowls,
asked whether the generator ran all night (it did), and went to bed in the spare room at
half past eight. In the morning she was gone before dawn, and the keeper found her on the
western cliff, sitting on an upturned crate, brushing in a sky that seemed to be mostly
bruise-coloured cloud.

"You'll freeze," said the keeper.
"Probably. But look at that!" The painter pointed with her brush at a gap in the cloud where
a shaft of pale yellow light fell on the water, moving slowly towards the shore. "That's what
I came for. It lasts about four minutes, on a good day. Yesterday it lasted none."

Over the following weeks they fell into a routine. The keeper logged the weather at six,
noon and six; the painter worked whenever the light was interesting, which was more often
than the keeper would have guessed. In the evenings they played cribbage, badly, and argued
about whether the 1987 storm had been worse than the one in '63. Neither of them had been on
the island for either, which didn't slow the argument down in the least.

By Christmas there were nineteen canvases stacked against the wall of the oil store, each of
them the same headland under a different sky. "How will you know when it's right?" the keeper
asked. The painter considered this for a long time. "I won't," she said at last. "I'll just
run out of canvas. That's how I've known the other forty-one times."

Mr. O'Neill's dog -- a retriever called Biscuit -- wasn't impressed by any of it; he'd
rather've been chasing gulls. THE END (or is it?). P.S. Don't forget: the ferry's timetable
changes on 1 March; tickets cost £12.50 (€14.20, $15.75) and can't be refunded.
"""

CODE_C = """\
/* A tiny ring buffer. */
#include <stdint.h>
#include <string.h>

typedef struct {
\tuint8_t *data;
\tsize_t head, tail, cap;
} ring_t;

static int ring_push(ring_t *r, const uint8_t *src, size_t n) {
\tif (n > r->cap - (r->head - r->tail)) return -1;   // would overflow
\tfor (size_t i = 0; i < n; ++i)
\t\tr->data[(r->head + i) % r->cap] = src[i];
\tr->head += n;
\treturn 0;
}
"""

CODE_JS = """\
export async function fetchJson(url, { retries = 3, timeoutMs = 5_000 } = {}) {
  for (let attempt = 1; attempt <= retries; attempt++) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    try {
      const res = await fetch(url, { signal: ctrl.signal });
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${res.statusText}`);
      return await res.json();
    } catch (err) {
      if (attempt === retries) throw err;
      await new Promise(r => setTimeout(r, 2 ** attempt * 100));
    } finally {
      clearTimeout(timer);
    }
  }
}
"""

CODE_MISC = """\
SELECT u.id, u.email, COUNT(o.id) AS n_orders
  FROM users u LEFT JOIN orders o ON o.user_id = u.id
 WHERE u.created_at >= '2024-01-01' AND u.email LIKE '%@example.com'
 GROUP BY u.id, u.email HAVING COUNT(o.id) > 3;

$ grep -rn "TODO" src/ | awk -F: '{print $1}' | sort | uniq -c | sort -rn | head -20
fn main() -> Result<(), Box<dyn std::error::Error>> { let v: Vec<u64> = (0..10).map(|x| x * x).collect(); println!("{v:?}"); Ok(()) }
<html><head><meta charset="utf-8"><title>Test &amp; more</title></head><body><p class='x'>Hi&nbsp;there</p></body></html>
\\documentclass{article}\\begin{document}$E = mc^2$, $\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$\\end{document}
"""

LANGUAGES = {
    "chinese": "机器学习是人工智能的一个分支。今天天气很好，我们去公园散步吧！《红楼梦》是中国古典小说之一。",
    "japanese": "東京は日本の首都です。ひらがな、カタカナ、そして漢字を使います。ｶﾀｶﾅの半角も。今日は2024年５月１日です。",
    "korean": "안녕하세요, 만나서 반갑습니다. 한국어는 한글로 씁니다. 서울의 인구는 약 940만 명입니다.",
    "arabic": "مرحبا بالعالم! اللغة العربية تكتب من اليمين إلى اليسار. الرقم ١٢٣٤ مكتوب بالأرقام الهندية.",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России; ЁЖИК ёжик.",
    "ukrainian_serbian": "Гуляють ґави і їжаки. Ћирилица: Љубав, Његош, Ђорђе, Џеп.",
    "greek": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. ΑΒΓΔ αβγδ ς.",
    "hebrew": "שלום עולם! עברית נכתבת מימין לשמאל.",
    "hindi": "नमस्ते दुनिया! हिन्दी देवनागरी लिपि में लिखी जाती है। १२३",
    "thai": "สวัสดีครับ ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "vietnamese": "Tiếng Việt có nhiều dấu: ả, ã, ạ, ầ, ẩ, ẫ, ậ, ắ, ằ, ẳ, ẵ, ặ. Người Việt Nam.",
    "german_french_spanish": "Grüße aus Köln! Straße, Maß, ÄÖÜ äöü. Où est la bibliothèque ? ¿Qué tal? ¡Olé! Ça va, naïve façade.",
    "mixed": "English 中文 日本語 한국어 العربية Русский mixed123混合abc テスト test",
}

EMOJI = (
    "Emoji: 🤖 😀😃😄 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🏴‍☠️ ❤️ ❤️‍🔥 🇬🇧🇫🇷🇯🇵🇺🇸 🇪🇺 1️⃣ #️⃣ 🧑🏿‍🚀 "
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿 (Scotland) ☃ ✨✨✨ 🎉🎉 👋🏻👋🏼👋🏽👋🏾👋🏿 🫠🫡🫶 🐈‍⬛ 👁️‍🗨️"
)

COMBINING = (
    "e\u0301 vs \u00e9; n\u0303 vs \u00f1; a\u030a\u0301; Z\u0351\u036b\u0343\u036a\u0302\u036b"
    "a\u0352\u0350l\u0315g\u0352o\u0359; \u1e9b\u0323 \u0915\u094d\u0937; \u0644\u0627\u064b; "
    "\u05e9\u05c1\u05b8; \u0301 leading mark; \u20dd circle; x\u0489x"
)

WHITESPACE = [
    "trailing space ",
    "trailing spaces   ",
    "trailing newline\n",
    "trailing newlines\n\n\n",
    "trailing mix \t \n",
    "  leading spaces",
    "\n\nleading newlines",
    "a  b   c    d     e",
    "tabs\tand\t\ttabs\t\t\t!",
    "windows\r\nline\r\nendings\r\n\r\n",
    "old mac\rline\rendings\r",
    "spaces before newline   \nnext   \n\n   next",
    "\t\n \t\n  ",
    " ",
    "  ",
    "\n",
    "\r\n",
    "x\u00a0y\u00a0\u00a0z",
    "ideographic\u3000space\u3000\u3000",
    "line\u2028separator\u2029paragraph",
    "vt\x0bff\x0cnel\x85end",
    "en\u2002em\u2003thin\u2009hair\u200a",
    "no-break\u202fnarrow \u205f math",
    "ogham\u1680space",
    "\x1c\x1d\x1e\x1f are not white space",
    "     \n\n     \t\t\t     ",
    "end with space before eot <|endoftext|>",
    " " * 300,
    "\n" * 200,
    "\t" * 100 + "x",
    "word" + " " * 50 + "word" + "\n" * 30 + "word",
]


def contractions() -> list[str]:
    endings = ["s", "t", "re", "ve", "m", "ll", "d"]
    cases = []
    for e in endings:
        variants = {e, e.upper(), e.capitalize(), e[:-1] + e[-1].upper()}
        for v in sorted(variants):
            cases.append(f"it'{v} he'{v} '{v} x '{v}x '{v}'{v} ''{v} ’{v}")
    cases += [
        "I'm you're we've they'll she'd it's can't won't shan't y'all o'clock rock'n'roll",
        "I'M YOU'RE WE'VE THEY'LL SHE'D IT'S CAN'T WON'T",
        "'", "''", "'''", " ' ", "'s", "'S", "'ll", "'LL", "x'", "'tis 'twas",
        "don’t (curly) vs don't (straight)",
        "the '90s and '00s; 'quoted' \"double\" `back`",
    ]
    return cases


def numbers(rng: random.Random) -> list[str]:
    digits = "".join(rng.choice("0123456789") for _ in range(300))
    return [
        digits,
        "1" * 500,
        "3.14159265358979323846264338327950288419716939937510",
        "1,000,000 and 1.000.000 and 1 000 000 and 1_000_000",
        "-42 +17 0x1F 0b1010 1e-9 6.022e23 007 2024-05-01T12:34:56Z",
        "phone +44 (0)20 7946 0958, ISBN 978-3-16-148410-0",
        "unicode digits: ٠١٢٣٤٥٦٧٨٩ ۰۱۲ ０１２３ ²³¹ ½¼¾ ⅓ Ⅻ ⅻ ① ⑳ 𝟘𝟙𝟚 १२३ ๑๒๓",
    ]


URLS = (
    "See https://www.example.com/path/to/page.html?query=value&other=123#section and "
    "http://localhost:8080/api/v1/users/42, ftp://files.example.org/pub/README.txt, "
    "mailto:someone@example.com, git@github.com:owner/repo.git, "
    "C:\\Users\\Name\\Documents\\file.txt, /usr/local/bin/python3, ~/.config/app.toml, "
    "https://ja.wikipedia.org/wiki/東京 and https://xn--n3h.com/%E2%9C%93?a=b"
)


def control_chars() -> list[str]:
    c0 = "".join(chr(c) for c in range(0x20))
    c1 = "".join(chr(c) for c in range(0x7F, 0xA0))
    return [
        c0,
        c1,
        "null\x00byte and bell\x07 and escape\x1b[31mred\x1b[0m",
        "\ufeffBOM at start, zero\u200bwidth, zw\u200cnj, zw\u200dj, wj\u2060, soft\u00adhyphen",
        "bidi \u202eevil\u202c and \u2066isolate\u2069",
        "private use \ue000\uf8ff and noncharacters \ufdd0\uffff and specials \ufffd\ufffc",
        "astral private \U000F0000\U0010FFFD and tags \U000E0041",
    ]


ENDOFTEXT_TEXTS = [
    "<|endoftext|>",
    "<|endoftext|>at the start",
    "in the<|endoftext|>middle",
    "at the end<|endoftext|>",
    " <|endoftext|> ",
    "\n<|endoftext|>\n",
    "<|endoftext|><|endoftext|>",
    "<|endoftext|> <|endoftext|>\n\n<|endoftext|>",
    "word<|endoftext|>word",
    "’s<|endoftext|>'s",
    "123<|endoftext|>456",
    "<|endoftext|",
    "<|endoftext",
    "|endoftext|>",
    "<|ENDOFTEXT|>",
    "<| endoftext |>",
    "<<|endoftext|>>",
    "<|endoftext|>" * 5,
    "Document one.<|endoftext|>Document two.\n<|endoftext|>",
    "space before   <|endoftext|>   and after",
    "emoji 🤖<|endoftext|>🤖",
]


def json_sample() -> str:
    data = {
        "id": 12345,
        "name": "Widget \"Pro\" — 2nd edition",
        "tags": ["a", "b", "c-d", "ünïcödé", "日本"],
        "price": 19.99,
        "available": True,
        "nested": {"list": [1, 2.5, None, {"deep": [[], {}]}], "empty": ""},
        "escapes": "line\nbreak\ttab\\backslash\u0001",
    }
    return json.dumps(data, indent=2) + "\n" + json.dumps(data, ensure_ascii=False) + "\n" + json.dumps(
        data, separators=(",", ":")
    )


def in_contexts(c: str) -> str:
    """One character where each alternative of the pattern could claim it."""
    return f"a{c}b {c}1{c}{c} {c}\n{c}  {c}'s{c}"


def newer_unicode_sample() -> str:
    """Letters/digits assigned after Unicode 16.0 (tiktoken's tables treat them as symbols)."""
    sys.path.insert(0, str(ROOT))
    import regex

    from gpt2np.tokenizer import _NEWER_THAN_UNICODE_16

    newer = regex.compile(f"[{_NEWER_THAN_UNICODE_16}]")
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and newer.match(chr(c))]
    picked = chars[::211] + chars[:3] + chars[-3:]
    return " ".join(in_contexts(c) for c in picked)


def code_point_sample() -> list[str]:
    """Every 3001st code point of the whole range (no surrogates), in contexts, in chunks."""
    chars = [chr(c) for c in range(0, 0x110000, 3001) if not 0xD800 <= c < 0xE000]
    return [" ".join(in_contexts(c) for c in chars[i:i + 100]) for i in range(0, len(chars), 100)]


def random_unicode(rng: random.Random, count: int) -> list[str]:
    """Seeded random strings mixing the character classes the pattern distinguishes."""
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " " * 8 + "\t\n\r\x0b\x0c\u00a0\u3000\u2028\x85",
        "'sdmtlvre" * 3 + "’",
        "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~",
        "éñüßøåçÆŒ",
        "中文日本語한국어",
        "🤖😀👍🏽\u200d🏳️",
        "\u0301\u0308\u20dd",
        "٣४३௩",
    ]
    out = []
    for _ in range(count):
        length = rng.randint(1, 60)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    for _ in range(count // 4):  # any code point at all, outside the surrogates
        chars = []
        while len(chars) < rng.randint(1, 30):
            c = rng.randrange(0x110000)
            if not 0xD800 <= c < 0xE000:
                chars.append(chr(c))
        out.append("".join(chars))
    return out


CODE_PYTHON = '''\
"""Inventory helpers."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    name: str
    price_cents: int = 0
    tags: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name!r} ({self.sku}) @ ${self.price_cents / 100:,.2f}"


def total(items: Iterable[Item], *, discount: float = 0.0) -> int:
    """Sum of prices in cents, after a fractional discount (0.1 == 10 %)."""
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    return round(sum(i.price_cents for i in items) * (1 - discount))


if __name__ == "__main__":
    stock = [Item("A-001", "Widget", 1999, ("tools",)), Item("B-002", "Gadget", 4_500)]
    for item in sorted(stock, key=lambda i: (-i.price_cents, i.sku)):
        print(item)
    print("total:", total(stock, discount=0.15))  # -> 5524
\tprint("tab-indented line")  # mixed indentation on purpose
'''


def corpus(rng: random.Random) -> list[tuple[str, str]]:
    cases = [("prose", PROSE), ("code_c", CODE_C), ("code_js", CODE_JS), ("code_misc", CODE_MISC),
             ("code_python", CODE_PYTHON), ("json", json_sample())]
    cases += [(f"lang_{k}", v) for k, v in LANGUAGES.items()]
    cases += [("emoji", EMOJI), ("combining", COMBINING), ("urls", URLS)]
    cases += [(f"whitespace_{i}", t) for i, t in enumerate(WHITESPACE)]
    cases += [(f"contractions_{i}", t) for i, t in enumerate(contractions())]
    cases += [(f"numbers_{i}", t) for i, t in enumerate(numbers(rng))]
    cases += [(f"control_{i}", t) for i, t in enumerate(control_chars())]
    cases += [(f"endoftext_{i}", t) for i, t in enumerate(ENDOFTEXT_TEXTS)]
    cases += [("newer_than_unicode_16", newer_unicode_sample())]
    cases += [(f"code_points_{i}", t) for i, t in enumerate(code_point_sample())]
    cases += [
        ("surrogates_lone", "lone \ud800 high and \udfff low and \udc00\ud800 reversed"),
        ("surrogates_pair", "a pair \ud83e\udd16 that is a robot"),
        ("long_repeat", "a" * 3000 + " " + "ab" * 1000 + " " + "." * 1000 + "🤖" * 300),
        ("letters_32000", "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
                                  for _ in range(32000))),
        ("empty", ""),
    ]
    cases += [(f"random_{i}", t) for i, t in enumerate(random_unicode(rng, 200))]
    return cases


# --------------------------------------------------------------------------------------------
# tiktoken's answers
# --------------------------------------------------------------------------------------------


def special_cases(enc) -> list[dict]:
    """encode() under every kind of allowed/disallowed argument, as tiktoken answers it."""
    options = [
        ({}, {}),
        ({"allowed_special": "all"}, {"allowed_special": "all"}),
        ({"allowed_special": {"<|endoftext|>"}}, {"allowed_special": ["<|endoftext|>"]}),
        ({"disallowed_special": ()}, {"disallowed_special": []}),
        ({"allowed_special": set(), "disallowed_special": set()}, {"allowed_special": [], "disallowed_special": []}),
        ({"allowed_special": "all", "disallowed_special": ()}, {"allowed_special": "all", "disallowed_special": []}),
        ({"disallowed_special": {"<|endoftext|>"}}, {"disallowed_special": ["<|endoftext|>"]}),
    ]
    texts = ENDOFTEXT_TEXTS + ["no special token here", "", "<|endoftext|> " + PROSE[:300]]
    out = []
    for text in texts:
        for kwargs, recorded in options:
            case = {"text": text, "kwargs": recorded}
            try:
                case["ids"] = enc.encode(text, **kwargs)
            except ValueError:
                case["error"] = "ValueError"
            out.append(case)
    return out


def decode_cases(enc, rng: random.Random) -> list[dict]:
    """Arbitrary id sequences (many not valid UTF-8 when joined) and tiktoken's decode."""
    byte_ids = [enc.encode_single_token(bytes([b])) for b in range(128, 256)]
    cases = []
    for _ in range(300):
        n = rng.randint(0, 12)
        ids = [rng.choice(byte_ids) if rng.random() < 0.5 else rng.randrange(enc.n_vocab) for _ in range(n)]
        cases.append({"ids": ids, "text": enc.decode(ids)})
    for text in ["🤖", "👨‍👩‍👧‍👦", "東京", "é", "<|endoftext|>"]:
        ids = enc.encode(text, allowed_special="all")
        cases.append({"ids": ids, "text": enc.decode(ids)})
        cases.append({"ids": ids[:-1], "text": enc.decode(ids[:-1])})
        cases.append({"ids": ids[1:], "text": enc.decode(ids[1:])})
    return cases


def vocabulary_digest(enc) -> str:
    """sha256 over every token's bytes, each prefixed by its length, in id order."""
    h = hashlib.sha256()
    for i in range(enc.n_vocab):
        data = enc.decode_single_token_bytes(i)
        h.update(len(data).to_bytes(4, "little") + data)
    return h.hexdigest()


def main() -> None:
    tiktoken, enc = load_tiktoken()
    rng = random.Random(20240501)
    cases = [{"name": name, "text": text, "ids": enc.encode_ordinary(text)} for name, text in corpus(rng)]
    fixture = {
        "made_by": "scripts/make_tokenizer_fixture.py",
        "reference": f"tiktoken {tiktoken.__version__}, encoding gpt2 (encode_ordinary, encode, decode)",
        "tiktoken_version": tiktoken.__version__,
        "python": platform.python_version(),
        "n_vocab": enc.n_vocab,
        "eot_token": enc.eot_token,
        "vocabulary_sha256": vocabulary_digest(enc),
        "encode_ordinary": cases,
        "encode_special": special_cases(enc),
        "decode": decode_cases(enc, rng),
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(fixture, ensure_ascii=True, separators=(",", ":")) + "\n", encoding="ascii")
    os.replace(tmp, OUT)
    n_chars = sum(len(c["text"]) for c in cases)
    n_ids = sum(len(c["ids"]) for c in cases)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(cases)} texts, {n_chars} characters, {n_ids} ids, "
          f"{OUT.stat().st_size // 1024} KiB (tiktoken {tiktoken.__version__})")


if __name__ == "__main__":
    main()
