"""Generation: continue a prompt with the model, as token ids or as text.

Everything that decides what is generated travels in one ``GenerationSettings`` (a frozen
dataclass, checked when it is made): how many tokens, the sampling settings of
:mod:`gpt2np.sampling`, the seed and the stop ids.

The loop (``iter_ids`` / ``generate_ids``) runs on the model's KV cache: the prompt (one
sequence, or a ragged batch left-padded with an attention mask) goes through the model once,
then only one new token per row each step.  ``generate_text`` wraps it with the tokenizer:
text in, text out, optionally streamed piece by piece, ended by stop strings.

Each public function takes ``settings=`` and/or the settings' fields as keyword arguments;
the keywords given override the fields of ``settings`` (``GenerationSettings()`` if none)::

    settings = GenerationSettings(max_new_tokens=40, temperature=0.8, top_p=0.9)
    text = generate_text(model, tok, "Hello", settings=settings, seed=1)
    ids = generate_ids(model, tok.encode("Hello"), 40, temperature=0.8, top_p=0.9, seed=1)
    assert text == tok.decode(ids)

The model needs ``config.n_vocab``, ``config.n_ctx``, ``new_cache(batch_size, max_len)`` and
``model(ids, attention_mask=, cache=, last_only=True)`` as :class:`gpt2np.model.GPT2` has them;
its logits must be finite at every step (NaN or inf logits are a ValueError naming the step).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .sampling import (
    check_repetition_penalty,
    check_seed,
    check_temperature,
    check_top_k,
    check_top_p,
    make_rng,
    next_token_probs,
    sample,
)

EOT = 50256  # <|endoftext|> in the GPT-2 vocabulary, the default stop id


# ---------------------------------------------------------------------------------------
# The settings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """How to continue a prompt; every field is checked when the object is made.

    - ``max_new_tokens``: at most this many new tokens per row (an int >= 0; default 50).
    - ``temperature``: >= 0; 0 (the default) is greedy decoding.
    - ``top_k``: an int >= 1, or None (no top-k).
    - ``top_p``: a probability in (0, 1], or None (no top-p).
    - ``repetition_penalty``: a number > 0 (1 = none), or None (none).
    - ``seed``: None (fresh entropy), an int >= 0, a ``numpy.random.Generator`` (used as is:
      its state advances with each use), or for a batch a sequence of those, one per prompt
      (stored as a tuple).
    - ``stop_ids``: the ids that end a row, not returned (a tuple of ints; None or () for
      none; default ``(50256,)``, ``<|endoftext|>``).

    The sampling fields mean what they mean in :func:`gpt2np.sampling.next_token_probs`.
    Change fields with ``dataclasses.replace(settings, seed=2)`` (checked again).
    """

    max_new_tokens: int = 50
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | np.random.Generator | tuple | None = None
    stop_ids: tuple[int, ...] = (EOT,)

    def __post_init__(self):
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {n!r}")
        checked = dict(
            max_new_tokens=int(n),
            temperature=check_temperature(self.temperature),
            top_k=check_top_k(self.top_k),
            top_p=check_top_p(self.top_p),
            repetition_penalty=check_repetition_penalty(self.repetition_penalty),
            seed=_check_seeds(self.seed),
            stop_ids=_check_stop_ids(self.stop_ids),
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: store the normalised values


def _check_seeds(seed):
    if isinstance(seed, (list, tuple)):
        return tuple(check_seed(s) for s in seed)
    return check_seed(seed)


def _check_stop_ids(stop_ids) -> tuple[int, ...]:
    if stop_ids is None:
        return ()
    if isinstance(stop_ids, (int, np.integer)) and not isinstance(stop_ids, bool):
        stop_ids = (stop_ids,)
    if isinstance(stop_ids, (str, bytes)) or not hasattr(stop_ids, "__iter__"):
        raise ValueError(f"stop_ids must be a sequence of token ids (() for none), got {stop_ids!r}")
    ids = tuple(stop_ids)
    for s in ids:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"stop_ids must be token ids (integers >= 0), got {s!r} in {ids!r}")
    return tuple(int(s) for s in ids)


class _Unset:
    """The default of a keyword argument: not given, so the value comes from ``settings``."""

    def __repr__(self) -> str:
        return "<from settings>"


_UNSET = _Unset()


def _resolve(settings, default: GenerationSettings | None = None, **options) -> GenerationSettings:
    """``settings`` (or ``default``, or ``GenerationSettings()``) with the options that were given."""
    if settings is None:
        settings = default
    elif not isinstance(settings, GenerationSettings):
        raise ValueError(f"settings must be a GenerationSettings, got {type(settings).__name__}")
    fields = [f.name for f in dataclasses.fields(GenerationSettings)]
    unknown = [name for name in options if name not in fields]
    if unknown:
        raise TypeError(f"unknown generation setting {', '.join(map(repr, unknown))}; expected {', '.join(fields)}")
    given = {name: value for name, value in options.items() if value is not _UNSET}
    if settings is None:
        return GenerationSettings(**given)
    return dataclasses.replace(settings, **given) if given else settings


# ---------------------------------------------------------------------------------------
# The loop over ids
# ---------------------------------------------------------------------------------------


def _as_batch(ids, n_vocab: int) -> tuple[list[list[int]], bool]:
    """Normalise ``ids`` to a list of rows; also say whether one sequence was given."""
    arr = ids if isinstance(ids, np.ndarray) else None
    if arr is not None:
        if arr.ndim not in (1, 2):
            raise ValueError(f"ids must be one sequence [T] or a batch [B, T], got shape {arr.shape}")
        single = arr.ndim == 1
        rows = [arr.tolist()] if single else arr.tolist()
    else:
        if isinstance(ids, (str, bytes)):
            raise ValueError("ids must be token ids, not text (encode the text with the tokenizer first)")
        ids = list(ids)
        single = len(ids) == 0 or np.ndim(ids[0]) == 0
        rows = [ids] if single else [list(np.asarray(r).reshape(-1).tolist()) for r in ids]
    if not rows:
        raise ValueError("the batch is empty: give at least one sequence of ids")
    checked = []
    for b, row in enumerate(rows):
        where = "the prompt" if single else f"prompt {b}"
        if len(row) == 0:
            raise ValueError(f"{where} is empty: give at least one token id (e.g. <|endoftext|> = {EOT})")
        arr = np.asarray(row)
        if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{where} must be a flat sequence of integer token ids, got {row[:8]!r}")
        bad = np.flatnonzero((arr < 0) | (arr >= n_vocab))
        if bad.size:
            raise ValueError(f"{where} holds {int(arr[bad[0]])} at index {bad[0]}, not a token id in [0, {n_vocab})")
        checked.append(arr.astype(np.int64).tolist())
    return checked, single


def _row_rngs(seed, batch_size: int, single: bool):
    """One Generator shared by all rows, or one per row when ``seed`` is a sequence."""
    if isinstance(seed, tuple):
        if single or len(seed) != batch_size:
            raise ValueError(f"a list of seeds needs one seed per prompt ({batch_size}), got {len(seed)}")
        return [make_rng(s) for s in seed]
    rng = make_rng(seed)
    return [rng] * batch_size


def check_fits(prompt_len: int, max_new_tokens: int, n_ctx: int) -> None:
    """Raise if a prompt of ``prompt_len`` tokens plus ``max_new_tokens`` exceeds the context."""
    if prompt_len + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) = {prompt_len + max_new_tokens} "
            f"exceeds the model's context of n_ctx = {n_ctx} tokens; shorten the prompt or ask for fewer tokens"
        )


def iter_ids(model, ids, max_new_tokens=_UNSET, *, settings: GenerationSettings | None = None,
             halted: set | None = None, **options) -> Iterator:
    """Generate token by token on the KV cache, yielding as tokens arrive.

    ``ids``: one sequence of token ids (yields one int per step) or a ragged batch, a list
    of sequences of any lengths >= 1 (yields, per step, a list with one entry per row:
    the new id, or None for a row that has already finished).  A row finishes when it
    draws one of ``stop_ids`` (the stop id is *not* yielded, as in OpenAI's API) or after
    ``max_new_tokens`` tokens.

    ``settings`` and the keyword ``options`` (``temperature=``, ``top_k=``, ``seed=``, ...: the
    fields of ``GenerationSettings``; defaults: greedy, 50 tokens, stop at ``<|endoftext|>``); the
    options given override the fields of ``settings``.
    The repetition penalty of a row counts its own prompt and generated ids (never padding).
    ``seed``: None, an int or a Generator shared by all rows (each step draws one number per
    row, in row order, finished rows included, so rows never influence each other's stream),
    or a list with one seed per row (then row ``b`` samples exactly as prompt ``b`` alone
    with ``seed=seeds[b]``).

    ``halted``: an optional set of row indices that the caller may add to while iterating
    (e.g. when a row's text reached a stop string); those rows count as finished from the
    next step on.

    Raises ValueError before any work for bad settings or ids, or if the longest prompt plus
    ``max_new_tokens`` exceeds ``model.config.n_ctx``; while iterating, if the model returns
    logits that are not finite (NaN or inf), naming the step.
    """
    settings = _resolve(settings, max_new_tokens=max_new_tokens, **options)
    rows, single = _as_batch(ids, model.config.n_vocab)
    return _start(model, rows, single, settings, halted)


def _start(model, rows, single, settings: GenerationSettings, halted) -> Iterator:
    """The checks that need the model and the prompts, then the loop (not started yet)."""
    rngs = _row_rngs(settings.seed, len(rows), single)
    longest = max(len(r) for r in rows)
    check_fits(longest, settings.max_new_tokens, model.config.n_ctx)
    dtype = getattr(model, "dtype", None)  # GPT2 says its dtype: refuse what would overflow in it
    if dtype is not None:
        check_temperature(settings.temperature, dtype)
        check_repetition_penalty(settings.repetition_penalty, dtype)
    halted = set() if halted is None else halted
    return _loop(model, rows, single, settings, rngs, longest, halted)


def _loop(model, rows, single, settings: GenerationSettings, rngs, longest, halted):
    # A generator function of its own, so that iter_ids checks its arguments eagerly.
    max_new_tokens, stop = settings.max_new_tokens, set(settings.stop_ids)
    if max_new_tokens == 0:
        return
    batch = len(rows)
    tokens = np.zeros((batch, longest), dtype=np.int64)  # left-padded prompts [B, T]
    mask = np.zeros((batch, longest), dtype=np.int64)  # 1 = token, 0 = padding
    for b, row in enumerate(rows):
        tokens[b, longest - len(row):] = row
        mask[b, longest - len(row):] = 1
    history = [list(r) for r in rows]  # what the repetition penalty sees, per row
    greedy = settings.temperature == 0
    # the last new token is never fed back, so the cache needs one place less
    cache = model.new_cache(batch, longest + max_new_tokens - 1)
    logits = model(tokens, attention_mask=mask, cache=cache, last_only=True)  # [B, V]
    active = list(range(batch))  # the original rows still in the cache, in cache order
    for step in range(max_new_tokens):
        keep = [i for i, b in enumerate(active) if b not in halted]
        if not keep:
            return
        if len(keep) < len(active):
            cache, logits, active = _keep_rows(model, cache, keep), logits[keep], [active[i] for i in keep]
        _check_finite(logits, step, active, single)
        probs = next_token_probs(
            logits, settings.temperature, settings.top_k, settings.top_p, settings.repetition_penalty,
            previous_ids=[history[b] for b in active],
        )  # [A, V]
        drawn = dict(zip(active, np.argmax(probs, axis=-1).tolist())) if greedy else {}
        if not greedy:
            # one draw per original row per step, in row order, finished rows included, so a
            # shared generator gives every row the same stream whatever the others do
            where = {b: i for i, b in enumerate(active)}
            for b in range(batch):
                if b in where:
                    drawn[b] = sample(probs[where[b]], rngs[b])
                else:
                    rngs[b].random()
        out: list = [None] * batch
        for b in active:
            if drawn[b] not in stop:
                history[b].append(drawn[b])
                out[b] = drawn[b]
        keep = [i for i, b in enumerate(active) if out[b] is not None]
        if not keep:
            return
        yield out[0] if single else out
        if step + 1 < max_new_tokens:
            if len(keep) < len(active):  # rows that drew a stop id leave the batch
                cache, active = _keep_rows(model, cache, keep), [active[i] for i in keep]
            feed = np.array([[history[b][-1]] for b in active], dtype=np.int64)  # [A, 1]
            logits = model(feed, cache=cache, last_only=True)  # [A, V]


def _check_finite(logits: np.ndarray, step: int, active: list[int], single: bool) -> None:
    """Raise if the model's logits hold NaN or inf: greedy would pick an inf token, sampling
    would draw from NaN probabilities."""
    finite = np.isfinite(logits)
    if finite.all():
        return
    i, j = (int(k[0]) for k in np.nonzero(~finite))
    value = logits[i, j]
    kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
    row = "" if single else f" (prompt {active[i]})"
    raise ValueError(f"the model returned {kind} logits at step {step}{row}, e.g. for token {j}; "
                     f"logits must be finite (its weights are probably broken)")


def _keep_rows(model, cache, keep: list[int]):
    """A cache holding only the rows ``keep`` of ``cache`` (finished rows stop costing time)."""
    n = cache.length
    smaller = model.new_cache(len(keep), cache.max_len)
    smaller.keys[:, :, :, :n] = cache.keys[:, keep, :, :n]  # [L, B, H, S, dh]
    smaller.values[:, :, :, :n] = cache.values[:, keep, :, :n]
    smaller.mask[:] = cache.mask[keep]
    smaller.next_position = cache.next_position[keep].copy()
    smaller.length = n
    return smaller


def generate_ids(model, ids, max_new_tokens=_UNSET, *, settings: GenerationSettings | None = None, **options):
    """The new token ids: a list for one sequence, a list of lists for a batch.

    The stop id that ended a row is not included.  Same arguments as ``iter_ids``.
    Greedy decoding of a batch gives each row exactly what its prompt gives alone.
    """
    settings = _resolve(settings, max_new_tokens=max_new_tokens, **options)
    rows, single = _as_batch(ids, model.config.n_vocab)
    steps = _start(model, rows, single, settings, None)
    if single:
        return list(steps)
    out = [[] for _ in rows]
    for step in steps:
        for b, t in enumerate(step):
            if t is not None:
                out[b].append(t)
    return out


# ---------------------------------------------------------------------------------------
# Text in, text out
# ---------------------------------------------------------------------------------------


def _stop_strings(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or s == "":
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
    return stops


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could still grow into a stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[len(text) - k:]):
                longest = k
                break
    return longest


def _first_stop(text: str, stops: list[str]) -> int:
    """Where the text is cut: the start of the stop string that is complete first (the
    occurrence that *ends* first; of two ending together, the longer one), or -1.

    Reading the text character by character would stop there, so the result does not
    depend on how the text was split into tokens.
    """
    found = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    return min(found)[1] if found else -1


class _TextStream:
    """Turns one row's new ids into text pieces: UTF-8 safe, stop strings cut off.

    ``feed(id)`` returns the text that is certain (never part of a stop string, never half
    a character); ``done`` becomes True once a stop string appeared; ``finish()`` returns
    what is left at the end.
    """

    def __init__(self, tokenizer, stops: list[str]):
        self.decoder = tokenizer.incremental_decoder()
        self.stops = stops
        self.pending = ""  # decoded, not yet given out (could begin a stop string)
        self.done = False

    def _release(self, final: bool) -> str:
        cut = _first_stop(self.pending, self.stops)
        if cut >= 0:
            self.done = True
            piece, self.pending = self.pending[:cut], ""
            return piece
        keep = 0 if final else _held_back(self.pending, self.stops)
        piece = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(piece):]
        return piece

    def feed(self, token: int) -> str:
        self.pending += self.decoder.feed(token)
        return self._release(final=False)

    def finish(self) -> str:
        if self.done:
            return ""
        self.pending += self.decoder.flush()
        return self._release(final=True)


def _prompt_ids(tokenizer, prompt: str, special_tokens: bool) -> list[int]:
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if special_tokens:
        ids = tokenizer.encode(prompt, allowed_special="all")
    else:
        ids = tokenizer.encode_ordinary(prompt)
    return ids or [tokenizer.eot_token]  # unconditional sampling starts from <|endoftext|>


def generate_text(model, tokenizer, prompt, max_new_tokens=_UNSET, *, stop=None, stream: bool = False,
                  special_tokens: bool = True, settings: GenerationSettings | None = None, **options):
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens; return only the new text.

    - ``settings`` and the keyword ``options`` (``temperature=``, ``top_p=``, ``seed=``, ...) as
      in ``iter_ids`` (see ``GenerationSettings``): greedy and 50 tokens by default.  Without ``settings`` the stop id is the tokenizer's
      ``<|endoftext|>``; with it, ``settings.stop_ids``.
    - With ``special_tokens=True`` (default) the text ``<|endoftext|>`` in a prompt becomes
      the document separator token, as in GPT-2's training data; ``False`` encodes it as
      plain text.  An empty prompt starts from ``<|endoftext|>``, as OpenAI's unconditional
      sampler does.
    - Generation ends at a stop id (not returned; ``<|endoftext|>`` by default), after
      ``max_new_tokens``, or at the first of the ``stop`` strings (a string or a list); the
      stop string and anything after it are not returned.
    - ``stream=True`` returns an iterator of text pieces, yielded as tokens arrive; a piece
      never splits a UTF-8 character and never shows text that may turn out to start a stop
      string; the pieces join to exactly the text ``stream=False`` returns.
    - ``prompt`` may be a list of strings (a ragged batch, ``stream=False`` only): returns a
      list of texts, each the same as its prompt generated alone (greedy).

    Errors (bad settings, prompt too long for the context) are raised at the call, before
    any work, also with ``stream=True``; logits that are not finite raise while generating.
    """
    settings = _resolve(settings, GenerationSettings(stop_ids=(tokenizer.eot_token,)),
                        max_new_tokens=max_new_tokens, **options)
    stops = _stop_strings(stop)
    if isinstance(prompt, (list, tuple)):
        if stream:
            raise ValueError("stream=True takes one prompt string, not a list of prompts")
        rows = [_prompt_ids(tokenizer, p, special_tokens) for p in prompt]
        if not rows:
            return []
        return _batch_text(model, tokenizer, rows, settings, stops)
    ids = _prompt_ids(tokenizer, prompt, special_tokens)
    steps = _start(model, *_as_batch(ids, model.config.n_vocab), settings, None)
    pieces = _stream_text(steps, _TextStream(tokenizer, stops))
    return pieces if stream else "".join(pieces)


def _stream_text(steps, row: _TextStream):
    for token in steps:
        piece = row.feed(token)
        if piece:
            yield piece
        if row.done:
            steps.close()  # stop the model at once
            return
    piece = row.finish()
    if piece:
        yield piece


def _batch_text(model, tokenizer, rows, settings: GenerationSettings, stops) -> list[str]:
    halted: set[int] = set()
    steps = _start(model, *_as_batch(rows, model.config.n_vocab), settings, halted)
    streams = [_TextStream(tokenizer, stops) for _ in rows]
    texts = [[] for _ in rows]
    for step in steps:
        for b, token in enumerate(step):
            if token is None or streams[b].done:
                continue
            texts[b].append(streams[b].feed(token))
            if streams[b].done:
                halted.add(b)
    for b, row in enumerate(streams):
        texts[b].append(row.finish())
    return ["".join(t) for t in texts]


def generate(*args, **kwargs):
    """Deprecated name of ``generate_text`` (the same arguments); goes away in the next release."""
    warnings.warn("gpt2np.generate is deprecated: use gpt2np.generate_text (the same arguments); "
                  "the old name goes away in the next release", DeprecationWarning, stacklevel=2)
    return generate_text(*args, **kwargs)
