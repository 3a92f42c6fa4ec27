# %% [markdown]
# # 09 · Backpropagation: how GPT-2 gets its gradients
#
# Training needs the gradient of the loss $L$ (one number) with respect to every one of the model's
# weights. Backpropagation is the chain rule applied from the loss backwards. Write $dz$ for
# $\partial L / \partial z$, an array shaped like $z$. If $y = f(x)$ and we already know $dy$, then
#
# $$dx_i = \sum_j \frac{\partial L}{\partial y_j}\frac{\partial y_j}{\partial x_i}
# \qquad\text{that is}\qquad dx = J_f^\top\, dy,$$
#
# a *vector-Jacobian product*. The Jacobian $J_f$ itself (for the output head it would be
# $V \times d$ numbers per position) is never formed: each formula has a short expression for
# $J^\top dy$. `gpt2np.backward` holds one function per formula of `gpt2np.layers`, under the same
# name, called as `dx, grads = backward.linear(dy, x, w, b)`.
#
# This notebook walks the model backwards, from the loss to the embedding. For each formula it
# derives the gradient, computes it by hand with NumPy on the trained model's real activations, and
# checks it twice: against `gpt2np.backward` and against **central finite differences**
#
# $$\frac{\partial F}{\partial a_k} \approx \frac{F(a + \delta e_k) - F(a - \delta e_k)}{2\delta},
# \qquad \delta = 10^{-6},$$
#
# on a few entries $k$ (the largest gradients and some random ones). For a weight, $F$ is the
# model's real loss with that weight nudged. For an activation inside a block, $F(x) = \sum dy \odot f(x)$
# with the upstream $dy$ held fixed: its gradient is exactly $J_f^\top dy$.

# %%
SETUP

# %%
from gpt2np import layers, backward
from gpt2np.config import flatten

tok = Tokenizer.gpt2()
cfg = model.config
H, d, d_k, V, n_layer = cfg.n_head, cfg.n_embd, cfg.head_dim, cfg.n_vocab, cfg.n_layer
text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
ids = np.array(tok.encode(text))
words = [tok.decode([i]) for i in ids]
T = len(ids)
N = T - 1                                  # predictions: position t predicts token t + 1
targets = ids[1:]
rows = np.arange(N)

# Finite differences need more digits than float32 has: a float64 copy of the trained weights.
m64 = model.astype(np.float64)
P = m64.params                             # writable float64 arrays: the checks nudge them in place
M = layers.causal_mask(T, T, np.float64)   # [T, T]: 0 on and below the diagonal, -1e10 above
rec = layers.Record()                      # keeps every intermediate of the forward pass
logits = layers.gpt2(ids, P, H, record=rec)    # [T, V]
np.testing.assert_allclose(logits, model.trace(ids)["logits"], rtol=1e-4, atol=1e-3)  # = the float32 model


def model_loss():
    """The float64 model's mean next-token loss on the sentence, from the weights P as they are now."""
    z = layers.gpt2(ids, P, H)[:-1]
    return -layers.log_softmax(z)[rows, targets].mean()


def central_diff(f, a, k, delta=1e-6):
    """(f() with a[k] + delta  minus  f() with a[k] - delta) / 2 delta; a[k] is restored."""
    old = a[k]
    a[k] = old + delta
    up = f()
    a[k] = old - delta
    down = f()
    a[k] = old
    return (up - down) / (2 * delta)


def fd_check(name, grad, f, a, n=2, seed=0):
    """grad (the gradient of f() with respect to array a) against central differences at the n entries
    where |grad| is largest and at n random entries."""
    top = np.argpartition(np.abs(grad), -n, axis=None)[-n:]
    rand = np.random.default_rng(seed).choice(grad.size, n, replace=False)
    ks = [np.unravel_index(i, grad.shape) for i in np.concatenate([top, rand])]
    numeric = np.array([central_diff(f, a, k) for k in ks])
    analytic = np.array([grad[k] for k in ks])
    scale = np.abs(grad).max()
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6 * scale)
    worst = np.abs(analytic - numeric).max() / scale
    print(f"  finite differences, {name:<22}: {len(ks)} entries, max |error| = {worst:.1e} x max|grad|")


print(f"{T} tokens: {words}")
print(f"loss of the float64 copy: {model_loss():.6f}   float32 model.loss: {model.loss(ids):.6f}")

# %% [markdown]
# ## 1. The loss: cross-entropy of a softmax
#
# Position $i$ has logits $z_i \in \mathbb{R}^V$ and must predict token $t_i$. With $p_i = \mathrm{softmax}(z_i)$,
#
# $$L = -\frac1N \sum_{i=1}^N \log p_{i, t_i}, \qquad -\log p_{i,t} = -z_{i,t} + \log\sum_v e^{z_{i,v}}
# \quad\Rightarrow\quad \frac{\partial(-\log p_{i,t})}{\partial z_{i,v}} = -[v = t] + \frac{e^{z_{i,v}}}{\sum_{v'} e^{z_{i,v'}}}$$
#
# $$dz_i = \frac{1}{N}\left(p_i - \mathrm{onehot}(t_i)\right)$$
#
# The simplest gradient of the model: a step against it raises the target's logit (by an amount
# $\propto 1 - p_t$) and lowers every other logit in proportion to its probability. Each row sums to zero (adding a constant to all logits changes nothing).

# %%
z = logits[:-1].copy()                     # [N, V]: the positions that predict something
p = layers.softmax(z)
dz = p.copy()
dz[rows, targets] -= 1.0
dz /= N
loss_ce, dz_lib = backward.cross_entropy(z, targets)
np.testing.assert_allclose(dz, dz_lib, rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-15)
fd_check("dz", dz, lambda: -layers.log_softmax(z)[rows, targets].mean(), z)
print(f"L = {loss_ce:.4f} nats; p(target) per position:", np.round(p[rows, targets], 3))

# %%
i = int(np.argmax(p[rows, targets]))       # the position where the model is most sure of the right token
top = np.argsort(p[i])[::-1][:8]
show = top if targets[i] in top else np.append(top[:7], targets[i])
fig, ax = plt.subplots(figsize=(6.4, 2.6))
ax.bar(range(len(show)), N * dz[i, show], color=["tab:green" if v == targets[i] else "tab:gray" for v in show])
ax.set_xticks(range(len(show)), [repr(tok.decode([v])) for v in show], fontsize=8)
ax.axhline(0, color="k", lw=0.5)
ax.set_title(f"N·dz after {''.join(words[:i + 1])!r}: p - onehot (green: the target)", fontsize=9)
fig.tight_layout()
print(f"position {i}: p(target {tok.decode([targets[i]])!r}) = {p[i, targets[i]]:.3f}")

# %% [markdown]
# ## 2. The tied output head
#
# $z = h\,W_{te}^\top$ with $h = \mathrm{LN}_f(x_L) \in \mathbb{R}^{N\times d}$ and $W_{te} \in \mathbb{R}^{V\times d}$,
# so $z_{iv} = \sum_k h_{ik} W_{te,vk}$ and
#
# $$dh = dz\,W_{te} \quad [N, d] \qquad\qquad dW_{te}^{\text{head}} = dz^\top h \quad [V, d]$$
#
# Every row of $W_{te}$ gets a share from every position (the softmax is dense). This is only
# **one of two** uses of $W_{te}$; the embedding lookup adds the other (section 7). The last
# position predicts nothing, so its $dh$ is zero. `backward.tied_head_cross_entropy` computes the
# head and the loss together a chunk of rows at a time, so that the $[N, V]$ logits never all exist.

# %%
h = rec["ln_f"]                            # [T, d]
dh = np.zeros_like(h)
dh[:-1] = dz @ P["wte"]
dwte_head = dz.T @ h[:-1]                  # [V, d]
dh_lib, dwte_lib = backward.tied_head(dz, h[:-1], P["wte"])
np.testing.assert_allclose(dh[:-1], dh_lib, rtol=1e-12, atol=1e-15)
np.testing.assert_array_equal(dwte_head, dwte_lib)   # the same product: the same bits
loss_c, dh_c, dwte_c = backward.tied_head_cross_entropy(h[:-1], P["wte"], targets, chunk_elements=8 * V)
np.testing.assert_allclose([loss_c], [loss_ce], rtol=1e-12)
np.testing.assert_allclose(dh_c, dh_lib, rtol=1e-10, atol=1e-15)
np.testing.assert_allclose(dwte_c, dwte_lib, rtol=1e-10, atol=1e-15)
h_pred = h[:-1].copy()
head_loss = lambda: -layers.log_softmax(h_pred @ P["wte"].T)[rows, targets].mean()   # noqa: E731
fd_check("dh", dh[:-1], head_loss, h_pred)
fd_check("dW_te (head only)", dwte_head, head_loss, P["wte"])

# %% [markdown]
# ## 3. Layer norm (the final $\mathrm{LN}_f$)
#
# Per row: $\mu = \frac1d\sum_k x_k$, $\sigma = \sqrt{\frac1d\sum_k (x_k-\mu)^2 + \varepsilon}$,
# $\hat x = (x - \mu)/\sigma$, $y = g \odot \hat x + b$. Then $dg = \sum_{\text{rows}} dy \odot \hat x$,
# $db = \sum_{\text{rows}} dy$ and $d\hat x = dy \odot g$. The hard part is that $\mu$ and $\sigma$ depend on
# every $x_k$ of the row: $\partial\mu/\partial x_k = \frac1d$ and $\partial\sigma/\partial x_k = \hat x_k / d$, so
#
# $$\frac{\partial \hat x_j}{\partial x_k} = \frac1\sigma\left(\delta_{jk} - \frac1d - \frac{\hat x_j \hat x_k}{d}\right)
# \quad\Rightarrow\quad
# dx = \frac1\sigma\Big(d\hat x - \operatorname{mean}(d\hat x) - \hat x \odot \operatorname{mean}(d\hat x \odot \hat x)\Big)$$
#
# (means over the row's $d$ features). The two subtracted terms remove from the gradient the
# directions that normalisation ignores: $\mathrm{LN}$ does not change when a row is shifted, nor
# (up to $\varepsilon$) when it is scaled, so each row of $dx$ sums to zero and is almost orthogonal to $\hat x$.

# %%
xL = rec[f"h{n_layer - 1}.out"].copy()     # [T, d]: the last block's output, LN_f's input
mu = xL.mean(-1, keepdims=True)
sigma = np.sqrt(((xL - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
xhat = (xL - mu) / sigma
dxhat = dh * P["ln_f"]["g"]
dxL = (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / sigma
dg_f, db_f = (dh * xhat).sum(0), dh.sum(0)
dxL_lib, g_lnf = backward.layer_norm(dh, xL, **P["ln_f"])
np.testing.assert_allclose(dxL, dxL_lib, rtol=1e-10, atol=1e-14)
np.testing.assert_allclose(dg_f, g_lnf["g"], rtol=1e-10, atol=1e-14)
np.testing.assert_allclose(db_f, g_lnf["b"], rtol=1e-10, atol=1e-14)
# the same for one row through the full d x d Jacobian  J[j, k] = g_j (δ_jk - 1/d - x̂_j x̂_k / d) / σ
pos = 3                                    # one row
J = P["ln_f"]["g"][:, None] * (np.eye(d) - 1 / d - np.outer(xhat[pos], xhat[pos]) / d) / sigma[pos]
np.testing.assert_allclose(J.T @ dh[pos], dxL[pos], rtol=1e-10, atol=1e-14)
# the real loss as a function of x_L (LN_f, head, cross-entropy), and of LN_f's weights
loss_from_xL = lambda: -layers.log_softmax(   # noqa: E731
    layers.layer_norm(xL, **P["ln_f"])[:-1] @ P["wte"].T)[rows, targets].mean()
fd_check("dx_L", dxL, loss_from_xL, xL)
fd_check("dg of LN_f", dg_f, model_loss, P["ln_f"]["g"])
cos = np.abs((dxL * xhat).sum(-1))[:-1] / (np.linalg.norm(dxL, axis=-1) * np.linalg.norm(xhat, axis=-1))[:-1]
print(f"rows of dx_L: max |Σ_k dx_k| = {np.abs(dxL.sum(-1)).max():.1e} (shift);  max |cos(dx, x̂)| = {cos.max():.1e}"
      " (scale: not exactly 0 because of ε)")
assert np.abs(dxL.sum(-1)).max() < 1e-12 and cos.max() < 1e-3

# %% [markdown]
# ## 4. Through one pre-LN block, by hand
#
# The last block (number $n_{\text{layer}} - 1$, counting from 0) computes
#
# $$a = \mathrm{LN}_1(x),\quad r = x + \mathrm{MHA}(a),\quad m = \mathrm{LN}_2(r),\quad y = r + \mathrm{MLP}(m).$$
#
# Its output $y = x_L$, so its upstream gradient is $dy = dx_L$ from section 3. The chain rule runs
# the same steps in reverse. A residual $y = r + F(r)$ uses $r$ twice, and **an array used twice gets
# the sum of both gradients**: the skip path copies $dy$ unchanged, the branch adds its own share:
#
# $$dr = dy + \mathrm{LN}_2^\top\!\big(\mathrm{MLP}^\top(dy)\big), \qquad
# dx = dr + \mathrm{LN}_1^\top\!\big(\mathrm{MHA}^\top(dr)\big)$$
#
# where $F^\top(g)$ means $F$'s backward applied to $g$. We take the pieces in this order.
#
# ### 4a. The MLP's output projection: a linear layer
#
# The residual add passes $dy$ unchanged to the MLP's output, which is the output of `c_proj`:
# $y_{nj} = \sum_i x_{ni} W_{ij} + b_j$ for positions $n$. Then
#
# $$dx_{ni} = \sum_j dy_{nj} W_{ij},\quad dW_{ij} = \sum_n x_{ni}\,dy_{nj},\quad db_j = \sum_n dy_{nj}
# \qquad\text{i.e.}\qquad dx = dy\,W^\top,\; dW = x^\top dy,\; db = \textstyle\sum_n dy_n$$
#
# $W$ is shared by all positions, so its gradient is a sum over them.

# %%
last = n_layer - 1                         # the last block
pb = P["blocks"][last]
rb = rec.child(f"h{last}")                 # its intermediates: rb["mlp.fc"] is rec[f"h{last}.mlp.fc"]
dy = dxL                                   # the block's upstream gradient
g_act = rb["mlp.gelu"]                     # [T, 4d]: GELU's output, the input of c_proj
W, b = pb["mlp"]["c_proj"]["w"], pb["mlp"]["c_proj"]["b"]
d_act = dy @ W.T                           # [T, 4d]
dW_proj, db_proj = g_act.T @ dy, dy.sum(0)
d_act_lib, g_proj_lib = backward.linear(dy, g_act, W, b)
np.testing.assert_allclose(d_act, d_act_lib, rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(dW_proj, g_proj_lib["w"], rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(db_proj, g_proj_lib["b"], rtol=1e-12, atol=1e-15)
act_in = g_act.copy()
fd_check("dx of c_proj", d_act, lambda: (dy * layers.linear(act_in, W, b)).sum(), act_in)
fd_check("dW of mlp.c_proj", dW_proj, model_loss, W)
fd_check("db of mlp.c_proj", db_proj, model_loss, b)

# %% [markdown]
# ### 4b. GELU (tanh approximation)
#
# $\mathrm{GELU}(x) = \tfrac12 x (1 + \tanh u)$ with $u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)$. By the product
# and chain rules, with $t = \tanh u$ and $\tanh' = 1 - t^2$:
#
# $$\mathrm{GELU}'(x) = \tfrac12(1 + t) + \tfrac12\,x\,(1 - t^2)\,\sqrt{2/\pi}\,\big(1 + 3\cdot 0.044715\,x^2\big),
# \qquad dx = dy \odot \mathrm{GELU}'(x)$$
#
# Elementwise, so its Jacobian is diagonal. Since $\mathrm{GELU}(x) - \mathrm{GELU}(-x) = x$, the derivative
# satisfies $\mathrm{GELU}'(x) + \mathrm{GELU}'(-x) = 1$: it is negative for $x < -0.75$ (there a larger
# input gives a smaller output) and, mirrored, greater than 1 for $x > 0.75$.

# %%
f_in = rb["mlp.fc"]                        # [T, 4d]: GELU's input (before the nonlinearity)
c = np.sqrt(2 / np.pi)
tt = np.tanh(c * (f_in + 0.044715 * f_in**3))
gelu_prime = 0.5 * (1 + tt) + 0.5 * f_in * (1 - tt**2) * c * (1 + 3 * 0.044715 * f_in**2)
d_f = d_act * gelu_prime
np.testing.assert_allclose(d_f, backward.gelu(d_act, f_in), rtol=1e-10, atol=1e-15)
xs = np.linspace(-4, 4, 801)
slope = backward.gelu(np.ones_like(xs), xs)
np.testing.assert_allclose(slope + slope[::-1], 1.0, atol=1e-12)          # GELU'(x) + GELU'(-x) = 1
assert np.all((slope < 0) == (xs < -0.7525)) and np.all((slope > 1) == (xs > 0.7525))
f_copy = f_in.copy()
fd_check("dx of GELU", d_f, lambda: (d_act * layers.gelu(f_copy)).sum(), f_copy)
print(f"block {last}'s {f_in.size} GELU inputs: {np.mean(gelu_prime < 0):.1%} where GELU' < 0, "
      f"{np.mean(gelu_prime > 1):.1%} where GELU' > 1")

fig, ax = plt.subplots(figsize=(6.4, 2.8))
ax.plot(xs, layers.gelu(xs), label="GELU(x)")
ax.plot(xs, slope, label="GELU'(x) = backward.gelu(1, x)")
ax2 = ax.twinx()
ax2.hist(f_in.ravel(), bins=80, range=(-4, 4), color="tab:gray", alpha=0.3)
ax2.set_yticks([])
ax.axhline(0, color="k", lw=0.5); ax.grid(alpha=0.3); ax.legend(loc="upper left")
ax.set_title(f"GELU and its derivative; grey: block {last}'s real GELU inputs on the sentence", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ### 4c. The rest of the MLP, and the first residual
#
# $f = m\,W_{fc} + b_{fc}$ is linear again ($dm = df\,W_{fc}^\top$, ...); then $\mathrm{LN}_2$'s
# backward (section 3's formula with $\mathrm{LN}_2$'s $g$), and the residual adds the copied $dy$:
# $dr = dy + \mathrm{LN}_2^\top(dm)$. `backward.mlp` does 4a–4c's MLP part in one call, reading the
# Record the forward pass filled.

# %%
m_in = rb["ln_2"]                          # [T, d]: the MLP's input
dm = d_f @ pb["mlp"]["c_fc"]["w"].T
dW_fc, db_fc = m_in.T @ d_f, d_f.sum(0)
dm_lib, g_mlp = backward.mlp(dy, m_in, **pb["mlp"], record=rb.child("mlp"))
np.testing.assert_allclose(dm, dm_lib, rtol=1e-10, atol=1e-15)
np.testing.assert_allclose(dW_fc, g_mlp["c_fc"]["w"], rtol=1e-10, atol=1e-15)
np.testing.assert_allclose(db_fc, g_mlp["c_fc"]["b"], rtol=1e-10, atol=1e-15)
np.testing.assert_allclose(dW_proj, g_mlp["c_proj"]["w"], rtol=1e-10, atol=1e-15)
fd_check("dW of mlp.c_fc", dW_fc, model_loss, pb["mlp"]["c_fc"]["w"])

r_mid = rb["resid"]                        # [T, d]: x after the attention residual
dr_branch, g_ln2 = backward.layer_norm(dm, r_mid, **pb["ln_2"])
dr = dy + dr_branch                        # the skip path copies dy
fd_check("dg of ln_2", g_ln2["g"], model_loss, pb["ln_2"]["g"])
print(f"|dy| = {np.linalg.norm(dy):.4f} (copied by the skip)   |LN_2ᵀ(MLPᵀ dy)| = {np.linalg.norm(dr_branch):.4f}"
      f"   |dr| = {np.linalg.norm(dr):.4f}")

# %% [markdown]
# ### 4d. Attention: softmax's Jacobian-vector product
#
# Per head, $S = QK^\top/\sqrt{d_k} + M$, $P = \mathrm{softmax}(S)$ row by row, $O = PV$. The matrix
# products give $dV = P^\top dO$ and $dP = dO\,V^\top$. For one row, $y = \mathrm{softmax}(s)$ has
#
# $$\frac{\partial y_j}{\partial s_k} = y_j(\delta_{jk} - y_k)
# \quad\Rightarrow\quad ds_k = \sum_j dy_j\, y_j(\delta_{jk} - y_k) = y_k\Big(dy_k - \sum_j dy_j\, y_j\Big),
# \qquad ds = y \odot \big(dy - \langle dy, y\rangle\big)$$
#
# so $dS = P \odot (dP - \mathrm{rowsum}(dP \odot P))$. Then $S = QK^\top/\sqrt{d_k} + M$ gives
#
# $$dQ = \frac{dS\,K}{\sqrt{d_k}}, \qquad dK = \frac{dS^\top Q}{\sqrt{d_k}}, \qquad dM\ \text{not needed (a constant)}.$$
#
# The causal mask acts through $P$ alone: a hidden key has $P_{ij} = 0$ exactly, so $dS_{ij} = 0$ and
# no gradient flows to a future token. First the attention output projection (linear), then the heads.

# %%
A = pb["attn"]
heads = rb["attn.heads"]                   # [T, d]: the heads side by side, c_proj's input
np.testing.assert_allclose(heads, layers.merge_heads(rb["attn.probs"] @ rb["attn.v"]), rtol=1e-12, atol=1e-15)
d_heads = dr @ A["c_proj"]["w"].T
dO = layers.split_heads(d_heads, H)        # [H, T, d_k]
q, k, v, probs = rb["attn.q"], rb["attn.k"], rb["attn.v"], rb["attn.probs"]
dV = probs.transpose(0, 2, 1) @ dO
dP = dO @ v.transpose(0, 2, 1)             # [H, T, T]
dS = probs * (dP - (dP * probs).sum(-1, keepdims=True))
dQ = dS @ k / np.sqrt(d_k)
dK = dS.transpose(0, 2, 1) @ q / np.sqrt(d_k)

np.testing.assert_allclose(dS, backward.softmax(dP, probs), rtol=1e-12, atol=1e-16)
# softmax's JVP for one row, against the full T x T Jacobian  diag(y) - y yᵀ
y_row = probs[0, -1]
np.testing.assert_allclose((np.diag(y_row) - np.outer(y_row, y_row)).T @ dP[0, -1], dS[0, -1], rtol=1e-10, atol=1e-16)
assert np.all(dS[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0.0)   # the future gets nothing
np.testing.assert_allclose(dS.sum(-1), 0.0, atol=1e-15)
for ours, lib in zip((dQ, dK, dV), backward.attention(dO, q, k, v, M, rb.child("attn"))):
    np.testing.assert_allclose(ours, lib, rtol=1e-10, atol=1e-16)
qc, kc, vc = q.copy(), k.copy(), v.copy()
attn_proxy = lambda: (dO * layers.attention(qc, kc, vc, M)).sum()   # noqa: E731
S_copy = rb["attn.scores"].copy()          # [H, T, T]: QKᵀ/√d_k + M, before the softmax
fd_check("dS (softmax)", dS, lambda: (dP * layers.softmax(S_copy)).sum(), S_copy)
fd_check("dQ", dQ, attn_proxy, qc)
fd_check("dK", dK, attn_proxy, kc)
fd_check("dV", dV, attn_proxy, vc)

# %%
j = int(np.argmax(np.abs(dS).sum((1, 2))))  # the head whose scores get the largest gradient
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
axes[0].imshow(probs[j], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
axes[0].set_title(f"P, block {last} head {j}", fontsize=9)
lim = np.abs(dS[j]).max()
im = axes[1].imshow(dS[j], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
axes[1].set_title("dS = P ⊙ (dP - rowsum(dP ⊙ P)): zero above the diagonal", fontsize=9)
for ax in axes:
    ax.set_xticks(range(T), words, rotation=90, fontsize=6)
    ax.set_yticks(range(T), words, fontsize=6)
fig.colorbar(im, ax=axes[1], shrink=0.8)
print(f"head {j}: |dS| = {np.linalg.norm(dS[j]):.2e}; per head:", np.round(np.linalg.norm(dS, axis=(1, 2)), 6))

# %% [markdown]
# ### 4e. Back to the block's input
#
# $dQ$, $dK$ and $dV$, each merged from its heads back to $[T, d]$, sit side by side as $d[Q\,K\,V]$, the
# upstream gradient of the linear map $[Q\,K\,V] = a\,W_{qkv} + b_{qkv}$ (`c_attn`). Its backward gives
# $da$; $\mathrm{LN}_1$'s backward gives the branch's share of $dx$; the second residual adds $dr$.
# That is the whole block: we compare every gradient with `backward.block`, and the block input's
# gradient with finite differences of the **real loss** as a function of the block's input.

# %%
d_qkv = np.concatenate([layers.merge_heads(dQ), layers.merge_heads(dK), layers.merge_heads(dV)], axis=-1)
a_in = rb["ln_1"]                          # [T, d]: attention's input
da = d_qkv @ A["c_attn"]["w"].T
dW_attn, dW_aproj = a_in.T @ d_qkv, heads.T @ dr
dx_branch, g_ln1 = backward.layer_norm(da, rec[f"h{last - 1}.out"], **pb["ln_1"])
dxb = dr + dx_branch                       # the skip path copies dr

xb = rec[f"h{last - 1}.out"].copy()        # the block's input (the previous block's output)
dxb_lib, gb = backward.block(dy, xb, pb, H, M, rb)
np.testing.assert_allclose(dxb, dxb_lib, rtol=1e-10, atol=1e-15)
for name, ours in [("attn.c_attn.w", dW_attn), ("attn.c_proj.w", dW_aproj), ("ln_1.g", g_ln1["g"]),
                   ("ln_2.g", g_ln2["g"]), ("mlp.c_fc.w", dW_fc), ("mlp.c_proj.w", dW_proj)]:
    np.testing.assert_allclose(ours, flatten(gb)[name], rtol=1e-10, atol=1e-15)
_, g_mha = backward.multi_head_attention(dr, a_in, **A, n_head=H, mask=M, record=rb.child("attn"))
np.testing.assert_allclose(dW_attn, g_mha["c_attn"]["w"], rtol=1e-10, atol=1e-15)

loss_from_xb = lambda: -layers.log_softmax(   # noqa: E731  the real loss from the last block's input on
    layers.layer_norm(layers.block(xb, pb, H, M), **P["ln_f"])[:-1] @ P["wte"].T)[rows, targets].mean()
fd_check("dx (block input)", dxb, loss_from_xb, xb)
fd_check("dW of attn.c_attn", dW_attn, model_loss, A["c_attn"]["w"])
fd_check("dW of attn.c_proj", dW_aproj, model_loss, A["c_proj"]["w"])
fd_check("dg of ln_1", g_ln1["g"], model_loss, pb["ln_1"]["g"])
print(f"|dy| = {np.linalg.norm(dy):.4f}  ->  |dx| = {np.linalg.norm(dxb):.4f}: of which the skips carry dy, "
      f"the branches add |dx - dy| = {np.linalg.norm(dxb - dy):.4f}")

# %% [markdown]
# ## 5. Down the stack
#
# The blocks below repeat section 4 with their own records: $dx_{i-1} = \mathrm{block}_i^\top(dx_i)$.
# `backward.transformer` does this loop (and the final layer norm before it, and the embedding of
# section 6 after it). Because of the skips, each block's input gradient is its output gradient plus
# the branches' shares. Those shares pass through a layer norm's backward, which divides by the
# row's $\sigma$ (section 3): where the residual stream is small, the gradient that reaches it is large.

# %%
dxs = [dxb]                                # dxs[0]: the gradient at the last block's input, going down
for i in reversed(range(last)):
    x_in = rec[f"h{i - 1}.out"] if i else rec["embed"]
    dx_i, _ = backward.block(dxs[-1], x_in, P["blocks"][i], H, M, rec.child(f"h{i}"))
    dxs.append(dx_i)
dx0 = dxs[-1]                              # [T, d]: the gradient at the embedding's output
g_tr = backward.transformer(dh, ids, P, H, record=rec)   # the whole loop, from dh (section 2) down
np.testing.assert_allclose(g_tr["wpe"][:T], dx0, rtol=1e-10, atol=1e-15)   # dW_pe[t] = dx_0[t], section 6
for name, ours in flatten(gb).items():
    np.testing.assert_allclose(ours, flatten(g_tr["blocks"][last])[name], rtol=1e-10, atol=1e-15)
stream = [rec[f"h{i - 1}.out"] if i else rec["embed"] for i in reversed(range(n_layer))]
sig = [np.sqrt(x.var(-1) + 1e-5).mean() for x in stream]
norms_dx = [np.linalg.norm(g) for g in dxs]
print("input of block      ", " ".join(f"{i:7d}" for i in reversed(range(n_layer))))
print("|dx| there          ", " ".join(f"{v:7.4f}" for v in norms_dx))
print("mean σ of the stream", " ".join(f"{v:7.4f}" for v in sig))
if not REAL:  # the bundled model: the embedding is the smallest point of the stream and gets the largest gradient
    assert np.argmin(sig) == n_layer - 1 and np.argmax(norms_dx) == n_layer - 1

# %% [markdown]
# ## 6. The embedding: a scatter-add
#
# $x_0[t] = W_{te}[\mathrm{ids}_t] + W_{pe}[t]$ copies rows. Row $v$ of $W_{te}$ was copied to every
# position that holds token $v$, so it gets the sum of their gradients; rows of tokens not in the
# text get nothing from here (nor does the last token: causal attention hides it from every earlier
# position, and its own prediction has no target, so no term of the loss depends on it):
#
# $$dW_{te}^{\text{embed}}[v] = \sum_{t:\ \mathrm{ids}_t = v} dx_0[t], \qquad dW_{pe}[t] = dx_0[t]$$
#
# In NumPy this is `np.add.at(dW, ids, dx0)`. The tempting `dW[ids] += dx0` is wrong when a token
# repeats: it computes `dW[ids] + dx0` and then assigns those rows, so a repeated token's row is written
# several times and keeps only one occurrence's gradient.

# %%
dwte_embed = np.zeros_like(P["wte"])
np.add.at(dwte_embed, ids, dx0)
dwpe = np.zeros_like(P["wpe"])
dwpe[:T] = dx0
g_emb = backward.embedding(dx0, ids, np.arange(T), P["wte"], P["wpe"])
np.testing.assert_array_equal(dwte_embed, g_emb["wte"])
np.testing.assert_allclose(dwpe, g_emb["wpe"], rtol=1e-12, atol=1e-16)
assert np.all(dx0[-1] == 0)                # the last token: no loss term depends on it
assert set(np.flatnonzero(np.abs(dwte_embed).sum(1)).tolist()) == set(ids[:-1].tolist())  # only these rows

rep = np.bincount(ids).argmax()            # the most repeated token of the sentence
wrong = np.zeros_like(P["wte"])
wrong[ids] += dx0                          # the buggy version
print(f"{tok.decode([rep])!r} occurs {np.sum(ids == rep)} times: |row| with np.add.at = "
      f"{np.linalg.norm(dwte_embed[rep]):.5f}, with dW[ids] += dx0 = {np.linalg.norm(wrong[rep]):.5f}")
np.testing.assert_allclose(dwte_embed[rep], dx0[ids == rep].sum(0), rtol=1e-12)
assert any(np.array_equal(wrong[rep], dx0[t]) for t in np.flatnonzero(ids == rep))   # one occurrence only
fd_check("dW_pe", dwpe, model_loss, P["wpe"])

# %% [markdown]
# ## 7. $W_{te}$ is used twice
#
# GPT-2 ties its output head to the token embedding: the same matrix $W_{te}$ looks up the input
# tokens and scores the output tokens. Its gradient is the sum of the two uses:
#
# $$dW_{te} = \underbrace{dz^\top h}_{\text{head (section 2)}} + \underbrace{\mathrm{scatter}(dx_0)}_{\text{embedding (section 6)}}$$
#
# `backward.loss_and_grads` computes the head's share first and lets `backward.embedding` add its
# share into the same array. Below: the sum against gpt2np's gradient, and finite differences of the
# real loss on rows of a token of the sentence (both parts) and of a token not in it (head part only).
# Row $v$'s head part is $\frac1N\sum_i (p_{i,v} - [t_i = v])\,h_i$: every row gets one, largest for the
# targets; its embedding part exists only for tokens of the input. (Here the last token is only a
# target, so its embedding part is zero; the first is only an input, so its head part has no $-1$ term.)

# %%
loss64, grads64 = backward.loss_and_grads(m64, ids)
np.testing.assert_allclose([loss64], [loss_ce], rtol=1e-12)
np.testing.assert_allclose(dwte_head + dwte_embed, grads64["wte"], rtol=1e-9, atol=1e-14)
absent = tok.encode(" Elizabeth")[0]       # a token that is not in the sentence
assert absent not in ids
for v in (rep, absent):
    kk = (v, int(np.abs(dwte_head[v] + dwte_embed[v]).argmax()))
    numeric = central_diff(model_loss, P["wte"], kk)
    total = dwte_head[kk] + dwte_embed[kk]
    np.testing.assert_allclose(numeric, total, rtol=1e-5, atol=1e-10)
    print(f"W_te[{tok.decode([v])!r}, {kk[1]:3d}]: head {dwte_head[kk]:+.3e} + embedding {dwte_embed[kk]:+.3e}"
          f" = {total:+.3e};  finite difference {numeric:+.3e}")
assert np.all(np.linalg.norm(dwte_head, axis=1) > 0)    # the head reaches every row
np.testing.assert_allclose(dwpe, grads64["wpe"], rtol=1e-9, atol=1e-15)
for name, ours in flatten(gb).items():
    np.testing.assert_allclose(ours, flatten(grads64["blocks"][last])[name], rtol=1e-9, atol=1e-15)

# %%
uniq = list(dict.fromkeys(ids.tolist()))   # the sentence's tokens, in order, once each
head_norm = np.linalg.norm(dwte_head, axis=1)
emb_norm = np.linalg.norm(dwte_embed, axis=1)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), gridspec_kw={"width_ratios": [2, 1]})
xx = np.arange(len(uniq))
axes[0].bar(xx - 0.2, head_norm[uniq], 0.4, label="head: dzᵀh")
axes[0].bar(xx + 0.2, emb_norm[uniq], 0.4, label="embedding: scatter(dx₀)")
axes[0].set_xticks(xx, [repr(tok.decode([v])) for v in uniq], rotation=60, ha="right", fontsize=7)
axes[0].set_yscale("log"); axes[0].set_ylim(top=axes[0].get_ylim()[1] * 30)
axes[0].legend(fontsize=8, ncol=2, loc="upper left")
axes[0].set_title("|row of dW_te| for the sentence's tokens", fontsize=9)
axes[1].hist(np.log10(head_norm), bins=60, color="tab:blue", log=True)
axes[1].set_xlabel("log10 |row| of the head part, all V rows")
axes[1].set_title(f"head part: all {V} rows ≠ 0", fontsize=9)
fig.tight_layout()
print(f"embedding part: {np.sum(emb_norm > 0)} nonzero rows; head part: {np.sum(head_norm > 0)} nonzero rows;"
      f" |head part| = {np.linalg.norm(dwte_head):.4f}, |embedding part| = {np.linalg.norm(dwte_embed):.4f}")

# %% [markdown]
# ## 8. All of it in one call: `loss_and_grads` on the model
#
# `gpt2np.loss_and_grads(model, ids)` runs `layers.transformer` with a Record (dropping attention's
# pre-softmax scores, which the backward never reads), the tied head and cross-entropy a chunk of rows
# at a time, then sections 2–7 in order. It returns a tree shaped like `model.params`. On the float32
# model (what training runs) it agrees with the float64 walk above up to float32 rounding. Then the
# size of each layer's gradients: what an optimiser step would see on this one sentence.

# %%
loss32, grads32 = gpt2np.loss_and_grads(model, ids)
flat32, flat64 = flatten(grads32), flatten(grads64)
assert flat32.keys() == flat64.keys() and all(g.dtype == np.float32 for g in flat32.values())
worst = max(np.abs(flat32[n] - flat64[n]).max() / np.abs(flat64[n]).max() for n in flat64)
print(f"loss: float32 {loss32:.6f}, float64 {loss64:.6f}; largest float32 - float64 difference of a"
      f" gradient: {worst:.1e} x its largest entry ({len(flat64)} arrays)")
assert worst < 1e-3
kinds = {"attn.c_attn.w": "attention c_attn", "attn.c_proj.w": "attention c_proj",
         "mlp.c_fc.w": "mlp c_fc", "mlp.c_proj.w": "mlp c_proj"}
norms = {label: [np.linalg.norm(flat32[f"blocks.{i}.{kind}"]) for i in range(n_layer)] for kind, label in kinds.items()}
for ln in ("ln_1", "ln_2"):
    norms[f"{ln} (g and b)"] = [np.hypot(np.linalg.norm(flat32[f"blocks.{i}.{ln}.g"]),
                                         np.linalg.norm(flat32[f"blocks.{i}.{ln}.b"])) for i in range(n_layer)]
total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in flat32.values()))
np.testing.assert_allclose(gpt2np.clip_grad_norm(grads32, max_norm=float("inf")), total, rtol=1e-6)  # inf: only measures
print(f"global gradient norm (what clip_grad_norm measures): {total:.4f};  |dW_te| = {np.linalg.norm(flat32['wte']):.4f},"
      f" |dW_pe| = {np.linalg.norm(flat32['wpe']):.4f}")
for label, vals in norms.items():
    print(f"  {label:<18}", " ".join(f"{x:8.4f}" for x in vals))

fig, ax = plt.subplots(figsize=(6.4, 3.2))
for (label, vals), marker in zip(norms.items(), "os^vDx"):
    ax.plot(range(n_layer), vals, marker=marker, label=label)
ax.set_yscale("log"); ax.set_xlabel("block"); ax.set_ylabel("‖gradient‖ (Frobenius)")
ax.set_title("gradient norms per layer, loss_and_grads on one sentence (float32)", fontsize=9)
ax.legend(fontsize=7, ncol=2); ax.grid(alpha=0.3)
fig.tight_layout()
