"""Sampling: from the logits of one step to the next token id.

The path of one step::

    logits [V] ──repetition penalty──▶ ──temperature──▶ ──top-k──▶ ──top-p──▶ softmax ──draw──▶ next id

This module holds the checks of those settings (``check_temperature``, ``check_top_k``,
``check_top_p``, ``check_repetition_penalty``, ``check_seed``), the four processors and the draw.
Each processor is a small function of its own (``apply_repetition_penalty``,
``apply_temperature``, ``apply_top_k``, ``apply_top_p``) with exactly the semantics of
the transformers processors of the same purpose (``RepetitionPenaltyLogitsProcessor``,
``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``, with
``min_tokens_to_keep=1``); ``next_token_probs`` chains them in that order.
All of them take logits ``[V]`` or ``[B, V]`` and keep their dtype (float32 stays float32).
A processor never turns finite logits into inf or NaN: a temperature or penalty so extreme that
it would (in the logits' dtype) is refused with a ValueError.

``make_rng`` and ``sample`` draw the token.  The loop around the model lives in
:mod:`gpt2np.generation`, scoring in :mod:`gpt2np.scoring`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .layers import softmax  # the formula of layers.py, along the vocabulary axis

_NUMBER = (int, float, np.floating, np.integer)

# ---------------------------------------------------------------------------------------
# Argument checks (shared by the processors and gpt2np.generation.GenerationSettings)
# ---------------------------------------------------------------------------------------


def _rounds_away(value: float, dtype) -> str | None:
    """What ``value`` (> 0) becomes in the float ``dtype`` if that is 0 or inf, else None."""
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        return None
    with np.errstate(over="ignore", under="ignore"):
        rounded = np.dtype(dtype).type(value)
    return None if 0 < rounded < np.inf else f"{rounded} in {np.dtype(dtype).name}"


def check_temperature(temperature, dtype=None) -> float:
    """``temperature`` as a float: a finite number >= 0 (0 = greedy).

    With ``dtype`` (the logits' float dtype), also refuse a temperature > 0 that rounds to 0
    in it: dividing the logits by it would make them inf.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, _NUMBER):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not (temperature >= 0) or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    rounded = _rounds_away(temperature, dtype) if temperature > 0 else None
    if rounded is not None:
        raise ValueError(f"temperature {temperature!r} rounds to {rounded}, which would make the logits inf; "
                         f"use temperature=0 for greedy decoding or a larger temperature")
    return float(temperature)


def check_top_k(top_k) -> int | None:
    """``top_k`` as an int >= 1, or None (no top-k)."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k), got {top_k!r}")
    return int(top_k)


def check_top_p(top_p) -> float | None:
    """``top_p`` as a float with 0 < top_p <= 1, or None (no top-p)."""
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, _NUMBER) or not (0 < top_p <= 1):
        raise ValueError(f"top_p must be a probability with 0 < top_p <= 1 (or None), got {top_p!r}")
    return float(top_p)


def check_repetition_penalty(penalty, dtype=None) -> float | None:
    """``penalty`` as a float: a finite number > 0 (1 = none), or None (none).

    With ``dtype`` (the logits' float dtype), also refuse a penalty that rounds to 0 or inf
    in it (e.g. 1e-50 in float32): dividing a positive logit by 0 would make it inf.
    """
    if penalty is None:
        return None
    if isinstance(penalty, bool) or not isinstance(penalty, _NUMBER) or not (penalty > 0) or math.isinf(penalty):
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = none), got {penalty!r}")
    rounded = _rounds_away(penalty, dtype)
    if rounded is not None:
        raise ValueError(f"repetition_penalty {penalty!r} rounds to {rounded}, which would make the logits inf; "
                         f"use a penalty closer to 1 (1 = none)")
    return float(penalty)


def check_seed(seed):
    """``seed`` as given, if it is None (fresh entropy), an int >= 0 or a numpy Generator."""
    if isinstance(seed, np.random.Generator) or seed is None:
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    raise ValueError(f"seed must be None, an int >= 0 or a numpy.random.Generator, got {seed!r}")


def _as_logits(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [V] or [B, V] with V >= 1, got shape {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    return logits


def _overflowed(before: np.ndarray, after: np.ndarray):
    """The first index (a tuple) where a finite ``before`` became inf or NaN in ``after``, or None."""
    bad = np.isfinite(before) & ~np.isfinite(after)
    if not bad.any():
        return None
    return tuple(int(i[0]) for i in np.nonzero(bad))


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
    list of B sequences (rows may differ in length).  Returns a new array.  Raises ValueError
    if the penalty rounds to 0 or inf in the logits' dtype, or would turn a finite logit into
    inf (too extreme for that dtype).
    """
    logits = _as_logits(logits)
    penalty = check_repetition_penalty(penalty, logits.dtype)
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
        with np.errstate(over="ignore", invalid="ignore"):  # np.where computes both branches
            new = np.where(z < 0, z * factor, z / factor)
        where = _overflowed(z, new)
        if where is not None:
            i = ids[where[0]]
            raise ValueError(f"repetition_penalty {penalty!r} is too extreme for {out.dtype.name} logits: "
                             f"it turns the logit {z[where[0]]} of token {i} into {new[where[0]]}; "
                             f"use a penalty closer to 1")
        row[ids] = new
    return out.reshape(logits.shape)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Sharpen (T < 1) or flatten (T > 1) the distribution: ``z <- z / T`` (T > 0).

    ``softmax(z / T)`` tends to the one-hot argmax as T -> 0 (greedy decoding), and to the
    uniform distribution as T -> infinity.  Shapes ``[V]`` or ``[B, V]``.  Raises ValueError
    if T is so small that a finite logit divided by it is inf in the logits' dtype.
    """
    logits = _as_logits(logits)
    temperature = check_temperature(temperature, logits.dtype)
    if temperature == 0:
        raise ValueError("apply_temperature needs temperature > 0; temperature 0 (greedy) is handled by next_token_probs")
    with np.errstate(over="ignore"):
        out = logits / logits.dtype.type(temperature)
    where = _overflowed(logits, out)
    if where is not None:
        raise ValueError(f"temperature {temperature!r} is too small for {logits.dtype.name} logits: the logit "
                         f"{logits[where]} becomes {out[where]}; use temperature=0 for greedy decoding "
                         f"or a larger temperature")
    return out


def apply_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the ``top_k`` largest logits of each row, set the others to -inf (Fan et al. 2018).

    A logit survives if it is >= the k-th largest value of its row, so ties with the
    k-th value are all kept (a row may keep more than k tokens).  ``top_k >= V`` keeps all.
    Shapes ``[V]`` or ``[B, V]``.
    """
    logits = _as_logits(logits)
    k = min(check_top_k(top_k), logits.shape[-1])
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
    top_p = check_top_p(top_p)
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
    temperature = check_temperature(temperature)
    top_k, top_p = check_top_k(top_k), check_top_p(top_p)
    repetition_penalty = check_repetition_penalty(repetition_penalty)
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
    seed = check_seed(seed)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one id from the distribution ``probs [V]`` by inverting its cumulative sum.

    One uniform number ``u`` in [0, 1) per draw picks the first id whose cumulative
    probability exceeds ``u * total``; ids of probability 0 are never picked.  Raises
    ValueError if the probabilities do not have a finite total > 0 (e.g. they hold NaN).
    """
    cdf = np.cumsum(probs, dtype=np.float64)  # float64: the tail of 50257 float32 terms
    if not (0 < cdf[-1] < math.inf):
        raise ValueError(f"probs must be finite and >= 0 with a total > 0, got a total of {cdf[-1]}")
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


# ---------------------------------------------------------------------------------------
# Names that moved to gpt2np.generation and gpt2np.scoring (kept for one release)
# ---------------------------------------------------------------------------------------

_MOVED = {
    "EOT": "generation",
    "check_fits": "generation",
    "iter_ids": "generation",
    "generate_ids": "generation",
    "generate": "generation",
    "Perplexity": "scoring",
    "sliding_windows": "scoring",
    "perplexity": "scoring",
}


def __getattr__(name: str):
    """``gpt2np.sampling.generate_ids`` and the other moved names still work, with a
    DeprecationWarning that names their new module (``generate`` warns when called)."""
    if name not in _MOVED:
        raise AttributeError(f"module 'gpt2np.sampling' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"gpt2np.{_MOVED[name]}")
    if name != "generate":  # gpt2np.generation.generate warns itself, naming generate_text
        warnings.warn(f"gpt2np.sampling.{name} moved to gpt2np.{_MOVED[name]}.{name}; import it from there "
                      f"(the old place goes away in the next release)", DeprecationWarning, stacklevel=2)
    return getattr(module, name)
