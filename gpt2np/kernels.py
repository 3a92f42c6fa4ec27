"""The transformer block of :mod:`gpt2np.layers`, rearranged for speed (what ``GPT2.__call__`` runs).

The formulas are those of ``layers.py`` (read them there); this module computes the same numbers
with less memory traffic, and ``tests/test_kernels.py`` checks it against ``layers.block`` on
random inputs (decode steps on a cache, prompts with causal and padding masks):

- **in place**: the bias adds, the residual adds, GELU and softmax overwrite an array instead
  of allocating a new one per operation (each fresh large array costs page faults and a pass
  over memory); GELU's passes run over cache-sized blocks of rows; the scores of every tile
  go into one buffer;
- **attention in query tiles**: for T queries over S keys the scores ``[B, H, T, S]`` are built a
  tile of queries at a time (a few MB that stay in cache instead of 48 MB for T = S = 1024), and
  each tile only looks at the keys its causal mask lets it see (about half of them on average):
  masked keys get weight exp(-1e10 - max) = 0 exactly, so leaving them out changes nothing but the
  rounding order (except at a padding query, which sees no real key at all: there the readable
  version averages the values of all its keys, a tile those of the keys in the tile; nothing
  reads a padding position's output, and both are finite);
- **the 1/√d_k scale on q** (``[..., T, dh]``) instead of on the scores (``[..., T, S]``); for
  GPT-2's dh = 64 the scale is 1/8, a power of two, so this is exact.

A decode step (T = 1) is a row vector times each weight matrix (GEMV): its time is the time to
read the weights.  ``x @ W`` on OpenAI's ``[n_in, n_out]`` layout measured as fast as ``W.T @ x``
on a transposed copy (README, "Speed"), so the params tree keeps that layout, the tied head is a
GEMV on ``wte`` as it is, and no second copy of any weight is made.
"""

from __future__ import annotations

import numpy as np

# Scores per tile: B·H·tile·S floats of at most this many (4 MB in float32; 1-2 MB, 4 MB and 8 MB
# tiles measured 33, 29 and 33 ms per layer for T = S = 1024), but at least MIN_TILE queries per
# tile (so a large batch does not turn into a Python loop over queries).
TILE_ELEMENTS = 1 << 20
MIN_TILE = 16


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """``layers.layer_norm``, (x - μ) / √(σ² + ε) · g + b, with x - μ computed once and the
    scaling done in place on it (one new array instead of six)."""
    n = x.shape[-1]
    xc = x - np.add.reduce(x, axis=-1, keepdims=True) / n  # x - μ
    var = np.add.reduce(xc * xc, axis=-1, keepdims=True) / n
    var += eps
    xc /= np.sqrt(var, out=var)
    xc *= g
    xc += b
    return xc


def bias_gelu_(f: np.ndarray, b: np.ndarray | float = 0.0, chunk: int = 1 << 16) -> np.ndarray:
    """``f <- layers.gelu(f + b)`` in place (returned): ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).

    f ``[..., n]`` C-contiguous, b ``[n]``.  The passes run over blocks of rows of about ``chunk``
    elements (256 KB in float32) that stay in the core's cache between passes, with one
    scratch block and no new array: on [1024, 3072] this is 3-4x faster than whole-array
    passes.  (x·(½·(1 + tanh)) is ½·x·(1 + tanh) exactly: halving is exact.)
    """
    if not f.flags.c_contiguous:
        raise ValueError("bias_gelu_ needs a C-contiguous array (it works on it in place)")
    rows = f.reshape(-1, f.shape[-1])  # a view
    step = max(1, chunk // rows.shape[1])
    scratch = np.empty((min(step, rows.shape[0]), rows.shape[1]), dtype=f.dtype)
    for r in range(0, rows.shape[0], step):
        x = rows[r:r + step]
        t = scratch[:len(x)]
        x += b
        np.multiply(x, x, out=t)
        t *= x
        t *= 0.044715
        t += x
        t *= 0.7978845608028654
        np.tanh(t, out=t)
        t += 1.0
        t *= 0.5
        x *= t
    return f


def softmax_(s: np.ndarray) -> np.ndarray:
    """``layers.softmax`` over the last axis, overwriting ``s`` (returned)."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``layers.attention``: softmax(Q Kᵀ / √d_k + M) V, computed a tile of queries at a time.

    q ``[B, H, T, dh]``, k and v ``[B, H, S, dh]`` (the last T of the S positions are the
    queries'), mask additive, broadcastable to ``[B, H, T, S]``, with the causal part in it
    (None: every key visible) -> ``[B, H, T, dh]``.
    """
    B, H, T, dh = q.shape
    S = k.shape[-2]
    q = q * dh ** -0.5  # [B, H, T, dh]: cheaper than scaling [B, H, T, S]
    out = np.empty(q.shape, dtype=q.dtype)
    tile = T if mask is None else max(MIN_TILE, TILE_ELEMENTS // (B * H * S))
    kT = k.swapaxes(-1, -2)  # [B, H, dh, S] (a view)
    scores = np.empty(B * H * min(tile, T) * S, dtype=q.dtype)  # reused by every tile
    for i0 in range(0, T, tile):
        i1 = min(T, i0 + tile)
        # query i (position S - T + i) sees keys j <= S - T + i: this tile needs no key past
        # S - T + i1 - 1 (with no mask, every key)
        n_keys = S if mask is None else S - T + i1
        s = scores[:B * H * (i1 - i0) * n_keys].reshape(B, H, i1 - i0, n_keys)
        np.matmul(q[..., i0:i1, :], kT[..., :n_keys], out=s)  # [B, H, tile, n_keys]
        if mask is not None:
            s += mask[..., i0:i1, :n_keys]
        np.matmul(softmax_(s), v[..., :n_keys, :], out=out[..., i0:i1, :])
    return out


def block(x, params, n_head, mask=None, kv_store=None):
    """``layers.block``, updating ``x [B, T, d]`` in place (returned): x += MHA(LN₁(x)); x += MLP(LN₂(x)).

    ``mask`` (additive, broadcastable to ``[B, H, T, S]``) and ``kv_store`` as in
    ``layers.multi_head_attention``; ``x`` must be an array the caller owns.
    """
    B, T, d = x.shape
    dh = d // n_head
    attn, mlp = params["attn"], params["mlp"]

    qkv = layer_norm(x, **params["ln_1"]) @ attn["c_attn"]["w"]  # [B, T, 3d]
    qkv += attn["c_attn"]["b"]
    # [B, T, 3, H, dh] -> three [B, H, T, dh] views
    q, k, v = qkv.reshape(B, T, 3, n_head, dh).transpose(2, 0, 3, 1, 4)
    if kv_store is not None:
        k, v = kv_store(k, v)  # [B, H, S, dh]
    a = attention(q, k, v, mask)  # [B, H, T, dh]
    a = a.transpose(0, 2, 1, 3).reshape(B, T, d)  # heads side by side again
    o = a @ attn["c_proj"]["w"]
    o += attn["c_proj"]["b"]
    x += o

    f = layer_norm(x, **params["ln_2"]) @ mlp["c_fc"]["w"]  # [B, T, 4d]
    y = bias_gelu_(f, mlp["c_fc"]["b"]) @ mlp["c_proj"]["w"]  # [B, T, d]
    y += mlp["c_proj"]["b"]
    x += y
    return x
