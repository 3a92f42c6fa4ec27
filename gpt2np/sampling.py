"""Sampling and generation: from logits to the next token, and the loop around the model.

The path of one step (design.md)::

    logits [V] ──repetition penalty──▶ ──temperature──▶ ──top-k──▶ ──top-p──▶ softmax ──draw──▶ next id

Each processor is a small function of its own (``apply_repetition_penalty``,
``apply_temperature``, ``apply_top_k``, ``apply_top_p``) with exactly the semantics of
the transformers processors of the same purpose (``RepetitionPenaltyLogitsProcessor``,
``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``, with
``min_tokens_to_keep=1``); ``next_token_probs`` chains them in that order.
All of them take logits ``[V]`` or ``[B, V]`` and keep their dtype (float32 stays float32).

The generation loop (``iter_ids`` / ``generate_ids``) runs on the model's KV cache: the
prompt (one sequence, or a ragged batch left-padded with an attention mask) goes through
the model once, then only one new token per row each step.  ``generate`` wraps it with
the tokenizer: text in, text out, optionally streamed piece by piece.

Scoring: ``perplexity`` computes the sliding-window perplexity of a long text the way
transformers' perplexity guide does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .layers import log_softmax, softmax  # the formulas of layers.py, along the vocabulary axis

EOT = 50256  # <|endoftext|> in the GPT-2 vocabulary, the default stop id

# ---------------------------------------------------------------------------------------
# Argument checks (shared by the processors and the loop)
# ---------------------------------------------------------------------------------------


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not (temperature >= 0) or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    return float(temperature)


def _check_top_k(top_k) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k), got {top_k!r}")
    return int(top_k)


def _check_top_p(top_p) -> float | None:
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating, np.integer)) or not (0 < top_p <= 1):
        raise ValueError(f"top_p must be a probability with 0 < top_p <= 1 (or None), got {top_p!r}")
    return float(top_p)


def _check_penalty(penalty) -> float | None:
    if penalty is None:
        return None
    if (
        isinstance(penalty, bool)
        or not isinstance(penalty, (int, float, np.floating, np.integer))
        or not (penalty > 0)
        or math.isinf(penalty)
    ):
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = none), got {penalty!r}")
    return float(penalty)


def _as_logits(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [V] or [B, V] with V >= 1, got shape {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    return logits


# ---------------------------------------------------------------------------------------
# The four processors
# ---------------------------------------------------------------------------------------


def apply_repetition_penalty(logits: np.ndarray, previous_ids, penalty: float) -> np.ndarray:
    """Make tokens that already occurred less likely (CTRL, Keskar et al. 2019).

    For every *distinct* id ``i`` in ``previous_ids`` (so a token seen five times is
    penalised once)::

        z_i <- z_i / penalty   if z_i > 0   (a positive logit shrinks towards 0)
        z_i <- z_i * penalty   if z_i < 0   (a negative logit grows away from 0)

    ``penalty > 1`` discourages repetition, ``penalty < 1`` encourages it, 1 does nothing.

    logits ``[V]`` with previous_ids a sequence of ids, or ``[B, V]`` with previous_ids a
    list of B sequences (rows may differ in length).  Returns a new array.
    """
    logits = _as_logits(logits)
    penalty = _check_penalty(penalty)
    rows = [previous_ids] if logits.ndim == 1 else list(previous_ids)
    if len(rows) != logits.reshape(-1, logits.shape[-1]).shape[0]:
        raise ValueError(f"previous_ids has {len(rows)} rows but logits has {logits.shape[0]} rows")
    out = logits.copy().reshape(-1, logits.shape[-1])  # [B, V]
    factor = out.dtype.type(penalty)  # keep float32 float32
    for row, ids in zip(out, rows):
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if ids.size == 0:
            continue
        if ids[0] < 0 or ids[-1] >= out.shape[-1]:
            bad = ids[0] if ids[0] < 0 else ids[-1]
            raise ValueError(f"previous id {bad} is outside the vocabulary [0, {out.shape[-1]})")
        z = row[ids]
        row[ids] = np.where(z < 0, z * factor, z / factor)
    return out.reshape(logits.shape)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Sharpen (T < 1) or flatten (T > 1) the distribution: ``z <- z / T`` (T > 0).

    ``softmax(z / T)`` tends to the one-hot argmax as T -> 0 (greedy decoding), and to the
    uniform distribution as T -> infinity.  Shapes ``[V]`` or ``[B, V]``.
    """
    logits = _as_logits(logits)
    temperature = _check_temperature(temperature)
    if temperature == 0:
        raise ValueError("apply_temperature needs temperature > 0; temperature 0 (greedy) is handled by next_token_probs")
    return logits / logits.dtype.type(temperature)


def apply_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the ``top_k`` largest logits of each row, set the others to -inf (Fan et al. 2018).

    A logit survives if it is >= the k-th largest value of its row, so ties with the
    k-th value are all kept (a row may keep more than k tokens).  ``top_k >= V`` keeps all.
    Shapes ``[V]`` or ``[B, V]``.
    """
    logits = _as_logits(logits)
    k = min(_check_top_k(top_k), logits.shape[-1])
    kth_largest = np.partition(logits, -k, axis=-1)[..., -k, None]  # [..., 1], O(V) per row
    return np.where(logits < kth_largest, logits.dtype.type(-np.inf), logits)


def apply_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most likely tokens
    whose probabilities add up to at least ``top_p``; set the others to -inf.

    As transformers computes it: sort the logits in *ascending* order, take the
    cumulative sum of their softmax, and remove every token whose cumulative probability
    is ``<= 1 - top_p`` (the unlikely tail that together holds at most ``1 - top_p``); the
    most likely token is always kept.

    Ties at the boundary: transformers orders tied logits by torch's unstable sort, so
    which of several equal tokens it keeps depends on torch's sorting algorithm.  Here
    ties are broken as greedy decoding breaks them: the lower id counts as more likely
    (so ``top_p`` -> 0 keeps exactly the argmax).  The number of tokens kept, and their
    probabilities, are the same either way.  Shapes ``[V]`` or ``[B, V]``.
    """
    logits = _as_logits(logits)
    top_p = _check_top_p(top_p)
    # ascending by logit; among equal logits higher ids first (a stable sort of the reversed row)
    V = logits.shape[-1]
    order = (V - 1) - np.argsort(logits[..., ::-1], axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    # accumulate in float64 and round each partial sum back, as torch does on the CPU: a
    # float32 running sum over 50257 terms drifts enough to move the cut
    cumulative = np.cumsum(softmax(sorted_logits), axis=-1, dtype=np.float64).astype(logits.dtype)  # [..., V]
    remove_sorted = cumulative <= logits.dtype.type(1 - top_p)
    remove_sorted[..., -1] = False  # min_tokens_to_keep = 1
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)  # back to vocabulary order
    return np.where(remove, logits.dtype.type(-np.inf), logits)


def greedy_probs(logits: np.ndarray) -> np.ndarray:
    """The one-hot distribution at the argmax of each row (the first one on ties)."""
    logits = _as_logits(logits)
    probs = np.zeros_like(logits)
    np.put_along_axis(probs, np.argmax(logits, axis=-1)[..., None], 1, axis=-1)
    return probs


def next_token_probs(
    logits,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    previous_ids=None,
) -> np.ndarray:
    """The distribution the next token is drawn from.

    Applies, in this order (as transformers' ``generate`` does): the repetition penalty
    (on ``previous_ids``: ids for ``[V]`` logits, one list of ids per row for ``[B, V]``),
    temperature, top-k, top-p; then softmax.  ``temperature=0`` means greedy: the one-hot
    distribution at the argmax of the (penalised) logits.  ``None`` (or penalty 1, top-p 1)
    switches a processor off.

    logits ``[V]`` or ``[B, V]`` -> probabilities of the same shape and float dtype.
    """
    logits = _as_logits(logits)
    temperature = _check_temperature(temperature)
    top_k, top_p = _check_top_k(top_k), _check_top_p(top_p)
    repetition_penalty = _check_penalty(repetition_penalty)
    if repetition_penalty is not None and repetition_penalty != 1.0:
        if previous_ids is None:
            raise ValueError("repetition_penalty needs previous_ids (the ids generated or given so far)")
        logits = apply_repetition_penalty(logits, previous_ids, repetition_penalty)
    if temperature == 0:
        return greedy_probs(logits)
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = apply_top_p(logits, top_p)
    return softmax(logits)


# ---------------------------------------------------------------------------------------
# Drawing a token
# ---------------------------------------------------------------------------------------


def make_rng(seed=None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``seed``: None (fresh entropy), an int, or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    raise ValueError(f"seed must be None, an int >= 0 or a numpy.random.Generator, got {seed!r}")


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one id from the distribution ``probs [V]`` by inverting its cumulative sum.

    One uniform number ``u`` in [0, 1) per draw picks the first id whose cumulative
    probability exceeds ``u * total``; ids of probability 0 are never picked.
    """
    cdf = np.cumsum(probs, dtype=np.float64)  # float64: the tail of 50257 float32 terms
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


# ---------------------------------------------------------------------------------------
# The generation loop
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
    """One Generator shared by all rows, or one per row when ``seed`` is a list."""
    if isinstance(seed, (list, tuple)):
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


def iter_ids(
    model,
    ids,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed=None,
    stop_ids=(EOT,),
    halted: set | None = None,
) -> Iterator:
    """Generate token by token on the KV cache, yielding as tokens arrive.

    ``ids``: one sequence of token ids (yields one int per step) or a ragged batch, a list
    of sequences of any lengths >= 1 (yields, per step, a list with one entry per row:
    the new id, or None for a row that has already finished).  A row finishes when it
    draws one of ``stop_ids`` (the stop id is *not* yielded, as in OpenAI's API) or after
    ``max_new_tokens`` tokens.

    Sampling settings as in ``next_token_probs``; the repetition penalty of a row counts
    its own prompt and generated ids (never padding).  ``seed``: None, an int or a
    Generator shared by all rows (each step draws one number per row, in row order,
    finished rows included, so rows never influence each other's stream), or a list with
    one seed per row (then row ``b`` samples exactly as prompt ``b`` alone with
    ``seed=seeds[b]``).

    ``halted``: an optional set of row indices that the caller may add to while iterating
    (e.g. when a row's text reached a stop string); those rows count as finished from the
    next step on.

    Raises ValueError before any work if the longest prompt plus ``max_new_tokens``
    exceeds ``model.config.n_ctx``.
    """
    n_vocab, n_ctx = model.config.n_vocab, model.config.n_ctx
    rows, single = _as_batch(ids, n_vocab)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    settings = dict(
        temperature=_check_temperature(temperature),
        top_k=_check_top_k(top_k),
        top_p=_check_top_p(top_p),
        repetition_penalty=_check_penalty(repetition_penalty),
    )
    stop = {int(s) for s in (stop_ids or ())}
    rngs = _row_rngs(seed, len(rows), single)
    longest = max(len(r) for r in rows)
    check_fits(longest, max_new_tokens, n_ctx)
    halted = set() if halted is None else halted
    return _loop(model, rows, single, int(max_new_tokens), settings, stop, rngs, longest, halted)


def _loop(model, rows, single, max_new_tokens, settings, stop, rngs, longest, halted):
    # A generator function of its own, so that iter_ids checks its arguments eagerly.
    if max_new_tokens == 0:
        return
    batch = len(rows)
    tokens = np.zeros((batch, longest), dtype=np.int64)  # left-padded prompts [B, T]
    mask = np.zeros((batch, longest), dtype=np.int64)  # 1 = token, 0 = padding
    for b, row in enumerate(rows):
        tokens[b, longest - len(row):] = row
        mask[b, longest - len(row):] = 1
    history = [list(r) for r in rows]  # what the repetition penalty sees, per row
    greedy = settings["temperature"] == 0
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
        if np.isnan(logits).any():
            raise ValueError(f"the model returned NaN logits at step {step}; its weights are probably broken")
        probs = next_token_probs(logits, previous_ids=[history[b] for b in active], **settings)  # [A, V]
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


def generate_ids(
    model,
    ids,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed=None,
    stop_ids=(EOT,),
):
    """The new token ids: a list for one sequence, a list of lists for a batch.

    The stop id that ended a row is not included.  Same arguments as ``iter_ids``.
    Greedy decoding of a batch gives each row exactly what its prompt gives alone.
    """
    steps = iter_ids(model, ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop_ids)
    rows, single = _as_batch(ids, model.config.n_vocab)
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


def generate(
    model,
    tokenizer,
    prompt,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed=None,
    stop=None,
    stream: bool = False,
    special_tokens: bool = True,
):
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens; return only the new text.

    - Greedy by default (``temperature=0``); sampling settings as in ``next_token_probs``.
    - With ``special_tokens=True`` (default) the text ``<|endoftext|>`` in a prompt becomes
      the document separator token, as in GPT-2's training data; ``False`` encodes it as
      plain text.  An empty prompt starts from ``<|endoftext|>``, as OpenAI's unconditional
      sampler does.
    - Generation ends at ``<|endoftext|>`` (not returned), after ``max_new_tokens``, or at
      the first of the ``stop`` strings (a string or a list); the stop string and anything
      after it are not returned.
    - ``stream=True`` returns an iterator of text pieces, yielded as tokens arrive; a piece
      never splits a UTF-8 character and never shows text that may turn out to start a stop
      string; the pieces join to exactly the text ``stream=False`` returns.
    - ``prompt`` may be a list of strings (a ragged batch, ``stream=False`` only): returns a
      list of texts, each the same as its prompt generated alone (greedy).

    Errors (bad settings, prompt too long for the context) are raised at the call, before
    any work, also with ``stream=True``.
    """
    stops = _stop_strings(stop)
    settings = dict(
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed
    )
    if isinstance(prompt, (list, tuple)):
        if stream:
            raise ValueError("stream=True takes one prompt string, not a list of prompts")
        rows = [_prompt_ids(tokenizer, p, special_tokens) for p in prompt]
        if not rows:
            return []
        return _batch_text(model, tokenizer, rows, max_new_tokens, settings, stops)
    ids = _prompt_ids(tokenizer, prompt, special_tokens)
    steps = iter_ids(model, ids, max_new_tokens, stop_ids=(tokenizer.eot_token,), **settings)
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


def _batch_text(model, tokenizer, rows, max_new_tokens, settings, stops) -> list[str]:
    halted: set[int] = set()
    steps = iter_ids(model, rows, max_new_tokens, stop_ids=(tokenizer.eot_token,), halted=halted, **settings)
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




# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perplexity:
    """The result of ``perplexity``: ``ppl = exp(nll)``, with ``nll`` the mean negative
    log-likelihood (nats per token) over the ``n_tokens`` tokens that were scored."""

    n_tokens: int
    nll: float
    ppl: float


def sliding_windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows of transformers' perplexity guide as ``(begin, end, n_target)``.

    Windows start every ``stride`` tokens and hold up to ``max_length`` tokens; the targets
    of a window are its last ``n_target = end - previous end`` tokens (the ones no earlier
    window scored), the tokens before them serve only as context.  The last window ends at
    the end of the text.
    """
    windows, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    return windows


def perplexity(
    model, ids, max_length: int | None = None, stride: int | None = None, guide_weighting: bool = False
) -> Perplexity:
    """Perplexity of a long token sequence with a sliding window, as transformers' guide
    ("Perplexity of fixed-length models") computes it.

    Windows of ``max_length`` tokens (default ``n_ctx``) start every ``stride`` tokens
    (``sliding_windows``; default stride ``min(512, max_length)``, the guide's); each scores only its new tokens, given everything before them in
    the window as context.  Token ``t`` is scored as ``-log p(x_t | context)``.  As in the
    guide, the first token of each window is never a prediction (there is nothing before it
    to predict it from): the text's first token is never scored, and when ``stride >=
    max_length`` (no overlap) neither is the first token of any later window.

    The guide weights each window's mean loss by ``n_target - 1`` (to remove the first token
    of the window, which is only right for windows without overlap), so with overlapping
    windows it under-weights every window after the first by one token.  By default this
    function averages over exactly the tokens scored (a true per-token mean);
    ``guide_weighting=True`` reproduces the guide's number instead.

    Returns ``Perplexity(n_tokens, nll, ppl)`` with ``ppl = exp(nll)``.
    """
    n_ctx = model.config.n_ctx
    max_length = n_ctx if max_length is None else max_length
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or not 2 <= max_length <= n_ctx:
        raise ValueError(f"max_length must be an integer in [2, n_ctx = {n_ctx}], got {max_length!r}")
    stride = min(512, max_length) if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= max_length:
        raise ValueError(f"stride must be an integer in [1, max_length = {max_length}], got {stride!r}")
    (ids,), _ = _as_batch([list(np.asarray(ids).reshape(-1).tolist())], model.config.n_vocab)
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens (the first one is never predicted), got {len(ids)}")
    ids = np.asarray(ids, dtype=np.int64)
    nll_sum, n_scored, guide_sum, guide_count = 0.0, 0, 0.0, 0
    for begin, end, n_target in sliding_windows(len(ids), max_length, stride):
        window = ids[begin:end]
        logp = log_softmax(model(window[:-1]))  # [W-1, V]: position j predicts token j+1
        nll = -logp[np.arange(len(window) - 1), window[1:]]  # [W-1]
        scored = nll[len(nll) - min(n_target, len(nll)):].astype(np.float64)
        if scored.size == 0:
            continue  # a 1-token last window predicts nothing (the guide gets NaN here)
        nll_sum += scored.sum()
        n_scored += scored.size
        guide_sum += scored.mean() * (n_target - 1)
        guide_count += n_target - 1
    if guide_weighting:  # the guide's count and mean
        n_scored, mean = guide_count, guide_sum / guide_count
    else:
        mean = nll_sum / n_scored
    return Perplexity(n_tokens=n_scored, nll=float(mean), ppl=float(math.exp(mean)))
