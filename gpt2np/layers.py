"""The formulas of GPT-2's forward pass, one pure NumPy function each.

Notation (the paper's and OpenAI's): ``T`` tokens in this call, ``S`` keys (past + new tokens),
``d = n_embd``, ``H = n_head``, ``dh = d / H`` (the per-head size, written ``d_k`` in
"Attention Is All You Need").  Every function accepts any leading batch shape ``...``.

The functions keep the dtype of their inputs: every constant is a Python float, so a float32
array stays float32 under NumPy 2's promotion rules (a ``np.float64`` scalar would silently turn
the whole computation into float64).
"""

from __future__ import annotations

import numpy as np

# Added to the attention score of a position that must not be seen.  OpenAI's value: exactly
# representable in float32, finite (so a row that is entirely masked cannot produce NaN), and
# exp(-1e10 - max) underflows to exactly 0 in float32 and float64.
MASKED = -1e10


class Record:
    """A notebook for the forward pass's intermediates: ``record(name, value)`` keeps ``value``
    under ``name`` and returns it unchanged, so a formula notes a step without changing its shape::

        a = record("ln_1", layer_norm(x, g, b))

    ``record.child("h3")`` writes into the same notebook under the prefix ``"h3."``;
    ``record.values`` is the notebook, a dict by full name.  The values are the arrays themselves
    (views stay views, float32 stays float32): keeping them costs no copy.  ``drop`` names leaves
    not worth keeping: ``Record(drop={"scores"})`` saves one ``[..., H, T, S]`` array per layer
    when only the backward pass reads the record.  :data:`NO_RECORD` keeps nothing.
    """

    def __init__(self, drop=()):
        self.values = {}
        self.drop = frozenset(drop)
        self.prefix = ""

    def __call__(self, name: str, value):
        if name not in self.drop:
            self.values[self.prefix + name] = value
        return value

    def child(self, name: str) -> "Record":
        child = Record(self.drop)
        child.values, child.prefix = self.values, f"{self.prefix}{name}."  # the same notebook
        return child

    def __getitem__(self, name: str):
        return self.values[self.prefix + name]


class _NoRecord(Record):
    def __call__(self, name: str, value):
        return value

    def child(self, name: str) -> "Record":
        return self


NO_RECORD = _NoRecord()  # the default: record(name, value) only returns value


def gelu(x: np.ndarray) -> np.ndarray:
    """Gaussian Error Linear Unit, tanh approximation (Hendrycks & Gimpel; OpenAI GPT-2).

        GELU(x) = ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))

    Elementwise: ``[...]`` -> ``[...]``.  √(2/π) = 0.7978845608028654.
    """
    # x * x * x, not x**3: NumPy's general power is ~70x slower on float32 arrays.
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(x)_i = exp(x_i - max x) / Σ_j exp(x_j - max x)   along ``axis``.

    Subtracting the maximum changes nothing mathematically and keeps ``exp`` from overflowing.
    ``[...]`` -> ``[...]``; each slice along ``axis`` sums to 1.
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(x)_i = x_i - log Σ_j exp(x_j)   along ``axis``, computed as
    ``(x - m) - log Σ_j exp(x_j - m)`` with ``m = max x`` so nothing overflows or underflows to -inf.
    """
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Layer normalisation over the last axis (Ba et al.):

        LN(x) = (x - μ) / √(σ² + ε) · g + b,   μ = mean(x),  σ² = mean((x - μ)²)  (biased)

    x ``[..., d]``, g ``[d]``, b ``[d]`` -> ``[..., d]``; ε = 1e-5 sits inside the root.
    """
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine map ``x @ w + b``: x ``[..., n_in]``, w ``[n_in, n_out]``, b ``[n_out]`` -> ``[..., n_out]``.

    OpenAI's ``conv1d`` and Hugging Face's ``Conv1D`` store w as ``[n_in, n_out]``: no transpose.
    """
    return x @ w + b


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """``[..., T, d]`` -> ``[..., H, T, dh]``: head j gets features ``j*dh:(j+1)*dh`` (a view)."""
    *lead, T, d = x.shape
    return x.reshape(*lead, T, n_head, d // n_head).swapaxes(-3, -2)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """``[..., H, T, dh]`` -> ``[..., T, H·dh]``: the heads side by side again (inverse of split_heads)."""
    *lead, H, T, dh = x.shape
    return x.swapaxes(-3, -2).reshape(*lead, T, H * dh)


def causal_mask(n_query: int, n_key: int, dtype=np.float32) -> np.ndarray:
    """Additive causal mask ``[T, S]``: 0 where query i may see key j, MASKED where it may not.

    The T queries are the *last* T of the S positions (the first S - T come from a cache), so
    query i sits at position ``S - T + i`` and sees keys ``j <= S - T + i``.
    """
    allowed = np.tri(n_query, n_key, k=n_key - n_query, dtype=bool)
    return np.where(allowed, 0.0, MASKED).astype(dtype)


def attention_scores(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scaled, masked dot products  ``Q Kᵀ / √d_k + M``  (what softmax turns into weights).

    q ``[..., T, d_k]``, k ``[..., S, d_k]``, mask additive, broadcastable to ``[..., T, S]``
    -> ``[..., T, S]``.  Row i says how well query i matches each key.
    """
    scores = (q @ k.swapaxes(-1, -2)) * q.shape[-1] ** -0.5  # [..., T, S]; a Python float scale
    return scores if mask is None else scores + mask


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
              record: Record = NO_RECORD) -> np.ndarray:
    """Scaled dot-product attention (Vaswani et al.):

        Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V

    q ``[..., T, d_k]``, k ``[..., S, d_k]``, v ``[..., S, d_v]``, mask M additive (0 = visible,
    MASKED = hidden) broadcastable to ``[..., T, S]`` -> ``[..., T, d_v]``: each query's output is
    a weighted average of the values, weighted by how well the query matches each key.
    Records ``scores`` (before softmax) and ``probs`` ``[..., T, S]``.
    """
    scores = record("scores", attention_scores(q, k, mask))
    return record("probs", softmax(scores)) @ v


def multi_head_attention(x, c_attn, c_proj, n_head, mask=None, kv_store=None, record=NO_RECORD):
    """Multi-head self-attention, all heads in one batched matmul:

        [Q K V] = x W_qkv + b_qkv,   head_j = Attention(Q_j, K_j, V_j),   out = [head_1 … head_H] W_o + b_o

    x ``[..., T, d]``; c_attn ``{w [d, 3d], b [3d]}``; c_proj ``{w [d, d], b [d]}``; mask additive,
    broadcastable to ``[..., H, T, S]`` -> ``[..., T, d]``.

    ``kv_store``, if given, is called as ``kv_store(k, v)`` with this call's keys and values
    ``[..., H, T, dh]`` and returns the keys and values of all S visible positions (a KV cache's
    past followed by these), so that only the new tokens need to pass through the model.
    Records ``q``, ``k``, ``v`` ``[..., H, T, dh]``, attention's ``scores`` and ``probs``,
    ``heads`` ``[..., T, d]`` (the heads side by side, before c_proj) and ``out``.
    """
    q, k, v = np.split(linear(x, **c_attn), 3, axis=-1)  # 3 × [..., T, d]
    q, k, v = (record(name, split_heads(t, n_head)) for name, t in zip("qkv", (q, k, v)))  # [..., H, T, dh]
    if kv_store is not None:
        k, v = kv_store(k, v)  # 2 × [..., H, S, dh]
    heads = record("heads", merge_heads(attention(q, k, v, mask, record)))  # [..., T, d]
    return record("out", linear(heads, **c_proj))  # [..., T, d]


def mlp(x: np.ndarray, c_fc: dict, c_proj: dict, record: Record = NO_RECORD) -> np.ndarray:
    """Position-wise feed-forward network  ``GELU(x W_fc + b_fc) W_proj + b_proj``.

    x ``[..., T, d]``; c_fc ``{w [d, 4d], b [4d]}``; c_proj ``{w [4d, d], b [d]}`` -> ``[..., T, d]``.
    Records ``fc`` ``[..., T, 4d]`` (before GELU), ``gelu`` and ``out``.
    """
    h = record("gelu", gelu(record("fc", linear(x, **c_fc))))  # [..., T, 4d]
    return record("out", linear(h, **c_proj))  # [..., T, d]


def block(x, params, n_head, mask=None, kv_store=None, record=NO_RECORD):
    """One transformer block, pre-LN (GPT-2): normalise, transform, add back (two residuals):

        x = x + MHA(LN₁(x))
        x = x + MLP(LN₂(x))

    x ``[..., T, d]``; params ``{ln_1, attn: {c_attn, c_proj}, ln_2, mlp: {c_fc, c_proj}}``
    -> ``[..., T, d]``.  ``mask`` and ``kv_store`` as in :func:`multi_head_attention`.
    Records ``ln_1``, ``attn.*``, ``resid`` (x after the first residual), ``ln_2``, ``mlp.*``, ``out``.
    """
    a = record("ln_1", layer_norm(x, **params["ln_1"]))
    x = record("resid", x + multi_head_attention(a, **params["attn"], n_head=n_head, mask=mask,
                                                 kv_store=kv_store, record=record.child("attn")))
    m = record("ln_2", layer_norm(x, **params["ln_2"]))
    return record("out", x + mlp(m, **params["mlp"], record=record.child("mlp")))


def embedding(ids: np.ndarray, positions: np.ndarray, wte: np.ndarray, wpe: np.ndarray) -> np.ndarray:
    """Token plus position embedding  ``x = wte[ids] + wpe[positions]``.

    ids, positions ``[..., T]`` ints; wte ``[V, d]``, wpe ``[n_ctx, d]`` -> ``[..., T, d]``.
    """
    return wte[ids] + wpe[positions]


def tied_head(x: np.ndarray, wte: np.ndarray) -> np.ndarray:
    """The output head, tied to the token embedding: ``logits = x wteᵀ``.

    x ``[..., d]``, wte ``[V, d]`` -> ``[..., V]``: token v's score is how well x matches its embedding.
    (x is flattened to rows first: one ``[N, d] x [d, V]`` product is faster than a batch of them.)
    """
    rows = x.reshape(-1, x.shape[-1])
    return (rows @ wte.T).reshape(*x.shape[:-1], wte.shape[0])


def transformer(ids, params, n_head, positions=None, mask=None, record=NO_RECORD):
    """GPT-2 up to its output head: embed, L blocks, the final layer norm.

        x₀ = wte[ids] + wpe[positions];   x_i = block_i(x_{i-1});   h = LN_f(x_L)

    ids ``[..., T]``; params the whole tree ``{wte, wpe, blocks: [...], ln_f}``; positions
    ``[..., T]`` (default ``0 .. T-1``); mask additive, broadcastable to ``[..., H, T, T]``
    (default: causal) -> h ``[..., T, d]``.  Records ``embed``, ``h{i}.*`` for each block, ``ln_f``.
    """
    T = ids.shape[-1]
    positions = np.arange(T) if positions is None else positions
    mask = causal_mask(T, T, params["wte"].dtype) if mask is None else mask
    x = record("embed", embedding(ids, positions, params["wte"], params["wpe"]))  # [..., T, d]
    for i, blk in enumerate(params["blocks"]):
        x = block(x, blk, n_head, mask, record=record.child(f"h{i}"))
    return record("ln_f", layer_norm(x, **params["ln_f"]))


def gpt2(ids, params, n_head, positions=None, mask=None, record=NO_RECORD):
    """The whole of GPT-2: the next-token logits after each position,

        logits = LN_f(blocks(wte[ids] + wpe[positions])) wteᵀ

    ids ``[..., T]`` -> ``[..., T, V]``; the rest as in :func:`transformer`.  Records its
    intermediates and ``logits``.
    """
    h = transformer(ids, params, n_head, positions, mask, record)
    return record("logits", tied_head(h, params["wte"]))
