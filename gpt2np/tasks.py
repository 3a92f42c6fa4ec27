"""GPT-2's zero-shot uses (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners", section 3): the task is stated only by the shape of the prompt.

| task | prompt | decoding (the paper's settings) | output |
|---|---|---|---|
| summarize | article, then ``"\\nTL;DR:"`` | top-k sampling, k = 2, 100 tokens | the first 3 generated sentences |
| translate | ``"english sentence = french sentence"`` example lines, then ``"sentence ="`` | greedy | up to the first newline |
| answer | document, example ``Q:``/``A:`` pairs, then ``"Q: question\\nA:"`` | greedy | up to the first newline |
| continue | the text itself | any | the continuation |

Each task is two pure functions, a prompt builder (``summary_prompt``, ``translation_prompt``,
``qa_prompt``) and an output cutter (``first_sentences``, ``first_line``), around one call of
``gpt2np.generation.generate_text``.  The example pairs are replaceable: pass a list of pairs or
load them from a file with ``load_pairs``.
"""

from __future__ import annotations

import json
import pathlib

import regex

from .generation import generate_text

# A few pairs written for this package (the paper does not publish its exact examples).
TRANSLATION_EXAMPLES: list[tuple[str, str]] = [
    ("The cat is sleeping on the chair.", "Le chat dort sur la chaise."),
    ("I would like a cup of coffee, please.", "Je voudrais une tasse de café, s'il vous plaît."),
    ("Where is the train station?", "Où est la gare ?"),
    ("We are going to the beach tomorrow.", "Nous allons à la plage demain."),
    ("This book is very interesting.", "Ce livre est très intéressant."),
]

QA_EXAMPLES: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("How many legs does a spider have?", "eight"),
    ("What is the largest planet in the solar system?", "Jupiter"),
]

# A sentence ends at . ! or ? (possibly repeated, possibly followed by closing quotes or
# brackets) that is followed by whitespace or the end of the text.
_SENTENCE_END = regex.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


# ---------------------------------------------------------------------------------------
# Prompt builders and output cutters (pure functions)
# ---------------------------------------------------------------------------------------


def summary_prompt(article: str) -> str:
    """``article + "\\nTL;DR:"`` (trailing whitespace of the article removed first)."""
    _check_text(article, "article")
    return article.rstrip() + "\nTL;DR:"


def translation_prompt(sentence: str, examples=None) -> str:
    """One ``"source = target"`` line per example pair, then ``"sentence ="``::

        The cat is sleeping on the chair. = Le chat dort sur la chaise.
        ...
        <sentence> =
    """
    _check_text(sentence, "sentence")
    pairs = _check_pairs(TRANSLATION_EXAMPLES if examples is None else examples, "translation examples")
    lines = [f"{source.strip()} = {target.strip()}" for source, target in pairs]
    return "\n".join(lines + [f"{sentence.strip()} ="])


def qa_prompt(question: str, document: str | None = None, examples=None) -> str:
    """The document (if any), a blank line, the example pairs, then the question::

        <document>

        Q: What is the capital of France?
        A: Paris

        Q: <question>
        A:
    """
    _check_text(question, "question")
    pairs = _check_pairs(QA_EXAMPLES if examples is None else examples, "question-answer examples")
    blocks = [] if not document or not document.strip() else [document.strip()]
    blocks += [f"Q: {q.strip()}\nA: {a.strip()}" for q, a in pairs]
    blocks.append(f"Q: {question.strip()}\nA:")
    return "\n\n".join(blocks)


def first_sentences(text: str, n: int = 3) -> str:
    """The first ``n`` complete sentences of ``text`` (stripped).  If it holds no complete
    sentence, the whole text (stripped): better a fragment than nothing."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends:
        return text.strip()
    return text[: ends[min(n, len(ends)) - 1]].strip()


def first_line(text: str) -> str:
    """``text`` up to its first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def load_pairs(path, text: str | None = None) -> list[tuple[str, str]]:
    """Example pairs from a file (or from ``text``, the file's contents already read; ``path``
    then only names it and gives its kind).

    - ``.json``: a list whose items are ``[first, second]`` lists or objects with exactly two
      string values (e.g. ``{"en": ..., "fr": ...}`` or ``{"q": ..., "a": ...}``), in order;
    - anything else (``.tsv``, ``.txt``): one pair per line, the two parts separated by a tab;
      empty lines and lines starting with ``#`` are skipped.
    """
    path = pathlib.Path(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    pairs = []
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of pairs, found {type(items).__name__}")
        for i, item in enumerate(items):
            values = list(item.values()) if isinstance(item, dict) else item
            if not isinstance(values, list) or len(values) != 2 or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{path}: item {i} is not a pair of two strings: {item!r}")
            pairs.append((values[0], values[1]))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected two tab-separated parts, found {len(parts)}")
            pairs.append((parts[0], parts[1]))
    if not pairs:
        raise ValueError(f"{path}: no example pairs found")
    return pairs


def _check_text(text, what: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the {what} must be a non-empty string, got {text!r}")


def _check_pairs(pairs, what: str) -> list[tuple[str, str]]:
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"{what}: item {i} must be a pair of two strings, got {pair!r}")
        if any("\n" in p for p in pair):
            raise ValueError(f"{what}: item {i} contains a newline, which would end the answer early: {pair!r}")
        out.append((pair[0], pair[1]))
    return out


# ---------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------


def summarize(model, tokenizer, article: str, max_new_tokens: int = 100, top_k: int = 2,
              temperature: float = 1.0, sentences: int = 3, seed=None, special_tokens: bool = True) -> str:
    """Summarize ``article``: ``article + "\\nTL;DR:"``, top-k sampling with k = 2 for 100
    tokens, and the first 3 generated sentences (the paper's settings).  ``special_tokens`` as
    in ``generate_text`` (for every task): True reads ``<|endoftext|>`` in the text as GPT-2's
    document separator, False as ordinary text."""
    text = generate_text(model, tokenizer, summary_prompt(article), max_new_tokens=max_new_tokens,
                         temperature=temperature, top_k=top_k, seed=seed, special_tokens=special_tokens)
    return first_sentences(text, sentences)


def translate(model, tokenizer, sentence: str, examples=None, max_new_tokens: int = 64,
              special_tokens: bool = True) -> str:
    """Translate ``sentence`` as the example pairs do (default: English to French): greedy,
    up to the first newline."""
    text = generate_text(model, tokenizer, translation_prompt(sentence, examples),
                         max_new_tokens=max_new_tokens, stop="\n", special_tokens=special_tokens)
    return first_line(text)


def answer(model, tokenizer, question: str, document: str | None = None, examples=None,
           max_new_tokens: int = 32, special_tokens: bool = True) -> str:
    """Answer ``question`` (about ``document`` if given) in the short style of the example
    pairs: greedy, up to the first newline."""
    text = generate_text(model, tokenizer, qa_prompt(question, document, examples),
                         max_new_tokens=max_new_tokens, stop="\n", special_tokens=special_tokens)
    return first_line(text)


def continue_text(model, tokenizer, prompt: str, max_new_tokens: int | None = None, **options) -> str:
    """Plain generation: the continuation of ``prompt``.  ``max_new_tokens`` (None: the
    settings', 50 by default) and ``options`` (e.g. ``temperature``, or ``settings``, a
    ``GenerationSettings``) as in ``gpt2np.generate_text``."""
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    return generate_text(model, tokenizer, prompt, **options)
