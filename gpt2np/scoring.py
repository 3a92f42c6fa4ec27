"""Scoring: how well the model predicts a given text (sliding-window perplexity).

``perplexity`` computes the perplexity of a token sequence longer than the context the way
transformers' guide "Perplexity of fixed-length models" does, over the windows of
``sliding_windows``; the result is a ``Perplexity``.  Logits that are not finite (NaN or
inf) are a ValueError naming the window, never a NaN result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layers import log_softmax  # the formula of layers.py, along the vocabulary axis


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


def _token_ids(ids, n_vocab: int) -> np.ndarray:
    """``ids`` flattened to int64, every one a token id in [0, n_vocab)."""
    if isinstance(ids, (str, bytes)):
        raise ValueError("ids must be token ids, not text (encode the text with the tokenizer first)")
    arr = np.asarray(ids).reshape(-1)
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids must be integer token ids, got dtype {arr.dtype}: {arr[:8].tolist()!r}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_vocab))
    if bad.size:
        raise ValueError(f"ids holds {int(arr[bad[0]])} at index {bad[0]}, not a token id in [0, {n_vocab})")
    return arr.astype(np.int64)


def _check_finite(logits: np.ndarray, window: int, begin: int, end: int) -> None:
    finite = np.isfinite(logits)
    if finite.all():
        return
    value = logits[tuple(int(k[0]) for k in np.nonzero(~finite))]
    kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
    raise ValueError(f"the model returned {kind} logits in window {window} (tokens {begin} to {end}); "
                     f"logits must be finite (its weights are probably broken)")


def perplexity(
    model, ids, max_length: int | None = None, stride: int | None = None, guide_weighting: bool = False
) -> Perplexity:
    """Perplexity of a long token sequence with a sliding window, as transformers' guide
    ("Perplexity of fixed-length models") computes it.

    Windows of ``max_length`` tokens (default ``n_ctx``) start every ``stride`` tokens
    (``sliding_windows``; default stride ``min(512, max_length)``, the guide's); each scores
    only its new tokens, given everything before them in the window as context.  Token ``t``
    is scored as ``-log p(x_t | context)``.  As in the guide, the first token of each window
    is never a prediction (there is nothing before it to predict it from): the text's first
    token is never scored, and when ``stride >= max_length`` (no overlap) neither is the first
    token of any later window.

    The guide weights each window's mean loss by ``n_target - 1`` (to remove the first token
    of the window, which is only right for windows without overlap), so with overlapping
    windows it under-weights every window after the first by one token.  By default this
    function averages over exactly the tokens scored (a true per-token mean);
    ``guide_weighting=True`` reproduces the guide's number instead.

    Returns ``Perplexity(n_tokens, nll, ppl)`` with ``ppl = exp(nll)`` (inf if that overflows).
    Raises ValueError if the model's logits in a window are not finite.
    """
    n_ctx = model.config.n_ctx
    max_length = n_ctx if max_length is None else max_length
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or not 2 <= max_length <= n_ctx:
        raise ValueError(f"max_length must be an integer in [2, n_ctx = {n_ctx}], got {max_length!r}")
    stride = min(512, max_length) if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= max_length:
        raise ValueError(f"stride must be an integer in [1, max_length = {max_length}], got {stride!r}")
    ids = _token_ids(ids, model.config.n_vocab)
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens (the first one is never predicted), got {len(ids)}")
    nll_sum, n_scored, guide_sum, guide_count = 0.0, 0, 0.0, 0
    for w, (begin, end, n_target) in enumerate(sliding_windows(len(ids), max_length, stride)):
        window = ids[begin:end]
        if len(window) < 2:
            continue  # a 1-token last window predicts nothing (the guide gets NaN here)
        logits = model(window[:-1])  # [W-1, V]: position j predicts token j+1
        _check_finite(logits, w, begin, end)
        nll = -log_softmax(logits)[np.arange(len(window) - 1), window[1:]]  # [W-1]
        scored = nll[len(nll) - min(n_target, len(nll)):].astype(np.float64)
        nll_sum += scored.sum()
        n_scored += scored.size
        guide_sum += scored.mean() * (n_target - 1)
        guide_count += n_target - 1
    if guide_weighting:  # the guide's count and mean
        n_scored, mean = guide_count, guide_sum / guide_count
    else:
        mean = nll_sum / n_scored
    if not math.isfinite(mean):  # finite logits give a finite loss; this guards the arithmetic
        raise ValueError(f"the mean negative log-likelihood is {mean}, not a finite number")
    try:
        ppl = math.exp(mean)
    except OverflowError:  # a finite loss above ~709.78 nats per token
        ppl = math.inf
    return Perplexity(n_tokens=n_scored, nll=float(mean), ppl=float(ppl))
