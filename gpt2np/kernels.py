"""The transformer block of :mod:`gpt2np.layers`, rearranged for speed (what ``GPT2.__call__`` runs).

The formulas are those of ``layers.py`` (read them there); this module computes the same numbers
with less memory traffic, and ``tests/test_kernels.py`` checks it against ``layers.block`` on
random inputs and the whole model against the readable ``layers.gpt2`` (decode steps on a
cache, prompts with causal and padding masks):

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
  GPT-2's dh = 64 the scale is 1/8, a power of two, so this is exact;
- **the causal mask on the diagonal only**: with no padding, a tile's queries see all but its last
  few keys, so only that ``[tile, tile]`` corner gets MASKED added; and softmax's division is done
  on the ``[tile, dh]`` output instead of the ``[tile, S]`` weights;
- **threads for long inputs**: from PARALLEL_MIN_ROWS tokens on, each core's thread takes a share
  of the rows (and of attention's heads), with OpenBLAS at one thread meanwhile
  (:mod:`gpt2np.parallel` says why).

A decode step (T = 1) is a row vector times each weight matrix (GEMV): its time is the time to
read the weights.  ``x @ W`` on OpenAI's ``[n_in, n_out]`` layout measured as fast as ``W.T @ x``
on a transposed copy (docs/speed.md), so the params tree keeps that layout, the tied head is a
GEMV on ``wte`` as it is, and no second copy of any weight is made.
"""

from __future__ import annotations

import functools

import numpy as np

from .layers import MASKED  # exp(MASKED - max) is exactly 0
from .parallel import in_parts

# Scores per tile: B·H·tile·S floats of at most this many (4 MB in float32: the fastest of the
# sizes measured, docs/speed.md), but at least MIN_TILE queries per tile (so a large batch does
# not turn into a Python loop over queries).
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
    scratch block and no new array (faster than whole-array passes: docs/speed.md).
    (x·(½·(1 + tanh)) is ½·x·(1 + tanh) exactly: halving is exact.)
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


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
              causal: bool = False, workers: int = 1) -> np.ndarray:
    """``layers.attention``: softmax(Q Kᵀ / √d_k + M) V, a tile of queries at a time.

    q ``[B, H, T, dh]``, k and v ``[B, H, S, dh]`` (the last T of the S positions are the
    queries'); ``causal``: query i (position S - T + i) sees only keys j <= S - T + i;
    ``mask``: an additive mask broadcastable to ``[B, H, T, S]`` on top of that (padding),
    or None -> ``[B, H, T, dh]``, a view of a ``[B, T, H, dh]`` array (so that putting the
    heads side by side again is a free reshape).  ``workers`` threads take a group of heads each.
    """
    B, H, T, dh = q.shape
    q = q * dh ** -0.5  # [B, H, T, dh]: cheaper than scaling [B, H, T, S]
    out = np.empty((B, T, H, dh), dtype=q.dtype).transpose(0, 2, 1, 3)  # [B, H, T, dh] view
    per_head_mask = mask is not None and mask.ndim == 4 and mask.shape[1] > 1

    def heads(h):  # h: a slice of the heads
        _attend(q[:, h], k[:, h], v[:, h], mask[:, h] if per_head_mask else mask, out[:, h], causal)

    in_parts(H, heads, workers)
    return out


def _attend(q, k, v, mask, out, causal):
    """softmax(q kᵀ + mask) v into ``out``, with q already scaled, a tile of queries at a time.

    Per tile the scores ``[B, H, tile, n_keys]`` go into one buffer, and the division by the
    softmax's sum is done on the ``[tile, dh]`` output rather than on the ``[tile, n_keys]``
    weights: (e/Σe)·V = (e·V)/Σe, one pass over a small array instead of a large one.
    """
    B, H, T, dh = q.shape
    S = k.shape[-2]
    tile = T if not causal else max(MIN_TILE, TILE_ELEMENTS // (B * H * S))
    kT = k.swapaxes(-1, -2)  # [B, H, dh, S] (a view)
    scores = np.empty(B * H * min(tile, T) * S, dtype=q.dtype)  # reused by every tile
    for i0 in range(0, T, tile):
        i1 = min(T, i0 + tile)
        m = i1 - i0
        # causal: the tile's last query (position S - T + i1 - 1) sees no key past it
        n_keys = S - T + i1 if causal else S
        s = scores[:B * H * m * n_keys].reshape(B, H, m, n_keys)
        np.matmul(q[..., i0:i1, :], kT[..., :n_keys], out=s)  # [B, H, m, n_keys]
        if mask is not None:
            s += mask[..., i0:i1, :n_keys]
        elif causal:  # only the last m keys are hidden from some query of the tile
            s[..., n_keys - m:] += _upper_triangle(m, s.dtype)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        total = s.sum(axis=-1, keepdims=True)  # [B, H, m, 1]
        o = out[..., i0:i1, :]
        np.matmul(s, v[..., :n_keys, :], out=o)
        o /= total


@functools.lru_cache(maxsize=8)
def _upper_triangle(m: int, dtype) -> np.ndarray:
    """``[m, m]``: MASKED above the diagonal, 0 on and below it (the causal mask of a tile
    whose queries are the positions of its last m keys).  Read-only: it is shared."""
    t = np.triu(np.full((m, m), MASKED, dtype=dtype), k=1)
    t.flags.writeable = False
    return t


def block(x, params, n_head, mask=None, kv_store=None, causal=False, workers=1):
    """``layers.block``, updating ``x [B, T, d]`` in place (returned): x += MHA(LN₁(x)); x += MLP(LN₂(x)).

    ``kv_store`` as in ``layers.multi_head_attention``; which keys each query sees as in
    :func:`attention` (``causal``, and ``mask`` for padding); ``x`` must be a C-contiguous
    array the caller owns.  ``workers`` > 1 threads share the rows (and attention's heads);
    run it inside :func:`threads` so that BLAS does not also spread each product over the cores.
    """
    if not x.flags.c_contiguous:
        raise ValueError("kernels.block needs a C-contiguous x (it updates x in place)")
    B, T, d = x.shape
    dh = d // n_head
    attn, mlp = params["attn"], params["mlp"]
    rows = x.reshape(B * T, d)  # a view: every row is one token

    qkv = np.empty((B * T, 3 * d), dtype=x.dtype)

    def project_qkv(r):  # r: a slice of the rows
        np.matmul(layer_norm(rows[r], **params["ln_1"]), attn["c_attn"]["w"], out=qkv[r])
        qkv[r] += attn["c_attn"]["b"]

    in_parts(B * T, project_qkv, workers)
    # [B, T, 3, H, dh] -> three [B, H, T, dh] views
    q, k, v = qkv.reshape(B, T, 3, n_head, dh).transpose(2, 0, 3, 1, 4)
    if kv_store is not None:
        k, v = kv_store(k, v)  # [B, H, S, dh]
    a = attention(q, k, v, mask, causal, workers)  # [B, H, T, dh], a view of [B, T, H, dh]
    heads = a.transpose(0, 2, 1, 3).reshape(B * T, d)  # heads side by side again (no copy)

    def project_and_mlp(r):
        o = heads[r] @ attn["c_proj"]["w"]
        o += attn["c_proj"]["b"]
        rows[r] += o
        f = layer_norm(rows[r], **params["ln_2"]) @ mlp["c_fc"]["w"]  # [rows, 4d]
        y = bias_gelu_(f, mlp["c_fc"]["b"]) @ mlp["c_proj"]["w"]  # [rows, d]
        y += mlp["c_proj"]["b"]
        rows[r] += y

    in_parts(B * T, project_and_mlp, workers)
    return x


def tied_head(x: np.ndarray, wte: np.ndarray, workers: int = 1) -> np.ndarray:
    """``layers.tied_head``, ``x @ wteᵀ``: ``[..., d]`` -> ``[..., V]``, a GEMM (or GEMV) straight
    on ``wte [V, d]`` (no transposed copy); ``workers`` threads take a share of the vocabulary each."""
    rows = x.reshape(-1, x.shape[-1])  # [N, d]
    logits = np.empty((rows.shape[0], wte.shape[0]), dtype=np.result_type(x, wte))

    def vocabulary(p):  # p: a slice of the token ids
        np.matmul(rows, wte[p].T, out=logits[:, p])

    in_parts(wte.shape[0], vocabulary, workers)
    return logits.reshape(*x.shape[:-1], wte.shape[0])
