# %% [markdown]
# # 03 · Attention
#
# Attention is how a token looks at the tokens before it. GPT-2 uses the *scaled dot-product
# attention* of "Attention Is All You Need":
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V$$
#
# * $Q \in \mathbb{R}^{T \times d_k}$: one **query** per token ("what am I looking for?"),
# * $K \in \mathbb{R}^{T \times d_k}$: one **key** per token ("what do I contain?"),
# * $V \in \mathbb{R}^{T \times d_v}$: one **value** per token ("what do I hand over?"),
# * $M$: the **causal mask**, $0$ where query $i$ may look at key $j$ (that is $j \le i$), $-\infty$
#   (in practice $-10^{10}$) where it may not.
#
# Row $i$ of the softmax is a probability distribution over the positions $j \le i$, and output $i$ is
# the average of the values weighted by it. We compute all of it by hand on the model's real arrays and
# check each step against `gpt2np.layers`.

# %%
SETUP

# %%
from gpt2np import layers

model, REAL = load_model()
tok = Tokenizer.gpt2()
cfg = model.config
text = "The cat sat on the mat because it was tired."
ids = np.array(tok.encode(text))
labels = [tok.decode([i]) for i in ids]
T, d, H, dh = len(ids), cfg.n_embd, cfg.n_head, cfg.head_dim
print(f"T={T} tokens, d={d}, H={H} heads of d_k={dh}:", labels)

# %% [markdown]
# ## 1. Queries, keys and values from one matrix product
#
# Block 0 first normalises its input ($\mathrm{LN}_1$, see notebook 04), then one linear map produces
# queries, keys and values side by side:
#
# $$[Q\;K\;V] = \mathrm{LN}_1(x)\, W_{qkv} + b_{qkv}, \qquad W_{qkv} \in \mathbb{R}^{d \times 3d}$$
#
# (OpenAI calls $W_{qkv}$ `c_attn`.) We take $\mathrm{LN}_1(x)$ of block 0 from the model's trace.

# %%
trace = model.trace(ids)
p0 = model.params["blocks"][0]
h = trace["h0.ln_1"]                                   # [T, d]
qkv = h @ p0["attn"]["c_attn"]["w"] + p0["attn"]["c_attn"]["b"]   # [T, 3d]
q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]  # 3 × [T, d]
print("x W_qkv + b:", qkv.shape, "-> Q, K, V:", q.shape, k.shape, v.shape)

# %% [markdown]
# ## 2. Splitting into heads
#
# GPT-2 runs $H$ attentions side by side, each on its own slice of $d_k = d / H$ features:
# head $j$ uses columns $j\,d_k \dots (j+1)\,d_k - 1$ of $Q$, $K$ and $V$. A reshape
# $[T, d] \to [T, H, d_k]$ and a transpose to $[H, T, d_k]$ does it for all heads at once; no loop.

# %%
qh = q.reshape(T, H, dh).transpose(1, 0, 2)            # [H, T, dh]
kh = k.reshape(T, H, dh).transpose(1, 0, 2)
vh = v.reshape(T, H, dh).transpose(1, 0, 2)
# head 1 really is columns dh..2dh of Q:
np.testing.assert_array_equal(qh[1], q[:, dh:2 * dh])
np.testing.assert_array_equal(qh, layers.split_heads(q, H))
np.testing.assert_allclose(qh, trace["h0.attn.q"], rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(kh, trace["h0.attn.k"], rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(vh, trace["h0.attn.v"], rtol=1e-5, atol=1e-5)
print("per-head Q, K, V:", qh.shape, "- equal to layers.split_heads and to the model's trace")

# %% [markdown]
# ## 3. Scores and why we divide by $\sqrt{d_k}$
#
# $S = Q K^\top / \sqrt{d_k}$ holds one number per (query, key) pair. If the $d_k$ components of a
# query and a key were independent with mean 0 and variance 1, their dot product would have variance
# $d_k$; dividing by $\sqrt{d_k}$ brings it back to 1, so the softmax does not saturate into a one-hot
# vector as $d_k$ grows. A quick experiment with random vectors:

# %%
rng = np.random.default_rng(0)
for n in (16, 64, 256):
    a, b = rng.standard_normal((2, 10000, n))
    dots = (a * b).sum(-1)
    print(f"d_k={n:4d}: var(q·k) = {dots.var():7.1f}   var(q·k/sqrt(d_k)) = {(dots / np.sqrt(n)).var():.2f}")

# %% [markdown]
# ## 4. The causal mask
#
# GPT-2 predicts the next token, so token $i$ must not see tokens after it. Adding
#
# $$M_{ij} = \begin{cases} 0 & j \le i \\ -10^{10} & j > i \end{cases}$$
#
# before the softmax makes $e^{S_{ij} + M_{ij}}$ exactly zero above the diagonal.

# %%
M = np.where(np.tril(np.ones((T, T), dtype=bool)), 0.0, -1e10).astype(np.float32)   # [T, T]
np.testing.assert_array_equal(M, layers.causal_mask(T, T))
scores = qh @ kh.transpose(0, 2, 1) / np.sqrt(dh).astype(np.float32) + M            # [H, T, T]
np.testing.assert_allclose(scores, trace["h0.attn.scores"], rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(scores, layers.attention_scores(qh, kh, M), rtol=1e-5, atol=1e-5)
print("mask (0 = visible):\n", (M != 0).astype(int)[:6, :6])

# %% [markdown]
# ## 5. Softmax: scores to attention weights
#
# $$P_{ij} = \frac{e^{S_{ij} + M_{ij}}}{\sum_{j'} e^{S_{ij'} + M_{ij'}}}$$
#
# Every row sums to one, and the first token can only look at itself.

# %%
e = np.exp(scores - scores.max(-1, keepdims=True))    # subtracting the row maximum avoids overflow
probs = e / e.sum(-1, keepdims=True)                   # [H, T, T]
np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
assert np.all(probs[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0.0)
np.testing.assert_allclose(probs, trace["h0.attn.probs"], rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(probs, layers.softmax(scores), rtol=1e-5, atol=1e-7)
print("row sums:", probs.sum(-1)[0, :5], "... ; token 0 attends to itself with weight", probs[:, 0, 0])

# %% [markdown]
# Each head has its own pattern. (With the small random stand-in model the patterns are close to
# uniform over the visible tokens; the real GPT-2 shows heads that look at the previous token, at
# the first token, or at related words.)

# %%
layer = cfg.n_layer - 1
show = trace[f"h{layer}.attn.probs"]                   # [H, T, T] of the last block
n_show = min(H, 4)
fig, axes = plt.subplots(1, n_show, figsize=(3.0 * n_show, 3.4), layout="constrained")
for j, ax in enumerate(np.atleast_1d(axes)):
    ax.imshow(show[j], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"block {layer}, head {j}")
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels if j == 0 else [""] * T, fontsize=7)
fig.suptitle("attention probabilities: row = query token, column = key token")

# %% [markdown]
# A head can learn to be a lookup. Here is one made by hand: give every position $t$ a one-hot
# "address" $e_t$, let the query of token $i$ ask for the address $e_{i-1}$ and let each key carry
# its own address, scaled by a large $\beta$. Then $Q_i \cdot K_j = \beta^2\,[\,j = i-1\,]$ and the
# softmax puts nearly all of token $i$'s weight on the token before it: a *previous-token head*,
# one of the patterns found in trained GPT-2.

# %%
beta = 12.0
addr = np.eye(T, dtype=np.float32)                     # [T, T]: position t's address is row t
q_prev = beta * np.roll(addr, 1, axis=0)               # query i asks for address i-1 (token 0 asks for T-1, masked)
k_prev = beta * addr
prev_probs = layers.softmax(layers.attention_scores(q_prev, k_prev, M))
assert np.all(prev_probs[np.arange(1, T), np.arange(T - 1)] > 0.9)
fig, ax = plt.subplots(figsize=(3.4, 3.2))
ax.imshow(prev_probs, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
ax.set_xticks(range(T), labels, rotation=90, fontsize=7); ax.set_yticks(range(T), labels, fontsize=7)
ax.set_title("a hand-made previous-token head")
fig.tight_layout()

# %% [markdown]
# ## 6. Weighted values, merging the heads, output projection
#
# Each head returns $P_j V_j \in \mathbb{R}^{T \times d_k}$. The heads are put side by side again
# ($[H, T, d_k] \to [T, d]$, the inverse of the split) and mixed by one more linear map
# (`c_proj`):
#
# $$\mathrm{MHA}(x) = [\,P_1 V_1 \;\cdots\; P_H V_H\,]\, W_o + b_o$$

# %%
heads = probs @ vh                                     # [H, T, dh]
np.testing.assert_allclose(heads, layers.attention(qh, kh, vh, M), rtol=1e-4, atol=1e-5)
merged = heads.transpose(1, 0, 2).reshape(T, d)        # [T, d]
np.testing.assert_array_equal(merged, layers.merge_heads(heads))
np.testing.assert_array_equal(layers.merge_heads(layers.split_heads(q, H)), q)   # merge undoes split
out = merged @ p0["attn"]["c_proj"]["w"] + p0["attn"]["c_proj"]["b"]            # [T, d]
np.testing.assert_allclose(out, trace["h0.attn.out"], rtol=1e-4, atol=1e-4)
lib = layers.multi_head_attention(h, **p0["attn"], n_head=H, mask=M)
np.testing.assert_allclose(out, lib, rtol=1e-4, atol=1e-5)
print("multi-head attention output:", out.shape, "- matches layers.multi_head_attention and the trace;"
      f" largest difference {np.abs(out - lib).max():.2e}")

# %% [markdown]
# ## 7. What the mask buys: the past does not depend on the future
#
# Because of the mask, the output at position $i$ depends only on tokens $0 \dots i$. Changing the
# last token must leave every earlier output of the whole model unchanged; this is what lets GPT-2
# learn from all $T$ next-token predictions of a sequence at once, and what makes a KV cache possible
# (notebook 07).

# %%
ids2 = ids.copy()
ids2[-1] = tok.encode(" happy")[0]
a, b = model(ids), model(ids2)                         # [T, V] logits
np.testing.assert_allclose(a[:-1], b[:-1], rtol=1e-5, atol=1e-5)
print("largest change at positions 0..T-2:", np.abs(a[:-1] - b[:-1]).max(),
      "; at the last position:", np.abs(a[-1] - b[-1]).max())

# %% [markdown]
# **Summary.** One matrix product gives $Q, K, V$; a reshape splits them into $H$ heads;
# $\mathrm{softmax}(QK^\top/\sqrt{d_k} + M)$ gives each token a distribution over the tokens before
# it; the weighted values of all heads are merged and projected. All of it is batched matrix
# arithmetic: no loop over tokens or heads.
