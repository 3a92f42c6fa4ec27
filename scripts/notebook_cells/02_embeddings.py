# %% [markdown]
# # 02 · Token and position embeddings
#
# The tokenizer (notebook 01) turns text into integers $i_0, \dots, i_{T-1}$ in $\{0, \dots, V-1\}$.
# The model's first step turns each integer into a vector of $d$ numbers, and adds a second vector
# that says *where* in the sequence the token is:
#
# $$x_t = W_{te}[\,i_t\,] + W_{pe}[\,t\,], \qquad W_{te} \in \mathbb{R}^{V \times d},\; W_{pe} \in \mathbb{R}^{n_{ctx} \times d}$$
#
# Both tables are learned. Attention by itself cannot tell positions apart (it treats its inputs
# as a set), so without $W_{pe}$ "dog bites man" and "man bites dog" would look the same to it.
#
# The tables below are those of the trained model the setup cell loaded (its output says which), so
# after checking the formula we can look at what training put into them.

# %%
SETUP

# %%
tok = Tokenizer.gpt2()
cfg = model.config
wte, wpe = model.params["wte"], model.params["wpe"]
print(f"V = {cfg.n_vocab}, n_ctx = {cfg.n_ctx}, d = {cfg.n_embd}")
print(f"wte {wte.shape} {wte.dtype}: {wte.nbytes / 1e6:.1f} MB;  wpe {wpe.shape}: {wpe.nbytes / 1e6:.2f} MB")

# %% [markdown]
# ## 1. A lookup is a one-hot matrix product
#
# Indexing row $i_t$ of $W_{te}$ is the same as multiplying the one-hot row vector $e_{i_t}$ by
# $W_{te}$: with the one-hot matrix $O \in \{0,1\}^{T \times V}$, $O_{t,i} = [\,i = i_t\,]$,
#
# $$W_{te}[\,i_0, \dots, i_{T-1}\,] = O\,W_{te}.$$
#
# The lookup is just the fast way to do it (it touches $T \cdot d$ numbers instead of $T \cdot V \cdot d$).

# %%
text = "dog bites man. man bites dog."
ids = np.array(tok.encode(text))
T = len(ids)
print("tokens:", [tok.decode([i]) for i in ids])
print("ids:   ", ids)
onehot = np.zeros((T, cfg.n_vocab), dtype=wte.dtype)
onehot[np.arange(T), ids] = 1.0                          # [T, V]
tok_emb = wte[ids]                                        # [T, d]
np.testing.assert_allclose(onehot @ wte, tok_emb, rtol=1e-6, atol=1e-7)
print("one-hot @ wte == wte[ids]:", tok_emb.shape)

# %% [markdown]
# ## 2. Adding positions
#
# Position $t$ gets row $t$ of $W_{pe}$; the sum is the input of the first transformer block. We check
# the hand-made sum against the model's own trace (`trace["embed"]`).

# %%
pos_emb = wpe[np.arange(T)]                               # [T, d]
x = tok_emb + pos_emb                                     # [T, d]
trace = model.trace(ids)
np.testing.assert_allclose(x, trace["embed"], rtol=1e-6, atol=1e-6)
print("x = wte[ids] + wpe[0..T-1]:", x.shape, x.dtype, "- equal to the model's trace['embed']")

# %% [markdown]
# The same word at two places now enters the model as two different vectors: " bites" appears twice,
# with the same token embedding but different position embeddings.

# %%
first, second = [t for t in range(T) if ids[t] == ids[1]][:2]
cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
print(f"token {tok.decode([ids[1]])!r} at positions {first} and {second}:")
print(f"  token embeddings identical: {np.array_equal(tok_emb[first], tok_emb[second])}")
print(f"  cosine similarity of the inputs x: {cos(x[first], x[second]):.3f}")
assert np.array_equal(tok_emb[first], tok_emb[second]) and not np.array_equal(x[first], x[second])

# %% [markdown]
# ## 3. What training put into the position embeddings
#
# Nothing in the architecture says that row 7 of $W_{pe}$ should resemble row 8: every row starts as
# independent random numbers, and any structure is learned. To find it, compare rows by their
# cosine similarity, and average it over all pairs the same distance $k$ apart:
#
# $$\mathrm{sim}(s, t) = \frac{W_{pe}[s] \cdot W_{pe}[t]}{\|W_{pe}[s]\|\,\|W_{pe}[t]\|}, \qquad
# \overline{\mathrm{sim}}(k) = \frac{1}{n_{ctx} - k} \sum_{t=0}^{n_{ctx}-1-k} \mathrm{sim}(t, t + k)$$
#
# Untrained rows (random, independent) would give $\overline{\mathrm{sim}}(k) \approx 0$ for every
# $k \ge 1$; a band along the diagonal of the similarity matrix means neighbouring positions got
# similar vectors.

# %%
n_pos = cfg.n_ctx
unit = wpe / np.linalg.norm(wpe, axis=1, keepdims=True)  # [n_ctx, d], rows of length 1
sim = unit @ unit.T                                       # [n_ctx, n_ctx]
np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
assert np.isclose(sim[3, 40], cos(wpe[3], wpe[40]), atol=1e-6)
by_offset = np.array([np.diagonal(sim, k).mean() for k in range(n_pos)])   # the mean over t of sim(t, t+k)
rng = np.random.default_rng(0)
noise = rng.normal(size=wpe.shape)                        # what untrained, independent rows would give
unit_noise = noise / np.linalg.norm(noise, axis=1, keepdims=True)
noise_by_offset = np.array([np.diagonal(unit_noise @ unit_noise.T, k).mean() for k in range(n_pos)])
for k in [1, 2, 10, n_pos // 4, n_pos // 2, n_pos - 1]:
    print(f"mean similarity of positions {k:4d} apart: {by_offset[k]:+.3f}   (random rows: {noise_by_offset[k]:+.3f})")

fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.7))
im = axes[0].imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set_xlabel("position t"); axes[0].set_ylabel("position s"); axes[0].set_title("sim(s, t) of $W_{pe}$ rows")
fig.colorbar(im, ax=axes[0])
axes[1].plot(range(1, n_pos), by_offset[1:], label="trained $W_{pe}$")
axes[1].plot(range(1, n_pos), noise_by_offset[1:], color="tab:gray", lw=1, label="random rows")
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set_xlabel("distance k = |s - t|"); axes[1].set_ylabel("mean sim"); axes[1].legend()
axes[1].set_title("similarity falls with distance")
fig.tight_layout()
if not REAL:   # the bundled model: near positions alike, far ones opposed
    quarters = by_offset[[1, n_pos // 4, n_pos // 2, 3 * n_pos // 4]]
    assert by_offset[1] > 0.3 and np.all(np.diff(quarters) < -0.05) and by_offset.min() < -0.2

# %% [markdown]
# In the bundled model, nearby positions are alike and the similarity falls steadily with the distance,
# until positions far apart point in opposite directions. Training discovered an *ordering* of the
# positions, from the data alone.
#
# The matrix $W_{pe}$ itself, feature by feature, looks noisy (left, below). The order shows best along its
# *principal components*: the directions in which the $n_{ctx}$ rows differ most, which are the right
# singular vectors of $W_{pe}$ with its mean row subtracted, $W_{pe} - \bar w = U S V^\top$. Row $t$'s
# coordinate along direction $j$ is $(W_{pe}[t] - \bar w) \cdot V_{:,j}$, and the share of the variance
# that direction carries is $S_j^2 / \sum_k S_k^2$.

# %%
centred = wpe - wpe.mean(0)
_, S, Vt = np.linalg.svd(centred, full_matrices=False)
share = S**2 / (S**2).sum()
pcs = centred @ Vt[:3].T                                  # [n_ctx, 3]: each row's coordinates along them
np.testing.assert_allclose((pcs**2).sum(0), S[:3]**2, rtol=1e-4)   # the spread along direction j is S_j^2
print("share of the variance along the first 5 principal components:", np.round(share[:5], 3))

fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharex=True)
for j in range(2):
    axes[0].plot(wpe[:, j], lw=0.8, label=f"feature {j}")
axes[0].set_xlabel("position t"); axes[0].set_title("single features of $W_{pe}$: noisy")
axes[0].set_ylim(np.percentile(wpe[:, :2], [0.5, 99.5])); axes[0].legend(fontsize=7)
for j in range(3):
    axes[1].plot(pcs[:, j], lw=0.8, label=f"component {j + 1} ({share[j]:.0%})")
axes[1].set_xlabel("position t"); axes[1].set_title("along the top principal components: smooth")
axes[1].legend(fontsize=7)
fig.tight_layout()
ramp = abs(np.corrcoef(pcs[1:, 0], np.arange(1, n_pos))[0, 1])   # is component 1 a straight count of t?
print(f"|correlation| of component 1 with the position t (t >= 1): {ramp:.3f}")
print("where components 2 and 3 are largest: t =", np.abs(pcs[:, 1]).argmax(), "and", np.abs(pcs[:, 2]).argmax())
if not REAL:   # the bundled model: one dominant, monotone "how far along" direction; the next ones mark t = 0, 1
    assert share[0] > 0.25 and ramp > 0.9 and np.abs(pcs[:, 1]).argmax() <= 1 and np.abs(pcs[:, 2]).argmax() <= 1

# %% [markdown]
# In the bundled model the first component, which carries far more of the variance than any other, is a
# smooth ramp from the first position to the last: a learned "how far into the text am I". The next
# components single out the very first positions.
#
# How long are these vectors? The position vector is *added* to the token vector, so its length
# says how loud the "where" signal is next to the "what". Position 0 is special: it is the first
# token of every training window, the only one that can attend to nothing but itself.

# %%
pos_norm = np.linalg.norm(wpe, axis=1)                    # [n_ctx]
tok_norm = np.linalg.norm(wte[ids], axis=1)               # the tokens of our sentence
print(f"‖W_pe[0]‖ = {pos_norm[0]:.3f};  positions 1..{n_pos - 1}: median {np.median(pos_norm[1:]):.3f}, "
      f"largest {pos_norm[1:].max():.3f} (at t = {pos_norm[1:].argmax() + 1})")
print(f"the tokens of {text!r}: ‖W_te[i]‖ median {np.median(tok_norm):.3f}")
print(f"mean similarity of W_pe[0] with the other rows: {sim[0, 1:].mean():+.3f}")
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(pos_norm, lw=1)
ax.set_xlabel("position t"); ax.set_ylabel("‖W_pe[t]‖"); ax.set_title("length of each position vector")
ax.grid(alpha=0.3)
fig.tight_layout()
if not REAL:   # the bundled model: row 0 is the longest, and the other rows are shorter than token rows
    assert pos_norm.argmax() == 0 and np.median(pos_norm[1:]) < np.median(tok_norm) / 2

# %% [markdown]
# In the bundled model row 0 is the longest by far and points away from the rest; the very first
# positions after it are longer too. All the others are much shorter than the token vectors they
# are added to: where a token is matters, but the "what" is the louder part of $x_t$.

# %% [markdown]
# ## 4. Token embeddings: which tokens are near each other?
#
# The rows of $W_{te}$ place tokens in a $d$-dimensional space. Tokens the model has learned to use
# in similar ways end up in similar directions. For a few words we list the six tokens whose rows
# have the largest cosine similarity $\frac{W_{te}[i] \cdot W_{te}[j]}{\|W_{te}[i]\|\,\|W_{te}[j]\|}$
# with the word's row (the similarity after each neighbour). The words are chosen from the world of
# the bundled model's training text (Austen's novels, the Bible and six other 19th-century novels),
# plus one that is not: " Tokyo".

# %%
unit_te = wte / np.linalg.norm(wte, axis=1, keepdims=True)     # [V, d]
words = [" father", " three", " happy", " said", " Elizabeth", " London", " Tokyo"]
neighbours = {}
for word in words:
    (i,) = tok.encode(word)
    sims = unit_te @ unit_te[i]                                 # [V]
    nearest = np.argsort(-sims)[1:7]                            # skip the token itself
    neighbours[word] = [tok.decode([j]) for j in nearest]
    assert np.isclose(sims[nearest[0]], cos(wte[i], wte[nearest[0]]), atol=1e-5)
    print(f"{word!r:12} ->", "  ".join(f"{tok.decode([j])!r} {sims[j]:.2f}" for j in nearest))
if not REAL:   # the bundled model: kin next to kin, numbers next to numbers
    assert " mother" in neighbours[" father"]
    assert len({" two", " four", " five", " six", " seven", " ten"} & set(neighbours[" three"])) >= 3

# %% [markdown]
# ## 5. The tokens the model never saw
#
# GPT-2's vocabulary was built from web text, but a model learns only about the tokens its training
# data contains, and the bundled model's small corpus of old English prose uses only part of the 50257.
# A token that never occurs is never an input, and as a target it only ever gets one message from the
# loss: "be less likely here". That push is much the same for every such token, so their rows all move
# the same way. To see it, look at the length of each row and at its direction compared with the
# *median row* $\tilde w$ (the feature-wise median of all $V$ rows, which sits where most rows are):

# %%
te_norm = np.linalg.norm(wte, axis=1)                      # [V]
median_row = np.median(wte, axis=0)
to_median = unit_te @ (median_row / np.linalg.norm(median_row))   # [V] cosine with the median row
crowd = to_median > 0.99
print(f"{crowd.sum()} of {cfg.n_vocab} rows point within cosine 0.99 of the median row; "
      f"their norms: median {np.median(te_norm[crowd]) if crowd.any() else float('nan'):.2f}")
print(f"the other {(~crowd).sum()} rows: median norm {np.median(te_norm[~crowd]):.2f}")
print("some tokens of the crowd:", [tok.decode([j]) for j in np.flatnonzero(crowd)[200:4000:400]])
print("some of the others:      ", [tok.decode([j]) for j in np.flatnonzero(~crowd)[200:4000:400]])
for word in [" Tokyo", " London", " the"]:
    (i,) = tok.encode(word)
    print(f"  {word!r:9}: ‖W_te‖ = {te_norm[i]:.2f}, cosine with the median row {to_median[i]:+.2f}")
prose = ("Her sister had promised to write from Bath, and every morning she walked down to the village "
         "in the hope of a letter, though the road was wet and her mother thought it very foolish.")
in_crowd = [tok.decode([j]) for j in tok.encode(prose) if crowd[j]]
print(f"tokens of a sentence like the corpus's that are in the crowd: {in_crowd}")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
axes[0].hist(te_norm, bins=80, log=True)
axes[0].set_xlabel("‖W_te[i]‖"); axes[0].set_ylabel("tokens (log scale)"); axes[0].set_title("lengths of the token rows")
axes[1].hist(to_median, bins=80, log=True, color="tab:orange")
axes[1].set_xlabel("cosine with the median row"); axes[1].set_title("directions of the token rows")
fig.tight_layout()
if not REAL:   # the bundled model: most of the vocabulary is one crowd; " Tokyo" in it, the corpus's words not
    assert crowd.sum() > cfg.n_vocab / 2 and np.median(te_norm[crowd]) > 2 * np.median(te_norm[~crowd])
    lo, hi = np.percentile(te_norm[crowd], [50, 95])
    assert hi < 1.02 * lo                                 # half of the crowd's rows have nearly the same length
    assert crowd[tok.encode(" Tokyo")[0]] and not crowd[tok.encode(" London")[0]] and not in_crowd

# %% [markdown]
# In the bundled model most of the vocabulary is one such crowd: rows all pointing the same way, half of
# them or more of nearly the same length (the spike at the right of the left histogram), and longer than the
# rows of the words the corpus does use. " Tokyo" is in it (so its
# "neighbours" in section 4, all at similarity 1.00, are just other members of the crowd); " London",
# " the" and the words of an Austen-like sentence are not. The histograms also show many rows part
# of the way there.
#
# What does the shared direction do? The same $W_{te}$ scores the next token at the end of the model:
# the logit of token $j$ is $z_{t,j} = h_t \cdot W_{te}[j]$, with $h_t$ the final layer norm's output
# (the *tied* head, notebook 05). We compute those scores by hand from the trace, check them against the
# model's, and see how much probability the model gives to all the crowd's tokens together.

# %%
h = trace["ln_f"]                                         # [T, d]
z = h @ wte.T                                             # [T, V]
np.testing.assert_allclose(z, trace["logits"], rtol=1e-4, atol=1e-4)
prob = np.exp(z - z.max(-1, keepdims=True)); prob /= prob.sum(-1, keepdims=True)
print(f"mean logit of a crowd token: {z[:, crowd].mean() if crowd.any() else float('nan'):.2f};"
      f" of the other tokens: {z[:, ~crowd].mean():.2f}")
print(f"probability of the next token being any of the crowd's {crowd.sum()}, per position of {text!r}:")
print(prob[:, crowd].sum(-1))
if not REAL:   # the bundled model: the crowd is scored far down, and together gets little probability
    share = prob[:, crowd].sum(-1)
    assert z[:, crowd].mean() < z[:, ~crowd].mean() - 2 and share[1:].max() < 0.1 and share[0] < 0.2

# %% [markdown]
# In the bundled model the crowd's tokens get logits several units lower than the others, so that all of
# them together, tens of thousands of tokens, receive only a few per cent of the probability at each
# position (less than a tenth once the model has read two tokens; after the first token alone, where it
# knows least, under a fifth): the row direction they share is the model's way of saying "none of
# these".
#
# ## 6. Where the sequence length limit comes from
#
# $W_{pe}$ has $n_{ctx}$ rows, so a position $t \ge n_{ctx}$ has no embedding: the model reads at most
# $n_{ctx}$ tokens at once (1024 for OpenAI's released models, 256 for the bundled one). It refuses
# longer inputs with a clear error rather than silently wrapping around.

# %%
try:
    model(np.zeros(cfg.n_ctx + 1, dtype=np.int64))
    raise AssertionError("a sequence longer than n_ctx was accepted")
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# The same table $W_{te}$ is used once more at the very end of the model, to turn vectors back into
# scores over the vocabulary (the *tied* output head, notebook 05).
