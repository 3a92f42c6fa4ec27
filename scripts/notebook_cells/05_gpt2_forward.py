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
#
# The model is the one the setup cell loaded (its output says which): OpenAI's GPT-2 124M if it is in
# the cache, otherwise the bundled `gpt2np-mini`, a 6-layer GPT-2 trained on Jane Austen's novels, a
# public-domain Bible and six other 19th-century novels. So the text we feed it is from that world:
# the first sentence of *Pride and Prejudice*.

# %%
SETUP

# %%
from gpt2np import layers

tok = Tokenizer.gpt2()
cfg = model.config
p = model.params
text = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.")
ids = np.array(tok.encode(text))
T = len(ids)
print(cfg, f"\nT = {T} tokens:", [tok.decode([j]) for j in ids])

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
# predicts the tokens whose embeddings point the same way as $h_t$. Tying saves $V \cdot d$
# parameters: 38.6 M of the 124M model's 124.4 M, and most of a small model with GPT-2's vocabulary.

# %%
t = T - 3                                                 # the position of the last " a": it predicts " wife"
i = int(ids[t + 1])
np.testing.assert_allclose(logits[t, i], h[t] @ p["wte"][i], rtol=1e-4, atol=1e-4)
print(f"z[{t}, {i}] = h[{t}] · wte[{i}] ({tok.decode([i])!r}) = {logits[t, i]:.4f}")
print(f"V·d = {cfg.n_vocab * cfg.n_embd:,} of this model's {model.num_params():,} parameters "
      f"({cfg.n_vocab * cfg.n_embd / model.num_params():.0%}) are the one table wte")

# %% [markdown]
# ## 3. From logits to probabilities
#
# $$p_{t,i} = \frac{e^{z_{t,i}}}{\sum_{j=1}^{V} e^{z_{t,j}}}$$
#
# Because of the causal mask, row $t$ of the logits depends only on tokens $0..t$: the one forward
# pass above already holds the model's prediction after every prefix of the sentence. Row $T-3$ is
# its guess after "... must be in want of a", exactly what running the shorter prompt alone gives.
# We also ask it to finish the first verse of Genesis.
#
# How spread out a prediction is can be put in one number, the entropy
# $H(p) = -\sum_i p_i \log p_i$ (nats); $e^{H}$ is the number of equally likely tokens that would be
# as uncertain.

# %%
austen = tok.decode(ids[:t + 1].tolist())                 # "It is a truth ... in want of a"
np.testing.assert_allclose(model(ids[:t + 1])[-1], logits[t], rtol=1e-4, atol=1e-4)
genesis = "In the beginning God created the heaven and the"
cases = [(austen, logits[t], " wife"), (genesis, model(tok.encode(genesis))[-1], " earth")]

fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
found = []
for ax, (prompt, zt, word) in zip(axes, cases):
    e = np.exp(zt - zt.max())
    probs = e / e.sum()                                   # [V]
    np.testing.assert_allclose(probs, layers.softmax(zt), rtol=1e-5, atol=1e-8)
    assert abs(probs.sum() - 1) < 1e-5
    top = np.argsort(-probs)[:8]
    target = tok.encode(word)[0]
    rank = int((probs > probs[target]).sum()) + 1
    H = -(probs * np.log(np.maximum(probs, 1e-30))).sum()
    found.append((top[0], probs[top[0]], rank))
    print(f"...{prompt[-38:]!r}:  entropy {H:.2f} nats (like {np.exp(H):.0f} equal choices)")
    print("   " + ",  ".join(f"{tok.decode([j])!r} {probs[j]:.3f}" for j in top))
    print(f"   the original text's {word!r}: p = {probs[target]:.4f}, rank {rank}\n")
    ax.bar(range(8), probs[top], color=["tab:orange" if j == target else "tab:blue" for j in top])
    ax.set_xticks(range(8), [repr(tok.decode([j])) for j in top], rotation=45, fontsize=8)
    ax.set_title(f"...{prompt[-26:]!r}", fontsize=8)
axes[0].set_ylabel("p(next token)")
fig.tight_layout()
if not REAL:  # what the text below says of the bundled model
    (a_top, a_p, a_rank), (g_top, g_p, g_rank) = found
    assert 1 < g_rank <= 5 and a_rank > 5 and max(a_p, g_p) < 1 / 7, found

# %% [markdown]
# For the bundled model (the numbers are printed above) neither famous sentence comes out by heart.
# After "the heaven and the" it ranks " earth" among its first few choices but not first, and after
# "in want of a" it spreads its bets over many plausible words, with " wife" well down the list; in
# both cases no word gets as much as a seventh of the probability. A 7.7 M-parameter model trained on
# 3.4 M tokens learns which kinds of words can follow which, not whole sentences by heart.

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
worst, best = np.argsort(-nll)[:3], np.argsort(nll)[:3]
print("dearest tokens:", [(tok.decode([ids[j + 1]]), round(float(nll[j]), 2)) for j in worst])
print("cheapest tokens:", [(tok.decode([ids[j + 1]]), round(float(nll[j]), 2)) for j in best])
if not REAL:  # the prose below
    assert loss < np.log(cfg.n_vocab) and tok.decode([ids[worst[0] + 1]]) == " universally"
    assert nll[worst[0]] > np.log(cfg.n_vocab)
    assert [tok.decode([ids[j + 1]]) for j in best] == [" of", " of", " be"] and nll[best].max() < 1.3

# %% [markdown]
# The loss is far below the uniform $\log V$, but it is uneven. For the bundled model the cheapest
# tokens are the ones grammar all but forces (" of" after "in want" and after "in possession", " be"
# after "must": little more than a nat at most), and the rare word " universally" costs *more* than a
# uniform guess would. Training pushes
# the probability of tokens the model has rarely seen far below $1/V$, so meeting one is expensive.
#
# The same holds for whole texts: one from outside the training domain costs many more nats per
# token. And repetition: a model that has learned to look back and copy (what are called *induction
# heads*) finds the second copy of a sentence much cheaper than the first. We measure both.

# %%
fox = "The quick brown fox jumps over the lazy dog."
verse = 'And God said to Moses, "Go to Pharaoh and say to him, Let my people go."'
print(f"loss per token: Austen's sentence {loss:.2f},  {fox!r} {model.loss(tok.encode(fox)):.2f} nats")

once = tok.encode(verse)
twice = np.array(once + once)
n = len(once)
nll2 = -layers.log_softmax(model(twice)[:-1])[np.arange(2 * n - 1), twice[1:]]   # [2n-1]
first, second = nll2[:n - 1], nll2[n:]                    # the same n-1 targets, read once and again
np.testing.assert_allclose(nll2.mean(), model.loss(twice), rtol=1e-4)
drop = first.mean() - second.mean()
print(f"the verse, first time {first.mean():.2f} nats per token, second time {second.mean():.2f}: "
      f"{drop:.2f} nats cheaper")

fig, ax = plt.subplots(figsize=(7, 2.6))
ax.plot(first, ".-", label="first time")
ax.plot(second, ".-", label="second time (the same tokens again)")
ax.set_xticks(range(n - 1), [repr(tok.decode([j])) for j in once[1:]], rotation=90, fontsize=7)
ax.set_ylabel("−log p (nats)"); ax.legend(fontsize=8); ax.set_title("a verse, then the same verse again")
fig.tight_layout()
if not REAL:  # the prose below
    assert model.loss(tok.encode(fox)) > loss + 2
    assert 0 <= drop < 1.0, drop

# %% [markdown]
# For the bundled model the pangram about the fox, nothing like its corpus, costs several nats per
# token more than Austen's sentence. The repeated verse gets only a little cheaper, by less than a
# nat per token on average: this small model has hardly learned to copy from its context, and the
# second time it mostly predicts each token as it did the first. (Notebook 11 looks at what its
# attention heads do instead.)
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
