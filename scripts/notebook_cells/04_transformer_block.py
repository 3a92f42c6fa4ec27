# %% [markdown]
# # 04 · The transformer block
#
# GPT-2 is a stack of identical blocks. Each one is *pre-LN*: it normalises a copy of its input,
# transforms it, and adds the result back to the input (a residual connection), twice:
#
# $$x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1(x)) \qquad\qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x))$$
#
# This notebook takes the pieces one by one (layer norm, GELU, the MLP, the residuals), computes each
# by hand on block 0's real input, checks it against `gpt2np.layers`, and ends with how this block
# differs from a textbook *encoder* layer such as PyTorch's `nn.TransformerEncoderLayer`.

# %%
SETUP

# %%
import math
from gpt2np import layers

model, REAL = load_model()
tok = Tokenizer.gpt2()
cfg = model.config
ids = np.array(tok.encode("Layer norm, GELU and residuals: the rest of a transformer block."))
trace = model.trace(ids)
p0 = model.params["blocks"][0]
x = trace["embed"]                                     # [T, d], the input of block 0
T, d = x.shape
print(f"block input x: {x.shape} {x.dtype}")

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
# How large is the residual stream after each block, compared with what each sublayer adds? In a
# pre-LN network the stream grows, and each sublayer makes a correction to it.

# %%
L = cfg.n_layer
norm = lambda name: np.linalg.norm(trace[name], axis=-1).mean()
stream = [norm("embed")] + [norm(f"h{i}.out") for i in range(L)]
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(range(L + 1), stream, "o-", label="‖x‖ after block (0 = embedding)")
ax.plot(np.arange(L) + 1, [norm(f"h{i}.attn.out") for i in range(L)], "s--", label="‖MHA output‖")
ax.plot(np.arange(L) + 1, [norm(f"h{i}.mlp.out") for i in range(L)], "^--", label="‖MLP output‖")
ax.set_xlabel("block"); ax.set_ylabel("mean vector norm"); ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout()

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
