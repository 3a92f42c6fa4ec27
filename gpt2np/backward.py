"""The gradients of GPT-2's formulas (backpropagation), one pure NumPy function per formula of
:mod:`gpt2np.layers`, under the same name.

Each function takes the gradient of the loss with respect to the forward function's output
(``dy``, the "upstream" gradient, shaped like that output), the forward function's inputs, and
for the larger pieces the :class:`~gpt2np.layers.Record` that the forward filled; it returns
the gradient with respect to each input, and the gradient of each weight as a tree shaped like
the weights' subtree of the params::

    y = layers.linear(x, w, b)            dx, {"w": dw, "b": db} = backward.linear(dy, x, w, b)

Notation as in layers.py (``N`` stands for all leading positions together, ``...`` flattened);
``dz`` is short for ∂L/∂z, the loss L's gradient with respect to z.  The chain rule walks the
forward pass backwards: an array used twice (a residual's x, the tied ``wte``) gets the sum of
the gradients of both uses.

:func:`loss_and_grads` puts it together: the forward pass of ``layers.transformer`` with a
Record, the tied output head and its cross-entropy a chunk of rows at a time, and the blocks
backwards.  Nothing here writes into the weights (they may be read-only memory maps); float32
stays float32 (every constant is a Python float).
"""

from __future__ import annotations

import numpy as np

from . import layers

IGNORE = -100  # a label that is not counted (torch's and transformers' ignore_index)

# The output head's logits of at most this many (token, vocabulary) pairs exist at once:
# 2**23 floats = 32 MB in float32, 166 rows of GPT-2's 50,257-token vocabulary.  (Single-core
# CPU time of the 124M head at 512 rows: 1.5 s with 83-row chunks, 1.2-1.3 s from 166 rows on.)
HEAD_CHUNK_ELEMENTS = 1 << 23

_SQRT_2_OVER_PI = 0.7978845608028654  # √(2/π), GELU's constant


# --------------------------------------------------------------------------------------------
# Elementwise and per-row formulas
# --------------------------------------------------------------------------------------------


def gelu(dy: np.ndarray, x: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Backward of GELU(x) = ½·x·(1 + t),  t = tanh u,  u = √(2/π)·(x + 0.044715·x³):

        GELU'(x) = ½·(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)
                 = ½·(1 + t)·(1 + (1 − t)·s),     s = x·du/dx = √(2/π)·x·(1 + 0.134145·x²)
        dx = dy ⊙ GELU'(x)

    dy, x ``[...]`` -> dx ``[...]``.  (1 − t² = (1 − t)(1 + t) gives the second line.)  Computed
    over blocks of ``chunk`` elements that stay in the core's cache, on two scratch blocks: the
    only new array as large as x is dx (each fresh large array costs page faults).
    """
    x_flat = np.ascontiguousarray(x).reshape(-1)
    dy_flat = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty(x_flat.shape, dtype=np.result_type(dy, x))
    t_block, s_block = np.empty((2, min(chunk, x_flat.size)), dtype=dx.dtype)
    for i in range(0, x_flat.size, chunk):
        xi, out = x_flat[i:i + chunk], dx[i:i + chunk]
        t, s = t_block[:len(xi)], s_block[:len(xi)]
        np.multiply(xi, xi, out=s)  # x²
        np.multiply(s, 0.044715, out=t)
        t += 1.0
        t *= xi
        t *= _SQRT_2_OVER_PI
        np.tanh(t, out=t)  # t = tanh(√(2/π)·x·(1 + 0.044715·x²))
        s *= 0.134145  # 3 · 0.044715
        s += 1.0
        s *= xi
        s *= _SQRT_2_OVER_PI  # s = √(2/π)·x·(1 + 0.134145·x²)
        np.subtract(1.0, t, out=out)
        out *= s
        out += 1.0  # 1 + (1 − t)·s
        t += 1.0
        out *= t
        out *= 0.5  # ½·(1 + t)·(1 + (1 − t)·s) = GELU'(x)
        out *= dy_flat[i:i + chunk]
    return dx.reshape(x.shape)


def softmax(dy: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Backward of y = softmax(x) along ``axis``, from its output y:

        ∂y_i/∂x_j = y_i·(δ_ij − y_j)   =>   dx = y ⊙ (dy − Σ_j dy_j·y_j)

    dy, y ``[...]`` -> dx ``[...]``; each slice of dx along ``axis`` sums to 0 (adding a
    constant to every x changes nothing).
    """
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def layer_norm(dy, x, g, b=None, eps: float = 1e-5):
    """Backward of y = x̂·g + b,  x̂ = (x − μ)/σ,  σ = √(mean((x − μ)²) + ε), over the last axis:

        dg = Σ_N dy ⊙ x̂   [d]          db = Σ_N dy   [d]
        dx̂ = dy ⊙ g
        dx = (dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂)) / σ   [..., d]   (means over the last axis)

    (μ and σ depend on every x of the row: the two means are their share of the gradient.)
    dy, x ``[..., d]``, g ``[d]`` (b is not needed; it is accepted so that ``**params`` works)
    -> dx ``[..., d]``, ``{"g": dg, "b": db}``.  x̂ and σ are recomputed from x.
    """
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    sigma = np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    x_hat = xc / sigma
    d_x_hat = dy * g
    dx = (d_x_hat - d_x_hat.mean(axis=-1, keepdims=True)
          - x_hat * (d_x_hat * x_hat).mean(axis=-1, keepdims=True)) / sigma
    d = x.shape[-1]
    dg = (dy * x_hat).reshape(-1, d).sum(axis=0)
    db = dy.reshape(-1, d).sum(axis=0)
    return dx, {"g": dg, "b": db}


def linear(dy, x, w, b=None):
    """Backward of y = x·w + b:

        dx = dy·wᵀ   [..., n_in]       dw = Σ_N xᵀ·dy = x_Nᵀ·dy_N   [n_in, n_out]       db = Σ_N dy   [n_out]

    dy ``[..., n_out]``, x ``[..., n_in]``, w ``[n_in, n_out]`` (b is not needed) -> dx,
    ``{"w": dw, "b": db}``.  x_N, dy_N: the leading axes flattened into one, ``[N, n]``.
    """
    n_in, n_out = w.shape
    dy_rows = dy.reshape(-1, n_out)  # [N, n_out]
    dw = x.reshape(-1, n_in).T @ dy_rows  # [n_in, n_out]
    return dy @ w.T, {"w": dw, "b": dy_rows.sum(axis=0)}


def cross_entropy(logits: np.ndarray, targets: np.ndarray):
    """Mean cross-entropy of N predictions and its gradient with respect to the logits:

        L = −(1/N) Σ_i log softmax(z_i)[t_i]          (z = logits)
        dz = (softmax(z) − onehot(t)) / N   [N, V]

    logits ``[N, V]``, targets ``[N]`` ints (every one counted) -> (L as a Python float, dz).
    The readable version; :func:`tied_head_cross_entropy` computes the same a chunk at a time.
    """
    N = logits.shape[0]
    rows = np.arange(N)
    log_p = layers.log_softmax(logits)  # [N, V]
    loss = -log_p[rows, targets].astype(np.float64).sum() / N
    dz = np.exp(log_p) / N  # softmax / N
    dz[rows, targets] -= 1.0 / N  # − onehot / N
    return float(loss), dz


def tied_head(dlogits: np.ndarray, x: np.ndarray, wte: np.ndarray):
    """Backward of the tied output head logits = x·wteᵀ:

        dx = dlogits·wte   [..., d]          dwte = dlogits_Nᵀ·x_N   [V, d]

    dlogits ``[..., V]``, x ``[..., d]``, wte ``[V, d]`` -> dx, dwte.  (wte's other use, the
    embedding lookup, adds its own share: see :func:`embedding`.)
    """
    V, d = wte.shape
    return dlogits @ wte, dlogits.reshape(-1, V).T @ x.reshape(-1, d)


def tied_head_cross_entropy(x: np.ndarray, wte: np.ndarray, targets: np.ndarray, chunk_elements: int | None = None):
    """The tied head and its mean cross-entropy, forward and backward, a chunk of rows at a time:

        z = x·wteᵀ   [N, V]              L = −(1/N) Σ_i log softmax(z_i)[t_i]
        dz = (softmax(z) − onehot(t)) / N   [N, V]
        dx = dz·wte   [N, d]              dwte = dzᵀ·x = Σ_chunks dz_cᵀ·x_c   [V, d]

    x ``[N, d]`` (the final normalised hidden states of the N positions that predict),
    wte ``[V, d]``, targets ``[N]`` ints -> (L, dx ``[N, d]``, dwte ``[V, d]``).

    The same numbers as :func:`cross_entropy` and :func:`tied_head`, but no more than
    ``chunk_elements`` logits exist at once (the whole ``[N, V]`` would be 412 MB in float32 for
    2,048 tokens of GPT-2's vocabulary), and each chunk's logits become its dz in place.
    ``chunk_elements`` defaults to HEAD_CHUNK_ELEMENTS (at least one row per chunk).
    """
    N, d = x.shape
    V = wte.shape[0]
    dtype = np.result_type(x, wte)
    step = max(1, min(N, (chunk_elements or HEAD_CHUNK_ELEMENTS) // V))
    z_buffer = np.empty((step, V), dtype=dtype)  # one chunk's logits, then its dz
    dx = np.empty((N, d), dtype=dtype)
    dwte = np.empty((V, d), dtype=dtype)
    loss = 0.0
    for r0 in range(0, N, step):
        r = slice(r0, min(N, r0 + step))
        z = z_buffer[:r.stop - r.start]
        np.matmul(x[r], wte.T, out=z)  # the chunk's logits
        loss += _cross_entropy_(z, targets[r], 1.0 / N)  # z <- dz
        np.matmul(z, wte, out=dx[r])
        if r0 == 0:
            np.matmul(z.T, x[r], out=dwte)
        else:
            _add_product(dwte, z.T, x[r])  # dwte += dzᵀ·x
    return loss, dx, dwte


def _add_product(out: np.ndarray, a: np.ndarray, b: np.ndarray, rows: int = 2048) -> None:
    """``out += a @ b`` a block of rows at a time, so that the product's temporary is a few MB
    rather than as large as ``out`` (154 MB for the 124M model's dwte)."""
    for i in range(0, out.shape[0], rows):
        out[i:i + rows] += a[i:i + rows] @ b


def _cross_entropy_(z: np.ndarray, targets: np.ndarray, scale: float) -> float:
    """:func:`cross_entropy`'s formulas in place on a chunk: z ``[n, V]`` becomes
    scale·(softmax(z) − onehot(t)); returns scale·Σ_i −log softmax(z_i)[t_i] (a Python float).

    −log softmax(z)[t] = log Σ_j exp(z_j − m) − (z_t − m),  m = max z (so that exp cannot overflow).
    """
    rows = np.arange(z.shape[0])
    z -= z.max(axis=1, keepdims=True)  # z − m
    z_target = z[rows, targets]  # z_t − m  [n]
    np.exp(z, out=z)
    total = z.sum(axis=1)  # Σ_j exp(z_j − m)  [n]
    loss = scale * float((np.log(total) - z_target).astype(np.float64).sum())
    z *= (scale / total)[:, None]  # scale · softmax(z)
    z[rows, targets] -= scale  # − scale · onehot(t)
    return loss


def embedding(dx: np.ndarray, ids: np.ndarray, positions: np.ndarray, wte: np.ndarray, wpe: np.ndarray,
              dwte: np.ndarray | None = None):
    """Backward of the lookup x = wte[ids] + wpe[positions]: each row of wte (wpe) gets the sum
    of dx over the tokens that looked it up,

        dwte[v] = Σ_{t : ids_t = v} dx_t   [V, d]          dwpe[p] = Σ_{t : positions_t = p} dx_t   [n_ctx, d]

    dx ``[..., T, d]``, ids ``[..., T]``, positions broadcastable to it -> ``{"wte": dwte, "wpe": dwpe}``
    (zero rows for ids and positions not used).  A scatter-add: ``np.add.at`` adds every repeat.
    ``dwte``, if given, is wte's gradient from its other use (the tied head): this lookup's share
    is added to it in place, and it is returned.
    """
    dwte = np.zeros(wte.shape, dtype=dx.dtype) if dwte is None else dwte
    dwpe = np.zeros(wpe.shape, dtype=dx.dtype)
    np.add.at(dwte, ids, dx)
    np.add.at(dwpe, np.broadcast_to(positions, ids.shape), dx)
    return {"wte": dwte, "wpe": dwpe}


# --------------------------------------------------------------------------------------------
# Attention, MLP, block, the whole transformer
# --------------------------------------------------------------------------------------------


def _replay(record, forward):
    """The Record the forward pass filled; if None (or NO_RECORD), run ``forward(record)`` again to fill one."""
    if record is None or record is layers.NO_RECORD:
        record = layers.Record()
        forward(record)
    return record


def attention(dout, q, k, v, mask=None, record=None):
    """Backward of out = P·V,  P = softmax(S),  S = Q·Kᵀ/√d_k + M  (M: additive mask, no gradient):

        dV = Pᵀ·dout   [..., S, d_v]             dP = dout·Vᵀ   [..., T, S]
        dS = P ⊙ (dP − Σ_j dP_j·P_j)            (softmax's backward, per query row)
        dQ = dS·K / √d_k   [..., T, d_k]         dK = dSᵀ·Q / √d_k   [..., S, d_k]

    A masked key has P = 0 exactly, so it gets no gradient: the mask (causal, padding) acts
    through P alone.  dout ``[..., T, d_v]``; q, k, v, mask as in ``layers.attention``;
    ``record``: the one ``layers.attention`` filled (its ``probs`` are read), or None to
    recompute P -> dq, dk, dv.
    """
    r = _replay(record, lambda rec: layers.attention(q, k, v, mask, rec))
    p = r["probs"]  # [..., T, S]
    dv = p.swapaxes(-1, -2) @ dout
    ds = softmax(dout @ v.swapaxes(-1, -2), p)  # [..., T, S]
    scale = q.shape[-1] ** -0.5  # a Python float
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv


def multi_head_attention(dy, x, c_attn, c_proj, n_head, mask=None, record=None):
    """Backward of multi-head self-attention, every head in one batched product:

        forward:  [Q K V] = x·W_qkv + b_qkv;  O_j = Attention(Q_j, K_j, V_j);  y = [O_1 … O_H]·W_o + b_o
        d[O_1 … O_H], dc_proj = linear's backward of y          [..., T, d]
        dO = split_heads(d[O_1 … O_H])                           [..., H, T, dh]
        dQ, dK, dV = attention's backward, all heads at once      [..., H, T, dh] each
        d[Q K V] = [merge(dQ) merge(dK) merge(dV)]               [..., T, 3d]
        dx, dc_attn = linear's backward of [Q K V]                [..., T, d]

    dy ``[..., T, d]``; x, c_attn, c_proj, n_head, mask as in ``layers.multi_head_attention``;
    ``record``: the one that function filled (``q``, ``k``, ``v``, ``probs``, ``heads`` are
    read), or None to recompute -> dx, ``{"c_attn": {w, b}, "c_proj": {w, b}}``.
    """
    r = _replay(record, lambda rec: layers.multi_head_attention(x, c_attn, c_proj, n_head, mask, record=rec))
    d_heads, g_proj = linear(dy, r["heads"], **c_proj)  # [..., T, d]
    dq, dk, dv = attention(layers.split_heads(d_heads, n_head), r["q"], r["k"], r["v"], mask, r)
    d_qkv = np.concatenate([layers.merge_heads(dq), layers.merge_heads(dk), layers.merge_heads(dv)], axis=-1)
    dx, g_attn = linear(d_qkv, x, **c_attn)
    return dx, {"c_attn": g_attn, "c_proj": g_proj}


def mlp(dy, x, c_fc, c_proj, record=None):
    """Backward of the feed-forward network y = GELU(f)·W_proj + b_proj,  f = x·W_fc + b_fc:

        dh, dc_proj = linear's backward of y, h = GELU(f)        [..., T, 4d]
        df = dh ⊙ GELU'(f)                                       [..., T, 4d]
        dx, dc_fc = linear's backward of f                        [..., T, d]

    dy ``[..., T, d]``; x, c_fc, c_proj as in ``layers.mlp``; ``record``: the one it filled
    (``fc``, ``gelu`` are read), or None to recompute -> dx, ``{"c_fc": {w, b}, "c_proj": {w, b}}``.
    """
    r = _replay(record, lambda rec: layers.mlp(x, c_fc, c_proj, record=rec))
    dh, g_proj = linear(dy, r["gelu"], **c_proj)
    dx, g_fc = linear(gelu(dh, r["fc"]), x, **c_fc)
    return dx, {"c_fc": g_fc, "c_proj": g_proj}


def block(dy, x, params, n_head, mask=None, record=None):
    """Backward of one pre-LN block,  r = x + MHA(LN₁(x)),  y = r + MLP(LN₂(r)):

        dr = dy + LN₂ᵀ(MLPᵀ(dy))        (the residual passes dy through unchanged, plus the branch)
        dx = dr + LN₁ᵀ(MHAᵀ(dr))

    where Fᵀ(g) is F's backward applied to g.  dy, x ``[..., T, d]``; params, n_head, mask as
    in ``layers.block``; ``record``: the one it filled (``ln_1``, ``resid``, ``ln_2``,
    ``attn.*``, ``mlp.*``), or None to recompute -> dx, a grads tree shaped like params.
    """
    r = _replay(record, lambda rec: layers.block(x, params, n_head, mask, record=rec))
    dm, g_mlp = mlp(dy, r["ln_2"], **params["mlp"], record=r.child("mlp"))
    dr, g_ln_2 = layer_norm(dm, r["resid"], **params["ln_2"])
    dr += dy
    da, g_attn = multi_head_attention(dr, r["ln_1"], **params["attn"], n_head=n_head, mask=mask,
                                      record=r.child("attn"))
    dx, g_ln_1 = layer_norm(da, x, **params["ln_1"])
    dx += dr
    return dx, {"ln_1": g_ln_1, "attn": g_attn, "ln_2": g_ln_2, "mlp": g_mlp}


def transformer(dh, ids, params, n_head, positions=None, mask=None, record=None, dwte=None):
    """Backward of ``layers.transformer``, h = LN_f(x_L),  x_i = block_i(x_{i−1}),  x₀ = wte[ids] + wpe[positions]:

        dx_L = LN_fᵀ(dh);   dx_{i−1}, d(block i) = block_iᵀ(dx_i) for i = L … 1;   dwte, dwpe = embeddingᵀ(dx₀)

    dh ``[..., T, d]``; ids, params, n_head, positions, mask as in ``layers.transformer``;
    ``record``: the one it filled (``embed``, ``h{i}.*``), or None to recompute -> a grads
    tree shaped like params.  Its dwte is the embedding's share, added to ``dwte`` if given
    (the tied head's share, see :func:`embedding`).
    """
    T = ids.shape[-1]
    positions = np.arange(T) if positions is None else positions
    mask = layers.causal_mask(T, T, params["wte"].dtype) if mask is None else mask
    r = _replay(record, lambda rec: layers.transformer(ids, params, n_head, positions, mask, rec))
    L = len(params["blocks"])
    inputs = [r["embed"]] + [r[f"h{i}.out"] for i in range(L - 1)]  # x_{i-1}, block i's input
    dx, g_ln_f = layer_norm(dh, r[f"h{L - 1}.out"], **params["ln_f"])  # x_L = the last block's output
    g_blocks = [None] * L
    for i in reversed(range(L)):
        dx, g_blocks[i] = block(dx, inputs[i], params["blocks"][i], n_head, mask, r.child(f"h{i}"))
    g = embedding(dx, ids, positions, params["wte"], params["wpe"], dwte)
    return {"wte": g["wte"], "wpe": g["wpe"], "blocks": g_blocks, "ln_f": g_ln_f}


# --------------------------------------------------------------------------------------------
# The loss and the gradient of every weight
# --------------------------------------------------------------------------------------------


def loss_and_grads(model, ids, labels=None, attention_mask=None):
    """The mean next-token cross-entropy of ``model`` on ``ids`` and its gradient with respect to
    every weight:  ``loss, grads = loss_and_grads(model, ids)``.

    ids ``[B, T]`` (or ``[T]``), T >= 2.  grads: a tree shaped like ``model.params``, in its dtype.

    labels ``[B, T]`` (or ``[T]``), transformers' meaning: shifted inside, so position t
    predicts ``labels[t + 1]``; ``-100`` (IGNORE) is not counted; the loss is the mean over the
    counted targets (``GPT2LMHeadModel(ids, labels=labels).loss``).  Default: ``ids`` itself
    (``model.loss(ids)``).

    attention_mask ``[B, T]``: 1 = token, 0 = padding (on the left), as in ``model(ids,
    attention_mask=...)``: positions ``max(cumsum(mask) − 1, 0)``, padded keys hidden.  Without
    labels, a prediction counts only if it is made at a real token *and* its target is a real
    token (a padding position's output means nothing).  With labels, the labels alone decide (as
    in transformers): give ``-100`` to the padding and to each row's first real token, which
    would otherwise be predicted from a padding position.

    Forward: ``layers.transformer`` with a Record (attention's pre-softmax scores dropped);
    the tied head and its cross-entropy a chunk of rows at a time, only at the counted
    positions; then the blocks backwards.  The head's share of dwte and the embedding's add up.
    """
    ids, _ = model._check_ids(ids)  # [B, T] int64 (a single [T] sequence is a batch of one)
    B, T = ids.shape
    if T < 2:
        raise ValueError(f"loss_and_grads needs at least 2 tokens per sequence (one to predict), found {T}")
    model._check_length(0, T, None, B)
    real = model._check_mask(attention_mask, ids.shape)  # [B, T] bool
    targets = _targets(ids, labels, real, model.config.n_vocab)  # [B, T]: next token, or IGNORE
    counted = targets != IGNORE
    if not counted.any():
        raise ValueError("no target is counted: every label is -100 (or padding)")

    params, n_head = model.params, model.config.n_head
    positions = np.maximum(np.cumsum(real, axis=1) - 1, 0)  # [B, T]
    mask = model._attention_mask(real, T)  # [B, 1, T, T], or None: causal only
    record = layers.Record(drop={"scores"})  # the backward reads probs, never the scores
    h = layers.transformer(ids, params, n_head, positions, mask, record)  # [B, T, d]

    loss, dh_counted, dwte_head = tied_head_cross_entropy(h[counted], params["wte"], targets[counted])
    dh = np.zeros_like(h)
    dh[counted] = dh_counted  # positions not counted have no loss, so no gradient from the head
    # wte's two uses: the embedding lookup adds its share to the tied head's
    grads = transformer(dh, ids, params, n_head, positions, mask, record, dwte=dwte_head)
    return loss, grads


def _targets(ids, labels, real, n_vocab) -> np.ndarray:
    """``[B, T]``: the token position t must predict (IGNORE where none is counted; always at T − 1)."""
    B, T = ids.shape
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    if labels is None:
        counted = real[:, :-1] & real[:, 1:]  # a real token predicting a real token
        targets[:, :-1] = np.where(counted, ids[:, 1:], IGNORE)
        return targets
    lab = np.asarray(labels)
    if lab.shape != (B, T) and not (B == 1 and lab.shape == (T,)):
        raise ValueError(f"labels has shape {lab.shape}; expected {(B, T)}, the shape of ids")
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integer token ids (or -100), found dtype {lab.dtype}")
    lab = lab.astype(np.int64).reshape(B, T)
    bad = (lab != IGNORE) & ((lab < 0) | (lab >= n_vocab))
    if bad.any():
        raise ValueError(f"label {int(lab[bad][0])} is out of range: expected 0..{n_vocab - 1} or -100 (not counted)")
    targets[:, :-1] = lab[:, 1:]
    return targets
