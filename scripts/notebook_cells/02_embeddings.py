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

# %%
SETUP

# %%
model, REAL = load_model()
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
# ## 3. A picture of the position embedding matrix
#
# Each row of $W_{pe}$ is one position. In the real GPT-2 the learned rows vary smoothly with the
# position, with wave-like columns reminiscent of the sine/cosine encodings of the original
# Transformer, and neighbouring positions get similar vectors. (With the small random stand-in
# model the picture is noise: it has never been trained.)

# %%
n_pos = cfg.n_ctx if REAL else 96     # all positions of the real model; the stand-in's are noise anyway
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
im = axes[0].imshow(wpe[:n_pos, :min(cfg.n_embd, 48)].T, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                    vmin=-np.abs(wpe).max() / 2, vmax=np.abs(wpe).max() / 2)
axes[0].set_xlabel("position t"); axes[0].set_ylabel("feature (first 48)")
axes[0].set_title("position embeddings $W_{pe}$ (transposed)")
fig.colorbar(im, ax=axes[0])
for j in range(3):
    axes[1].plot(wpe[:n_pos, j], lw=1, label=f"feature {j}")
axes[1].set_xlabel("position t"); axes[1].set_title("a few columns of $W_{pe}$"); axes[1].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# How similar are two positions? The cosine similarity $\frac{W_{pe}[s] \cdot W_{pe}[t]}{\|W_{pe}[s]\|\,\|W_{pe}[t]\|}$
# for every pair: with trained weights, a bright band along the diagonal (nearby positions look alike).

# %%
unit = wpe[:n_pos] / np.linalg.norm(wpe[:n_pos], axis=1, keepdims=True)
sim = unit @ unit.T                                       # [n_pos, n_pos]
assert np.allclose(np.diag(sim), 1.0, atol=1e-5)
fig, ax = plt.subplots(figsize=(3.8, 3.2))
im = ax.imshow(sim, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
ax.set_xlabel("position t"); ax.set_ylabel("position s"); ax.set_title("cosine similarity of positions")
fig.colorbar(im, ax=ax)
fig.tight_layout()

# %% [markdown]
# ## 4. Token embeddings: which tokens are near each other?
#
# The rows of $W_{te}$ place tokens in a $d$-dimensional space. With trained weights, tokens used
# in similar ways end up close together (by cosine similarity). With the random stand-in model the
# neighbours are arbitrary.

# %%
unit_te = wte / np.linalg.norm(wte, axis=1, keepdims=True)     # [V, d]
for word in [" king", " Paris", " seven", " running"]:
    (i,) = tok.encode(word)
    nearest = np.argsort(-(unit_te @ unit_te[i]))[1:7]          # skip the token itself
    print(f"{word!r:12} ->", [tok.decode([j]) for j in nearest])

# %% [markdown]
# ## 5. Where the sequence length limit comes from
#
# $W_{pe}$ has $n_{ctx}$ rows, so a position $t \ge n_{ctx}$ has no embedding: GPT-2 reads at most
# $n_{ctx}$ tokens at once (1024 for the released models). The model refuses longer inputs with a
# clear error rather than silently wrapping around.

# %%
try:
    model(np.zeros(cfg.n_ctx + 1, dtype=np.int64))
    raise AssertionError("a sequence longer than n_ctx was accepted")
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# The same table $W_{te}$ is used once more at the very end of the model, to turn vectors back into
# scores over the vocabulary (the *tied* output head, notebook 05).
