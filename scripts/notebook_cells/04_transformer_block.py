# %% [markdown]
# # 04 · The transformer block
#
# GPT-2 is a stack of identical blocks. Each one is *pre-LN*: it normalises a copy of its input,
# transforms it, and adds the result back to the input (a residual connection), twice:
#
# $$x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1(x)) \qquad\qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x))$$
#
# This notebook takes the pieces one by one (layer norm, GELU, the MLP, the residuals), computes each
# by hand on block 0's input in the trained model the setup cell loaded, and checks it against
# `gpt2np.layers`. Then it measures what the blocks of that model actually do to a sentence: how often
# the MLP's units are on, how the residual stream grows from block to block, and how much of it comes
# from attention and how much from the MLPs. It ends with how this block differs from a textbook
# *encoder* layer such as PyTorch's `nn.TransformerEncoderLayer`.

# %%
SETUP

# %%
import math
from gpt2np import layers

tok = Tokenizer.gpt2()
cfg = model.config
text = ("When Mrs. Dashwood came down to breakfast, she found her daughters already at the window, "
        "watching the rain and wondering whether their cousin would still ride over from the park.")
ids = np.array(tok.encode(text))                       # prose like the bundled model's training text
trace = model.trace(ids)
p0 = model.params["blocks"][0]
x = trace["embed"]                                     # [T, d], the input of block 0
T, d = x.shape
print(f"{len(ids)} tokens; block input x: {x.shape} {x.dtype}")

# %% [markdown]
# ## 1. Layer normalisation
#
# Each token's vector is normalised on its own, over its $d$ features, then scaled and shifted by
# learned $g, b \in \mathbb{R}^d$:
#
# $$\mu = \frac1d\sum_{i=1}^d x_i, \qquad \sigma^2 = \frac1d\sum_{i=1}^d (x_i-\mu)^2, \qquad
# \mathrm{LN}(x) = g \odot \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + b, \quad \varepsilon = 10^{-5}$$
#
# Note the *biased* variance ($\frac1d$, not $\frac1{d-1}$) and $\varepsilon$ inside the root.

# %%
mu = x.mean(-1, keepdims=True)                          # [T, 1]
var = ((x - mu) ** 2).mean(-1, keepdims=True)           # [T, 1]
xhat = (x - mu) / np.sqrt(var + 1e-5)                   # [T, d]: mean 0, variance ~1 per token
ln1 = xhat * p0["ln_1"]["g"] + p0["ln_1"]["b"]
np.testing.assert_allclose(ln1, layers.layer_norm(x, **p0["ln_1"]), rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(ln1, trace["h0.ln_1"], rtol=1e-5, atol=1e-5)
print("per-token mean of x̂:", xhat.mean(-1)[:4], " variance:", xhat.var(-1)[:4])

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharey=True)
axes[0].hist(x[1:].ravel(), bins=60, color="tab:gray"); axes[0].set_title("x (block 0 input), tokens 1…T-1")
axes[1].hist(xhat[1:].ravel(), bins=60, color="tab:blue"); axes[1].set_title("(x - μ)/√(σ²+ε): each token mean 0, var 1")
fig.tight_layout()

# %% [markdown]
# ## 2. GELU
#
# The MLP's nonlinearity is the Gaussian Error Linear Unit, $\mathrm{GELU}(x) = x\,\Phi(x)$ with
# $\Phi$ the standard normal CDF. Written with the error function:
#
# $$\mathrm{GELU}(x) = \frac{x}{2}\left(1 + \mathrm{erf}\!\left(\frac{x}{\sqrt2}\right)\right)$$
#
# GPT-2 was trained with the tanh approximation, and that is what `layers.gelu` computes:
#
# $$\mathrm{GELU}(x) \approx \frac{x}{2}\left(1 + \tanh\!\left(\sqrt{2/\pi}\,\left(x + 0.044715\,x^3\right)\right)\right)$$
#
# Unlike $\mathrm{ReLU}(x) = \max(0, x)$ it is smooth, and slightly negative for negative inputs.

# %%
xs = np.linspace(-4, 4, 801, dtype=np.float32)
erf = np.vectorize(math.erf, otypes=[np.float64])       # the exact error function, no SciPy needed
gelu_exact = 0.5 * xs * (1 + erf(xs / math.sqrt(2)))
gelu_tanh = 0.5 * xs * (1 + np.tanh(math.sqrt(2 / math.pi) * (xs + 0.044715 * xs**3)))
np.testing.assert_allclose(gelu_tanh, layers.gelu(xs), rtol=1e-5, atol=1e-6)
gap = np.abs(gelu_tanh - gelu_exact)
print(f"largest |tanh GELU - exact GELU| on [-4, 4]: {gap.max():.1e} at x = {xs[gap.argmax()]:.2f}")
print(f"minimum of GELU: {gelu_exact.min():.4f} at x = {xs[gelu_exact.argmin()]:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(xs, np.maximum(xs, 0), label="ReLU", color="tab:gray", ls="--")
axes[0].plot(xs, gelu_exact, label="GELU, exact (erf)", lw=3, alpha=0.5)
axes[0].plot(xs, layers.gelu(xs), label="GELU, tanh approx. (gpt2np)", color="k", lw=1)
axes[0].legend(); axes[0].set_title("activation functions"); axes[0].grid(alpha=0.3)
axes[1].plot(xs, gelu_tanh - gelu_exact); axes[1].set_title("tanh approximation minus exact GELU")
axes[1].grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 3. The MLP
#
# A position-wise feed-forward network: widen each token's vector to $4d$, apply GELU, project back:
#
# $$\mathrm{MLP}(h) = \mathrm{GELU}(h\,W_{fc} + b_{fc})\,W_{proj} + b_{proj},\qquad
# W_{fc} \in \mathbb{R}^{d\times 4d},\; W_{proj} \in \mathbb{R}^{4d\times d}$$
#
# It treats every token separately; mixing between tokens happens only in attention.

# %%
h2 = trace["h0.ln_2"]                                   # LN_2 of the block's middle state, [T, d]
fc = h2 @ p0["mlp"]["c_fc"]["w"] + p0["mlp"]["c_fc"]["b"]   # [T, 4d]
act = layers.gelu(fc)
mlp_out = act @ p0["mlp"]["c_proj"]["w"] + p0["mlp"]["c_proj"]["b"]   # [T, d]
np.testing.assert_allclose(fc, trace["h0.mlp.fc"], rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(mlp_out, trace["h0.mlp.out"], rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(mlp_out, layers.mlp(h2, **p0["mlp"]), rtol=1e-5, atol=1e-5)
# position-wise: token 3 alone gives the same result as token 3 inside the sequence
np.testing.assert_allclose(layers.mlp(h2[3:4], **p0["mlp"]), mlp_out[3:4], rtol=1e-5, atol=1e-5)
print(f"{d} -> {fc.shape[-1]} -> {mlp_out.shape[-1]} features per token;"
      f" {np.mean(act < 0):.0%} of the GELU outputs are negative (ReLU would give none)")

# %% [markdown]
# ### How many of the MLP's units are on?
#
# Call unit $j$ of the $4d$ hidden units *on* for a token when its pre-activation $u_j = (h\,W_{fc} + b_{fc})_j$
# is positive. An off unit outputs $\mathrm{GELU}(u_j) \in [-0.17, 0)$, close to nothing; an on unit
# passes $u_j$ on almost unchanged once it is past 2 or so. So the MLP's output for a token is
# built mostly from the rows of $W_{proj}$ of its on units. We count them in every block of the model
# (checking each block's GELU against the trace), and look at the pre-activations of one block.

# %%
L = cfg.n_layer
on_share, energy_on = [], []
for i in range(L):
    u = trace[f"h{i}.mlp.fc"]                            # [T, 4d] pre-activations of block i
    g = layers.gelu(u)
    np.testing.assert_allclose(g, trace[f"h{i}.mlp.gelu"], rtol=1e-5, atol=1e-6)
    on_share.append(np.mean(u > 0))
    energy_on.append((g[u > 0] ** 2).sum() / (g ** 2).sum())   # share of sum(GELU^2) from on units
    print(f"block {i}: {on_share[-1]:5.1%} of the units on per token (on average); "
          f"they give {energy_on[-1]:5.1%} of the sum of squared GELU outputs; "
          f"{np.mean((u > 0).sum(0) == 0):4.0%} are off for every token")

sparsest = int(np.argmin(on_share))
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
axes[0].bar(range(L), on_share, color="tab:green")
axes[0].axhline(0.5, color="k", lw=0.5, ls="--")
axes[0].set_xlabel("block"); axes[0].set_ylabel("share of units on"); axes[0].set_title("MLP units on, per token")
u = trace[f"h{sparsest}.mlp.fc"]
axes[1].hist(u.ravel(), bins=80, color="tab:gray", density=True, label="pre-activations")
axes[1].axvline(0, color="k", lw=0.5)
axes[1].set_xlabel(f"u (block {sparsest}, all tokens and units)"); axes[1].set_title(f"block {sparsest}: most units below 0")
fig.tight_layout()
never_on = [np.mean((trace[f"h{i}.mlp.fc"] > 0).sum(0) == 0) for i in range(L)]
if not REAL:   # the bundled model: in every block fewer than half of the units are on, most for some token
    assert max(on_share) < 0.5 and min(on_share) < 0.25 and max(never_on) < 0.5 and 0.7 < min(energy_on) and max(energy_on) < 0.97

# %% [markdown]
# In the bundled model fewer than half of the units are on for a typical token in every block, and in the
# sparsest block only a small fraction (the printed numbers). Which units are on depends on the token:
# in every block most units are on for at least one token of the sentence. The many off units are not
# exactly zero, though: their small negative outputs still carry a share of the total, from a few per
# cent to about a quarter, by block.

# %% [markdown]
# ## 4. Residuals and the whole block
#
# $$r = x + \mathrm{MHA}(\mathrm{LN}_1(x)) \qquad\qquad y = r + \mathrm{MLP}(\mathrm{LN}_2(r))$$
#
# The sublayers only ever *add* to the running vector $x$ (the "residual stream"), so the
# unnormalised signal flows straight from the embedding to the last block, and gradients flow
# straight back. Below: the block by hand, then `layers.block`, then the model's trace.

# %%
M = layers.causal_mask(T, T)
r = x + layers.multi_head_attention(ln1, **p0["attn"], n_head=cfg.n_head, mask=M)
y = r + layers.mlp(layers.layer_norm(r, **p0["ln_2"]), **p0["mlp"])
np.testing.assert_allclose(r, trace["h0.resid"], rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(y, layers.block(x, p0, cfg.n_head, mask=M), rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(y, trace["h0.out"], rtol=1e-4, atol=1e-4)
print("block(x) by hand == layers.block == trace['h0.out']")

# %% [markdown]
# ### The residual stream of the whole model
#
# Applying the two residual formulas block after block, the input of the final norm is the embedding
# plus everything every sublayer ever added:
#
# $$x^{(L)} = x^{(0)} + \sum_{\ell=0}^{L-1} \big(a^{(\ell)} + m^{(\ell)}\big), \qquad
# a^{(\ell)} = \mathrm{MHA}_\ell(\cdot),\; m^{(\ell)} = \mathrm{MLP}_\ell(\cdot)$$
#
# We check it from the trace, then measure two things per block on our sentence: the mean length of the
# stream $\|x\|$ and of what each sublayer adds, and the direction of each addition compared with the
# stream it is added to, $\cos(a^{(\ell)}, x)$ (positive: it reinforces what is there; negative: it
# partly cancels it).

# %%
norm = lambda a: np.linalg.norm(a, axis=-1)             # [T]: the length of each token's vector
cos_rows = lambda a, b: np.sum(a * b, -1) / norm(a) / norm(b)
stream = trace["embed"].copy()
rows = []
for i in range(L):
    a_i, m_i = trace[f"h{i}.attn.out"], trace[f"h{i}.mlp.out"]
    rows.append((norm(stream).mean(), norm(a_i).mean(), norm(m_i).mean(),
                 cos_rows(a_i, stream).mean(), cos_rows(m_i, stream + a_i).mean()))
    stream = stream + a_i
    np.testing.assert_allclose(stream, trace[f"h{i}.resid"], rtol=1e-4, atol=1e-4)
    stream = stream + m_i
    np.testing.assert_allclose(stream, trace[f"h{i}.out"], rtol=1e-4, atol=1e-4)
print("x^(L) == embedding + every attention and MLP output: checked block by block\n")
print("block   ‖x‖ in   ‖MHA out‖   ‖MLP out‖   cos(MHA out, x)   cos(MLP out, x)")
for i, (xn, an, mn, ac, mc) in enumerate(rows):
    print(f"{i:5d}  {xn:7.2f}  {an:10.2f}  {mn:10.2f}  {ac:+16.2f}  {mc:+16.2f}")
print(f"final ‖x^(L)‖ = {norm(stream).mean():.2f}, {norm(stream).mean() / rows[0][0]:.0f} times the embedding's")

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(range(L + 1), [r[0] for r in rows] + [norm(stream).mean()], "o-", label="‖x‖ after block (0 = embedding)")
ax.plot(np.arange(L) + 1, [r[1] for r in rows], "s--", label="‖MHA output‖")
ax.plot(np.arange(L) + 1, [r[2] for r in rows], "^--", label="‖MLP output‖")
ax.set_xlabel("block"); ax.set_ylabel("mean vector norm"); ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout()
if not REAL:   # the bundled model: block 0's MLP makes most of the early stream; the stream grows, then levels
    assert rows[0][2] > 5 * rows[0][0] and rows[0][2] > 5 * rows[0][1]
    assert rows[1][0] < rows[2][0] < rows[3][0] and rows[L - 1][0] > rows[L // 2][0] * 0.9
    assert norm(stream).mean() > 10 * rows[0][0] and min(r[3] for r in rows) < -0.2

# %% [markdown]
# In the bundled model the stream starts short (the embedding) and block 0's MLP immediately adds a
# vector many times longer, while block 0's attention adds little: the first MLP acts like a second
# embedding step, replacing the raw token vector by the model's own representation of the token. The
# stream then keeps growing for a few blocks and levels off. Each sublayer reads a *normalised* copy of the
# stream, so this growth is harmless, and it means that an addition of a given size turns the stream
# less and less in later blocks. The cosines show that the sublayers do not only add: in some blocks
# attention's output points partly *against* the stream, removing some of what is there.
#
# Which sublayers make up the final stream? Project each term of the sum onto $x^{(L)}$: the shares
# $\frac{c \cdot x^{(L)}}{\|x^{(L)}\|^2}$ of all the terms $c$ add up to exactly 1 for every token.

# %%
terms = {"emb": trace["embed"]}
for i in range(L):
    terms[f"a{i}"], terms[f"m{i}"] = trace[f"h{i}.attn.out"], trace[f"h{i}.mlp.out"]
shares = {k: np.sum(c * stream, -1) / np.sum(stream * stream, -1) for k, c in terms.items()}   # [T] each
np.testing.assert_allclose(sum(shares.values()), 1.0, rtol=1e-4)
mean_share = {k: float(v.mean()) for k, v in shares.items()}
attn_total = sum(v for k, v in mean_share.items() if k[0] == "a")
mlp_total = sum(v for k, v in mean_share.items() if k[0] == "m")
print(f"share of x^(L) from the embedding {mean_share['emb']:+.3f}, from all attention {attn_total:+.3f}, "
      f"from all MLPs {mlp_total:+.3f}")
fig, ax = plt.subplots(figsize=(6.4, 2.6))
ax.bar(range(len(terms)), list(mean_share.values()),
       color=["tab:gray"] + ["tab:blue", "tab:orange"] * L)
ax.set_xticks(range(len(terms)), list(terms)); ax.axhline(0, color="k", lw=0.5)
ax.set_ylabel("share of x^(L)"); ax.set_title("what the final stream is made of (a = attention, m = MLP)")
fig.tight_layout()
if not REAL:   # the bundled model: the MLPs write most of the final stream
    assert mlp_total > 2 * attn_total and abs(mean_share["emb"]) < 0.05

# %% [markdown]
# In the bundled model the MLPs write most of what the final norm reads, block 0's the most, while the
# embedding itself has almost no share left: what reaches the output head is built from what the
# blocks added, not from the token vector the model started with. Attention's share is smaller, but
# it is the only part that brings in information from other tokens.

# %% [markdown]
# ## 5. GPT-2's block versus a generic encoder layer
#
# PyTorch's `nn.TransformerEncoderLayer(d_model, nhead)` implements the layer of the original
# Transformer *encoder*. With its defaults it differs from GPT-2's block in four ways:
#
# | | GPT-2 block (`gpt2np.layers.block`) | `nn.TransformerEncoderLayer` defaults |
# |---|---|---|
# | where the norm sits | **pre-LN**: $x + f(\mathrm{LN}(x))$ | **post-LN** (`norm_first=False`): $\mathrm{LN}(x + f(x))$ |
# | which tokens attend | **causal**: token $i$ sees $j \le i$ | **all** tokens see all tokens (no mask unless you pass `src_mask` / `is_causal=True`) |
# | activation | GELU (tanh approximation) | ReLU (`activation="relu"`) |
# | feed-forward width | $4d$ | `dim_feedforward=2048`, whatever $d$ is |
# | dropout | none at inference | `dropout=0.1` after attention, inside and after the MLP (off in `eval()` mode) |
# | after the last block | a final $\mathrm{LN}_f$ | nothing (post-LN already ends in a norm) |
#
# In formulas, the post-LN encoder layer computes
#
# $$r = \mathrm{LN}_1\big(x + \mathrm{Dropout}(\mathrm{MHA}(x))\big), \qquad
# y = \mathrm{LN}_2\big(r + \mathrm{Dropout}(W_2\,\mathrm{Dropout}(\mathrm{ReLU}(W_1 r + b_1)) + b_2)\big)$$
#
# while GPT-2 computes $r = x + \mathrm{MHA}_{\text{causal}}(\mathrm{LN}_1(x))$,
# $y = r + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2(r) + b_1) + b_2$.
# `nn.TransformerEncoderLayer(d, H, dim_feedforward=4*d, dropout=0.0, activation="gelu", norm_first=True)`
# called with a causal mask comes close, except that PyTorch's `"gelu"` is the exact erf form
# (section 2); GPT-2 does not need PyTorch, and neither does this notebook.
#
# With the same pieces we can build the post-LN, unmasked variant and see that it is a different
# function: its outputs are normalised per token (mean 0 before the gain), and position 0 now depends
# on the last token.

# %%
def post_ln_encoder_layer(x, p, n_head):
    """The original (post-LN, unmasked, ReLU) encoder layer, made from gpt2np.layers pieces."""
    r = layers.layer_norm(x + layers.multi_head_attention(x, **p["attn"], n_head=n_head), **p["ln_1"])
    relu_mlp = layers.linear(np.maximum(layers.linear(r, **p["mlp"]["c_fc"]), 0), **p["mlp"]["c_proj"])
    return layers.layer_norm(r + relu_mlp, **p["ln_2"])

enc = post_ln_encoder_layer(x, p0, cfg.n_head)
x_changed = x.copy(); x_changed[-1] += 1.0                  # change only the last token
enc_changed = post_ln_encoder_layer(x_changed, p0, cfg.n_head)
gpt = layers.block(x, p0, cfg.n_head, mask=M)
gpt_changed = layers.block(x_changed, p0, cfg.n_head, mask=M)
print(f"encoder layer: change at token 0 = {np.abs(enc_changed[0] - enc[0]).max():.2e} (sees the future)")
print(f"GPT-2 block:   change at token 0 = {np.abs(gpt_changed[0] - gpt[0]).max():.2e} (causal)")
assert np.abs(enc_changed[0] - enc[0]).max() > 1e-3 and np.abs(gpt_changed[0] - gpt[0]).max() < 1e-5
