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
# These are the probabilities we just computed, one map per head of block 0. Each head of the
# trained model has its own pattern; section 8 measures, for every head of every block, how much it
# follows three patterns known from GPT-2.

# %%
n_show = min(H, 4)
fig, axes = plt.subplots(1, n_show, figsize=(3.0 * n_show, 3.4), layout="constrained")
for j, ax in enumerate(np.atleast_1d(axes)):
    ax.imshow(probs[j], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"block 0, head {j}")
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels if j == 0 else [""] * T, fontsize=7)
fig.suptitle("attention probabilities: row = query token, column = key token");

# %% [markdown]
# A head can learn to be a lookup. Here is one made by hand: give every position $t$ a one-hot
# "address" $e_t$, let the query of token $i$ ask for the address $e_{i-1}$ and let each key carry
# its own address, scaled by a large $\beta$. Then $Q_i \cdot K_j = \beta^2\,[\,j = i-1\,]$ and the
# softmax puts nearly all of token $i$'s weight on the token before it: a *previous-token head*,
# one of the patterns found in OpenAI's trained GPT-2. Whether this notebook's model has one is
# measured in section 8.

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
# ## 8. What the trained heads do: three patterns, measured
#
# Sections 1-7 took block 0 apart. Now we look at all $L \times H$ heads of the model and measure
# three patterns that trained transformers such as GPT-2 are known to learn. For the head $(l, h)$
# with attention matrix $P$ (row $i$ = query, column $j$ = key):
#
# * **previous-token score**: $\;s_{\text{prev}} = \frac{1}{T-1}\sum_{i=1}^{T-1} P_{i,\,i-1}$, the
#   mean weight a token puts on the token just before it;
# * **first-token score**: $\;s_{\text{first}} = \frac{1}{T-1}\sum_{i=1}^{T-1} P_{i,\,0}$, the mean
#   weight on position 0;
# * **induction score**: feed $n$ random tokens $r_0 \dots r_{n-1}$ followed by the same $n$ again.
#   The token at position $n + j$ of the second copy occurred before at position $j$; a head that
#   *copies* looks at the token that came right after that earlier occurrence, position $j + 1$,
#   because that is the token most likely to come next if the sequence repeats:
#   $\;s_{\text{ind}} = \frac{1}{n-1}\sum_{j=0}^{n-2} P_{n+j,\,j+1}$.
#
# The first two scores are averaged over five short sentences in the style of the bundled model's
# training text, the third over one repeated sequence of $n = 40$ tokens drawn, with a fixed seed,
# from the words of those sentences. A head that spreads its weight evenly over the $i + 1$ tokens
# it can see gives $\frac{1}{i+1}$ to any one of them; the code prints this **uniform baseline**
# next to the scores. We *name* a head only if its score is above **0.5**: at least half of its
# attention on the one position the pattern predicts.

# %%
L = cfg.n_layer
sentences = [
    "It was a cold morning in March, and Elizabeth walked alone to the village to see her aunt.",
    "And the king said to his servants, Go and bring me the man who spoke these words.",
    "Mrs. Bennet was not at all pleased with the letter, for it said nothing of his return.",
    "Then the people gathered at the gate of the city, and they gave thanks to the Lord.",
    "She could not help smiling at the thought of how little her sister knew of the matter.",
]
s_prev, s_first, base_sent = np.zeros((L, H)), np.zeros((L, H)), 0.0
for sentence in sentences:
    sid = np.array(tok.encode(sentence))
    tr = model.trace(sid)
    P = np.stack([tr[f"h{l}.attn.probs"] for l in range(L)])    # [L, H, T, T]
    i = np.arange(1, len(sid))                                   # the queries that have a previous token
    s_prev += P[:, :, i, i - 1].mean(-1) / len(sentences)        # [L, H]
    s_first += P[:, :, i, 0].mean(-1) / len(sentences)
    base_sent += np.mean(1 / (i + 1)) / len(sentences)
print(f"{len(sentences)} sentences of {min(len(tok.encode(s)) for s in sentences)}-"
      f"{max(len(tok.encode(s)) for s in sentences)} tokens; uniform baseline of both scores: {base_sent:.3f}")

# %% [markdown]
# For the induction score we also ask what matters for prediction: the model's loss on each token.
# A model that copies in context should predict the second copy far better than the first (which is
# random, so unpredictable). The loss is computed by hand from the logits of the trace and
# checked against `model.loss`.

# %%
n = 40
words = sorted({t for s in sentences for t in tok.encode(s) if tok.decode([t])[:1] == " "})
rng = np.random.default_rng(0)
rand = rng.choice(words, size=n, replace=False)                  # n distinct tokens, fixed seed
rep = np.concatenate([rand, rand])                               # [2n]: the same n tokens twice
tr = model.trace(rep)
P = np.stack([tr[f"h{l}.attn.probs"] for l in range(L)])        # [L, H, 2n, 2n]
for l in range(L):   # the trace's probabilities are the softmax of its masked scores
    np.testing.assert_allclose(P[l], layers.softmax(tr[f"h{l}.attn.scores"]), rtol=1e-5, atol=1e-6)
qi = np.arange(n, 2 * n - 1)                                     # queries: second copy (but its last token)
assert np.array_equal(rep[qi - n], rep[qi]) and np.array_equal(rep[qi - n + 1], rep[qi + 1])
s_ind = P[:, :, qi, qi - n + 1].mean(-1)                         # [L, H]: weight on the token after the earlier one
base_ind = np.mean(1 / (qi + 1))

logp = layers.log_softmax(tr["logits"][:-1])                     # [2n-1, V]: predictions of tokens 1..2n-1
nll = -logp[np.arange(2 * n - 1), rep[1:]]                       # nll[t] = -log p(rep[t+1] | rep[..t])
np.testing.assert_allclose(nll.mean(), model.loss(rep), rtol=1e-5)
loss_first, loss_second = nll[:n - 1].mean(), nll[n:].mean()     # (rep[n], the second copy's start, is in neither)
print("random tokens:", tok.decode(list(rand[:12])), "...")
print(f"loss on the first copy {loss_first:.2f} nats/token, on the second {loss_second:.2f} "
      f"(a uniform guess over the vocabulary: ln V = {np.log(cfg.n_vocab):.2f})")

# %%
score_sets = {"previous-token": (s_prev, base_sent), "first-token": (s_first, base_sent),
              "induction": (s_ind, base_ind)}
fig, axes = plt.subplots(1, 3, figsize=(3.2 * 3, 0.35 * L + 1.6), layout="constrained")
for ax, (kind, (s, base)) in zip(axes, score_sets.items()):
    im = ax.imshow(s, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if L * H <= 64:
        for (l, h), value in np.ndenumerate(s):
            ax.text(h, l, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    ax.set_title(f"{kind}\n(uniform baseline {base:.3f})", fontsize=9)
    ax.set_xlabel("head"); ax.set_xticks(range(H)); ax.set_yticks(range(L))
axes[0].set_ylabel("layer")
fig.colorbar(im, ax=axes, shrink=0.8, label="score")

THRESHOLD = 0.5
named = {}
for kind, (s, base) in score_sets.items():
    heads_above = [(l, h) for l, h in zip(*np.nonzero(s > THRESHOLD))]
    named[kind] = sorted(heads_above, key=lambda lh: -s[lh])
    for l, h in named[kind]:
        print(f"layer {l} head {h}: {kind} {s[l, h]:.2f}")
    if not named[kind]:
        l, h = np.unravel_index(s.argmax(), s.shape)
        print(f"no {kind} head (no score above {THRESHOLD}); the highest is layer {l} head {h}: "
              f"{kind} {s[l, h]:.2f}, uniform baseline {base:.3f}")

# %% [markdown]
# The attention maps of the highest-scoring head of each kind, on a real sentence written twice
# (so that the induction head has something to copy). A previous-token head draws a line just below
# the diagonal, a first-token head a bright first column, an induction head a line in the lower-left
# block, one step right of the diagonal that links each token to its earlier occurrence.

# %%
sentence = "Elizabeth smiled at her sister and said nothing."
twice = tok.encode(sentence) + tok.encode(" " + sentence)
tw_labels = [tok.decode([t]) for t in twice]
tw_trace = model.trace(twice)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.9), layout="constrained")
for ax, (kind, (s, _)) in zip(axes, score_sets.items()):
    l, h = np.unravel_index(s.argmax(), s.shape)
    ax.imshow(tw_trace[f"h{l}.attn.probs"][h], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"highest {kind}:\nlayer {l} head {h} (score {s[l, h]:.2f})", fontsize=9)
    ax.set_xticks(range(len(twice)), tw_labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(twice)), tw_labels if ax is axes[0] else [""] * len(twice), fontsize=6)

# %%
fig, ax = plt.subplots(figsize=(6.4, 2.8))
ax.plot(np.arange(1, 2 * n), nll, ".-", ms=3, lw=0.8)
ax.axvline(n - 0.5, color="gray", ls=":"); ax.axhline(np.log(cfg.n_vocab), color="gray", ls="--", lw=0.8)
ax.text(n / 2, np.log(cfg.n_vocab), "ln V", va="bottom", fontsize=8, color="gray")
ax.text(n * 0.02, 0.5, "first copy", fontsize=8); ax.text(n * 1.02, 0.5, "second copy", fontsize=8)
ax.set_xlabel("position of the predicted token"); ax.set_ylabel("loss (nats)")
ax.set_ylim(0, None); ax.grid(alpha=0.3)
ax.set_title(f"{n} random tokens, then the same {n} again: loss per token")
fig.tight_layout()

# %% [markdown]
# **What the bundled model shows.** None of its heads passes 0.5 on any of the three scores: its
# heads spread their attention over earlier tokens rather than fixing it on the previous or the
# first one. Its highest previous-token and first-token scores, printed above, stay below 0.4,
# against a uniform baseline of about 0.14 on these short sentences. It has **no induction heads**:
# no head puts more than twice the uniform weight on the token after an earlier occurrence, and its
# loss on the second copy of the random tokens is within half a nat of its loss on the first, so it
# does not copy in context. A model this small, trained this briefly (its model card,
# `gpt2np/assets/gpt2np-mini/MODEL_CARD.md`, gives the numbers), has not learned these patterns; run
# with OpenAI's 124M weights, the same cells measure and name its heads instead.

# %%
if not REAL:   # the paragraph above describes the bundled model; a retrained model must re-check it
    assert not any(named.values()), named
    assert max(s_prev.max(), s_first.max()) < 0.4 and 0.12 < base_sent < 0.16, (s_prev.max(), s_first.max())
    assert s_ind.max() < 2 * base_ind, s_ind.max()
    assert abs(loss_second - loss_first) < 0.5, (loss_first, loss_second)
print(f"largest scores: previous-token {s_prev.max():.3f}, first-token {s_first.max():.3f} "
      f"(baseline {base_sent:.3f}); induction {s_ind.max():.3f} (baseline {base_ind:.3f}); "
      f"loss second - first copy: {loss_second - loss_first:+.2f} nats")

# %% [markdown]
# **What the heads do instead: how far back they look.** A head need not look at one fixed position
# to be useful. A simpler summary of where its weight goes is the mean distance back,
#
# $$\bar\delta = \frac{1}{|I|} \sum_{i \in I} \sum_{j \le i} P_{ij}\,(i - j),$$
#
# measured on the five sentences joined into one passage, over the positions $i \ge 20$ (so every
# query has a long past to choose from). A head spreading evenly over the past has
# $\sum_j P_{ij}(i-j) = i/2$; a previous-token head would score about 1. The cell names every head
# whose mean distance is under half the uniform one.

# %%
passage = np.array(tok.encode(" ".join(sentences)))
tr = model.trace(passage)
P = np.stack([tr[f"h{l}.attn.probs"] for l in range(L)])        # [L, H, T, T]
i = np.arange(20, len(passage))
back = i[:, None] - np.arange(len(passage))[None, :]             # [|I|, T]: i - j (negative = masked future)
dist = (P[:, :, i, :] * np.maximum(back, 0)).sum(-1).mean(-1)     # [L, H]
dist_uniform = np.mean(i / 2)
local = sorted(zip(*np.nonzero(dist < dist_uniform / 2)), key=lambda lh: dist[lh])
print(f"passage of {len(passage)} tokens; uniform mean distance {dist_uniform:.1f} tokens")
for l, h in local:
    print(f"layer {l} head {h}: mean distance back {dist[l, h]:.1f} tokens")
fig, ax = plt.subplots(figsize=(4.2, 0.35 * L + 1.6), layout="constrained")
im = ax.imshow(dist, cmap="viridis_r", vmin=0, vmax=dist_uniform, aspect="auto")
if L * H <= 64:
    for (l, h), value in np.ndenumerate(dist):
        ax.text(h, l, f"{value:.0f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.4 * dist_uniform else "black")
ax.set_xlabel("head"); ax.set_ylabel("layer"); ax.set_xticks(range(H)); ax.set_yticks(range(L))
ax.set_title(f"mean distance back, in tokens\n(uniform: {dist_uniform:.1f})", fontsize=9)
fig.colorbar(im, ax=ax, shrink=0.8)

# %% [markdown]
# For the bundled model several heads look mostly at the last few tokens (a mean distance under half
# the uniform one), so the model does use recent context, spread over the last several tokens instead of
# fixed on one.

# %%
if not REAL:   # the sentence above describes the bundled model
    assert len(local) >= 3, local
print(f"{len(local)} of {L * H} heads have a mean distance under {dist_uniform / 2:.1f} tokens")

# %% [markdown]
# **Summary.** One matrix product gives $Q, K, V$; a reshape splits them into $H$ heads;
# $\mathrm{softmax}(QK^\top/\sqrt{d_k} + M)$ gives each token a distribution over the tokens before
# it; the weighted values of all heads are merged and projected. All of it is batched matrix
# arithmetic: no loop over tokens or heads. What a trained head does with this machinery is learned;
# section 8 measured three patterns in every head of the model, and notebook 11 looks further inside.
