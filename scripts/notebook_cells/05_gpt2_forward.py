# %% [markdown]
# # 05 · The whole forward pass
#
# Notebooks 02–04 built the pieces. Here they are put together into GPT-2: from token ids to a
# probability for every possible next token, at every position:
#
# $$\begin{aligned}
# x^{(0)} &= W_{te}[\,\mathrm{ids}\,] + W_{pe}[\,0..T{-}1\,] && [T, d] \\
# x^{(\ell)} &= \mathrm{block}_\ell\big(x^{(\ell-1)}\big), \quad \ell = 1..L && [T, d] \\
# h &= \mathrm{LN}_f\big(x^{(L)}\big) && [T, d] \\
# z &= h\, W_{te}^\top && [T, V] \\
# p(\text{next} = i \mid \text{tokens} \le t) &= \mathrm{softmax}(z_t)_i
# \end{aligned}$$
#
# We run it by hand with `gpt2np.layers`, check it against `model(ids)` and `model.trace(ids)`, then
# turn logits into probabilities, a loss and a perplexity, and count the parameters of each size.

# %%
SETUP

# %%
from gpt2np import layers

model, REAL = load_model()
tok = Tokenizer.gpt2()
cfg = model.config
p = model.params
ids = np.array(tok.encode("The quick brown fox jumps over the lazy dog. The quick brown fox"))
T = len(ids)
print(cfg, f"\nT = {T} tokens")

# %% [markdown]
# ## 1. By hand, block by block
#
# The loop over the $L$ blocks is the only Python loop of the forward pass; every block works on
# all $T$ tokens and all heads at once.

# %%
M = layers.causal_mask(T, T)                              # [T, T] additive causal mask
x = p["wte"][ids] + p["wpe"][np.arange(T)]                # [T, d]
for blk in p["blocks"]:
    x = layers.block(x, blk, cfg.n_head, mask=M)          # [T, d]
h = layers.layer_norm(x, **p["ln_f"])                     # [T, d]
logits = h @ p["wte"].T                                   # [T, V]: the tied output head

lib_logits = model(ids)
np.testing.assert_allclose(logits, lib_logits, rtol=1e-4, atol=1e-4)
print(f"logits {logits.shape} {logits.dtype}; largest difference from model(ids): "
      f"{np.abs(logits - lib_logits).max():.2e}")

# %% [markdown]
# `model.trace(ids)` returns every intermediate array by name, which is how the other notebooks
# check their step-by-step work. Here are the names for block 0 and the end of the model:

# %%
trace = model.trace(ids)
for name, arr in trace.items():
    if name.startswith("h0.") or not name.startswith("h"):
        print(f"{name:15} {str(arr.shape):18} {arr.dtype}")
np.testing.assert_allclose(trace["ln_f"], h, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(trace["logits"], logits, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 2. The tied output head
#
# GPT-2 has no separate output matrix: the score of token $i$ is the dot product of the final
# vector $h_t$ with token $i$'s own input embedding, $z_{t,i} = h_t \cdot W_{te}[i]$. The model
# predicts the tokens whose embeddings point the same way as $h_t$. This saves $V \cdot d$
# parameters (38.6 M of the 124 M model's 124.4 M).

# %%
i = int(ids[3])
np.testing.assert_allclose(logits[-1, i], h[-1] @ p["wte"][i], rtol=1e-4, atol=1e-4)
print(f"z[T-1, {i}] = h[T-1] · wte[{i}] ({tok.decode([i])!r}) = {logits[-1, i]:.4f}")

# %% [markdown]
# ## 3. From logits to probabilities
#
# $$p_{t,i} = \frac{e^{z_{t,i}}}{\sum_{j=1}^{V} e^{z_{t,j}}}$$
#
# The most likely next tokens after the whole text:

# %%
probs = layers.softmax(logits[-1])                        # [V]
assert abs(probs.sum() - 1) < 1e-5
top = np.argsort(-probs)[:10]
for j in top[:5]:
    print(f"  {tok.decode([j])!r:12} p = {probs[j]:.3g}")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.bar(range(10), probs[top])
ax.set_xticks(range(10), [repr(tok.decode([j])) for j in top], rotation=45, fontsize=8)
ax.set_ylabel("p(next token)"); ax.set_title(f"after {tok.decode(ids[-4:].tolist())!r}")
fig.tight_layout()

# %% [markdown]
# ## 4. Loss and perplexity
#
# Every position $t$ predicts token $t+1$, so one forward pass scores the whole text. The loss is
# the mean negative log-likelihood (cross-entropy, in nats) of the $T-1$ true next tokens:
#
# $$\mathcal{L} = -\frac{1}{T-1}\sum_{t=0}^{T-2} \log p_{t,\,i_{t+1}}
# = \frac{1}{T-1}\sum_{t=0}^{T-2}\Big(\log\sum_j e^{z_{t,j}} - z_{t,\,i_{t+1}}\Big),
# \qquad \mathrm{PPL} = e^{\mathcal{L}}$$
#
# Perplexity is "how many tokens the model is choosing between, on average". A model that knows
# nothing spreads its probability evenly: $\mathcal{L} = \log V = \log 50257 = 10.82$, $\mathrm{PPL} = V$.

# %%
z = logits[:-1].astype(np.float64)                         # [T-1, V]; float64 for the log-sum-exp
zmax = z.max(-1, keepdims=True)
logsumexp = (zmax + np.log(np.exp(z - zmax).sum(-1, keepdims=True)))[:, 0]
nll = logsumexp - z[np.arange(T - 1), ids[1:]]             # [T-1] per-token loss
loss = nll.mean()
np.testing.assert_allclose(loss, model.loss(ids), rtol=1e-4)
print(f"loss = {loss:.4f} nats (model.loss: {model.loss(ids):.4f}),  perplexity = {np.exp(loss):.1f}")
print(f"uniform guess over V: loss = {np.log(cfg.n_vocab):.4f}, perplexity = {cfg.n_vocab}")
# gpt2np.scoring.perplexity slides a window over long texts; this one fits in a single window
from gpt2np import scoring
np.testing.assert_allclose(scoring.perplexity(model, ids).ppl, np.exp(loss), rtol=1e-4)

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(range(T - 1), nll)
ax.axhline(np.log(cfg.n_vocab), color="tab:red", ls="--", label="log V (uniform)")
ax.set_xticks(range(T - 1), [repr(tok.decode([j])) for j in ids[1:]], rotation=90, fontsize=7)
ax.set_ylabel("−log p (nats)"); ax.set_title("loss of each predicted token"); ax.legend()
fig.tight_layout()

# %% [markdown]
# With the real weights the second "The quick brown fox" is far cheaper than the first: attention
# lets the model copy what it has already seen.
#
# ## 5. Counting parameters
#
# Per block: two layer norms ($2 \cdot 2d$), $W_{qkv}$ ($3d^2 + 3d$), the attention output
# ($d^2 + d$), the MLP ($4d^2 + 4d$ and $4d^2 + d$): $12d^2 + 13d$. With the embeddings and the final
# layer norm (the output head is tied, so it costs nothing):
#
# $$N = V d + n_{ctx} d + L\,(12 d^2 + 13 d) + 2d$$

# %%
def n_params(c):
    d = c.n_embd
    return c.n_vocab * d + c.n_ctx * d + c.n_layer * (12 * d * d + 13 * d) + 2 * d

def count_tree(tree):
    if isinstance(tree, dict):
        return sum(count_tree(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(count_tree(v) for v in tree)
    return tree.size

assert count_tree(model.params) == n_params(cfg) == cfg.num_params()
print(f"this model: {count_tree(model.params):,} parameters = formula {n_params(cfg):,} = cfg.num_params()\n")
print(f"{'size':>6} {'L':>3} {'d':>5} {'H':>3} {'parameters':>15}  {'embeddings':>10} {'blocks':>7}")
sizes = ["124M", "355M", "774M", "1558M"]
presets = [Config.preset(s) for s in sizes]
for s, c in zip(sizes, presets):
    emb = (c.n_vocab + c.n_ctx) * c.n_embd
    print(f"{s:>6} {c.n_layer:3d} {c.n_embd:5d} {c.n_head:3d} {n_params(c):15,}  "
          f"{emb / n_params(c):10.0%} {1 - emb / n_params(c):7.0%}")
assert n_params(Config.preset("124M")) == 124_439_808   # the published count for GPT-2 small
assert all(n_params(c) == c.num_params() for c in presets)

# %%
fig, ax = plt.subplots(figsize=(6, 2.8))
emb = np.array([(c.n_vocab + c.n_ctx) * c.n_embd for c in presets]) / 1e6
attn = np.array([c.n_layer * (4 * c.n_embd**2 + 4 * c.n_embd + 2 * c.n_embd) for c in presets]) / 1e6
mlp = np.array([n_params(c) for c in presets]) / 1e6 - emb - attn
ax.bar(sizes, emb, label="embeddings (wte, wpe)")
ax.bar(sizes, attn, bottom=emb, label="attention + LN₁")
ax.bar(sizes, mlp, bottom=emb + attn, label="MLP + LN₂ + LN_f")
ax.set_ylabel("millions of parameters"); ax.legend(); ax.set_title("where GPT-2's parameters are")
fig.tight_layout()

# %% [markdown]
# Two thirds of every block is the MLP ($8d^2$ of $12d^2$). The embedding table is a large share of
# the small model and a small share of the large one.
